"""The reader processes themselves: a spawn ``ProcessPoolExecutor``, renewed when it breaks.

:class:`ReaderProcesses` is what :class:`~software.readers.pool.ReaderPool` submits to.
It adds three things the executor does not promise:

- every task carries the forgets so far (``_task(forgets, fn, ...)`` in the worker), so
  "every reader has closed this path" holds whichever reader took which task;
- :meth:`ReaderProcesses.broadcast` runs a function once in every reader: ``workers``
  tasks that each hold their reader until every reader has checked in;
- :meth:`ReaderProcesses.close` is bounded: a reader still running after ``timeout``
  (a hung pymef read) is terminated, then killed::

      submit(fn, *args) --> executor.submit(_task, (epoch, recent forgets), fn, *args)
      broadcast(fn)     --> workers x _everywhere_task(rendezvous dir, workers, fn)
      renew(generation) --> a new executor; the caller shuts the broken one down
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor

from ..errors import ServiceClosedError
from .worker import _everywhere_task, _forget_task, _task, _worker_init

__all__ = ["FORGET_WINDOW", "ReaderProcesses"]

logger = logging.getLogger(__name__)

#: Forgets every task carries (a reader that missed more closes all its sessions).
FORGET_WINDOW = 32


class ReaderProcesses:
    """``workers`` reader processes behind one executor at a time (thread-safe).

    Parameters
    ----------
    workers : int
        Number of reader processes.
    nice : int
        Added to the reader processes' nice value.
    """

    def __init__(self, workers: int, nice: int = 0) -> None:
        self.workers = int(workers)
        self.nice = int(nice)
        self._lock = threading.Lock()
        self._closed = False
        self.generation = 0
        self._forget_epoch = 0
        self._forgotten: deque[str] = deque(maxlen=FORGET_WINDOW)
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, initializer=_worker_init,
                                   initargs=(self.nice, os.getpid()),
                                   mp_context=multiprocessing.get_context("spawn"))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def pids(self) -> list[int]:
        """Process ids of the live reader processes (started lazily by the executor)."""
        with self._lock:
            procs = getattr(self._executor, "_processes", None) or {}
            return [p.pid for p in list(procs.values()) if p.is_alive()]

    def submit(self, fn, *args) -> tuple[Future, int]:
        """Hand ``fn(*args)`` to the executor; return its future and the generation.

        Raises
        ------
        ServiceClosedError
            After :meth:`close`.
        BrokenProcessPool
            The executor broke (a reader died) and was not renewed yet.
        """
        with self._lock:
            if self._closed:
                raise ServiceClosedError("the reader pool is closed; restart the server")
            forgets = (self._forget_epoch, tuple(self._forgotten))
            return self._executor.submit(_task, forgets, fn, *args), self.generation

    def broadcast(self, wait: float, fn, *args) -> list[Future]:
        """Run ``fn(*args)`` once in every reader process.

        ``workers`` tasks, each holding its reader (at most ``wait`` seconds) until every
        reader has checked in, so that no reader takes two while another takes none.

        Returns
        -------
        list of Future
            One per task.
        """
        rendezvous = tempfile.mkdtemp(prefix="mefstream-rendezvous-")
        futures: list[Future] = []
        try:
            for _ in range(self.workers):
                futures.append(self.submit(_everywhere_task, rendezvous, self.workers,
                                           float(wait), fn, *args)[0])
        finally:
            left = [len(futures)]
            lock = threading.Lock()

            def over(_fut: Future) -> None:   # the last one removes the check-ins
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    shutil.rmtree(rendezvous, ignore_errors=True)

            if not futures:
                shutil.rmtree(rendezvous, ignore_errors=True)
            for fut in futures:
                fut.add_done_callback(over)
        return futures

    def forget(self, path: str) -> None:
        """Make every reader close ``path``: idle ones now, the others before their next
        task (every task carries the forgets since). Returns at once."""
        with self._lock:
            self._forget_epoch += 1
            self._forgotten.append(path)
        for _ in range(self.workers):
            self.submit(_forget_task, path)

    def renew(self, generation: int) -> ProcessPoolExecutor | None:
        """Replace the executor of ``generation`` by a new one; return the old one (for
        the caller to shut down), or None if it was renewed already or closed."""
        with self._lock:
            if self._closed or generation != self.generation:
                return None
            old, self._executor = self._executor, self._new_executor()
            self.generation += 1
            return old

    def close(self, timeout: float = 5.0) -> None:
        """Stop the readers (idempotent): cancel what they have not started, wait at most
        ``timeout`` seconds for what they run, then terminate (and kill) them, logged.

        Parameters
        ----------
        timeout : float
            Seconds the readers get to finish their running tasks.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor = self._executor
        processes = list((getattr(executor, "_processes", None) or {}).values())
        manager = getattr(executor, "_executor_manager_thread", None)
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + max(float(timeout), 0.0)
        if manager is not None:
            manager.join(max(deadline - time.monotonic(), 0.0))
        for proc in processes:
            proc.join(max(deadline - time.monotonic(), 0.0))
        stuck = [p for p in processes if p.is_alive()]
        if stuck:
            logger.warning("%d reader process(es) still running %g s after close (pid %s; "
                           "a hung read?): terminating them", len(stuck), timeout,
                           ", ".join(str(p.pid) for p in stuck))
            _end(stuck)
            if manager is not None:
                manager.join(2.0)

    def __enter__(self) -> ReaderProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<ReaderProcesses {state} workers={self.workers} "
                f"generation={self.generation} forgets={self._forget_epoch}>")


def _end(processes: list) -> None:
    """Terminate ``processes``, then kill those that do not end within a second."""
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(1.0)
    for proc in processes:
        if proc.is_alive():
            logger.warning("reader process %d ignored SIGTERM: killing it", proc.pid)
            proc.kill()
            proc.join(1.0)
