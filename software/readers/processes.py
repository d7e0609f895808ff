"""The reader processes themselves: a spawn ``ProcessPoolExecutor``, renewed when it breaks.

:class:`ReaderProcesses` is what :class:`~software.readers.pool.ReaderPool` submits to.
It adds four things the executor does not promise:

- every task carries the forgets so far (``_task(forgets, fn, ...)`` in the worker), so
  "every reader has closed this path" holds whichever reader took which task;
- :meth:`ReaderProcesses.broadcast` runs a function once in every reader: ``workers``
  tasks that each hold their reader until every reader has checked in;
- :meth:`ReaderProcesses.close` is bounded: a reader still running after ``timeout``
  (a hung pymef read) is terminated, then killed;
- :meth:`ReaderProcesses.crashed` says which task killed a reader: every task notes its
  id on a :class:`~software.readers.board.Board` while it runs::

      submit(fn, *args) --> executor.submit(_tracked_task, board, id, (epoch, recent
                                            forgets), fn, *args)
      broadcast(fn)     --> workers x _everywhere_task(rendezvous dir, workers, fn)
      renew(generation) --> a new executor; the caller shuts the broken one down
      crashed(generation) --> {task id: label} of the readers that died on their own
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..errors import ServiceClosedError
from ..mef3.scratch import OwnedDir
from .board import Board, _tracked_task
from .worker import _everywhere_task, _forget_task, _worker_init

__all__ = ["FORGET_WINDOW", "RENDEZVOUS_PREFIX", "ReaderProcesses"]

logger = logging.getLogger(__name__)

#: Forgets every task carries (a reader that missed more closes all its sessions).
FORGET_WINDOW = 32
#: Name prefix of a broadcast's check-in directory (temporary directory).
RENDEZVOUS_PREFIX = "mefstream-rendezvous-"
#: Seconds :meth:`ReaderProcesses.crashed` waits for a broken executor's readers to end.
CRASH_WAIT = 5.0


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
        self._board = Board()
        self._ids = itertools.count(1)
        # generation -> {task id: label} of its tasks in flight (kept when it broke)
        self._labels: dict[int, dict[int, object]] = {0: {}}
        self._broken: dict[int, list] = {}          # generation -> its reader processes
        self._crashes: dict[int, Future] = {}       # generation -> crashed() result
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

    def submit(self, fn, *args, label: object = None) -> tuple[Future, int, int]:
        """Hand ``fn(*args)`` to the executor.

        Parameters
        ----------
        fn, *args
            The task (a function the readers import by name) and its arguments.
        label : optional
            What :meth:`crashed` reports for this task if its reader dies running it
            (the pool passes the session's path).

        Returns
        -------
        (Future, int, int)
            The executor's future, the generation it went to and the task's id.

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
            task_id, generation = next(self._ids), self.generation
            executor = self._executor
            spawned = len(getattr(executor, "_processes", None) or ())
            future = executor.submit(_tracked_task, self._board.path, task_id, forgets,
                                     fn, *args)
            if len(getattr(executor, "_processes", None) or ()) != spawned:
                _watch_new_reader(executor)
            labels = self._labels[generation]
            labels[task_id] = label

        def over(fut: Future) -> None:   # a broken executor's tasks stay for crashed()
            if fut.cancelled() or not isinstance(fut.exception(), BrokenProcessPool):
                with self._lock:
                    labels.pop(task_id, None)

        future.add_done_callback(over)
        return future, generation, task_id

    def broadcast(self, wait: float, fn, *args, label: object = None) -> list[Future]:
        """Run ``fn(*args)`` once in every reader process.

        ``workers`` tasks, each holding its reader (at most ``wait`` seconds) until every
        reader has checked in, so that no reader takes two while another takes none.

        Returns
        -------
        list of Future
            One per task.
        """
        owned = OwnedDir.create(RENDEZVOUS_PREFIX)   # swept if the server dies first
        rendezvous = owned.path
        futures: list[Future] = []
        try:
            for _ in range(self.workers):
                futures.append(self.submit(_everywhere_task, rendezvous, self.workers,
                                           float(wait), fn, *args, label=label)[0])
        finally:
            left = [len(futures)]
            lock = threading.Lock()

            def over(_fut: Future) -> None:   # the last one removes the check-ins
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    owned.remove()

            if not futures:
                owned.remove()
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
            # its readers, for crashed(); shutdown() lets go of them
            self._broken[generation] = list((getattr(old, "_processes", None) or {})
                                            .values())
            self._crashes[generation] = Future()
            self.generation += 1
            self._labels[self.generation] = {}
            return old

    def crashed(self, generation: int, timeout: float = CRASH_WAIT) -> dict[int, object]:
        """The tasks of broken executor ``generation`` whose reader died on its own.

        When a reader dies the executor terminates the others (SIGTERM): a reader that
        ended otherwise (SIGSEGV, SIGKILL...) died on its own, and the board names the
        task it was running. Waits up to ``timeout`` seconds for the readers to end (a
        stopped one counts as terminated). Computed once per generation; call it after
        :meth:`renew` of that generation, from any thread but the executor's.

        Returns
        -------
        dict
            Task id -> label (as given to :meth:`submit`) of each such task; empty when
            the dead reader was idle, or no reader died on its own (SIGTERM from outside).
        """
        with self._lock:
            result = self._crashes.get(generation)
            processes = self._broken.pop(generation, None)
        if result is None:
            return {}   # asked already (the pool asks once per generation) or closed
        if processes is None:   # another thread computes it
            return result.result()
        found: dict[int, object] = {}
        try:
            deadline = time.monotonic() + float(timeout)
            for proc in processes:
                code = _exit_code(proc, deadline)
                if code is None or code == -signal.SIGTERM:
                    continue
                task_id = self._board.running(proc.pid)
                self._board.forget(proc.pid)
                logger.warning("reader process %d died (exit code %s) running task %s",
                               proc.pid, code, task_id or "none")
                if task_id:
                    found[task_id] = None
            for proc in processes:
                self._board.forget(proc.pid)
        finally:
            with self._lock:
                labels = self._labels.pop(generation, {})
                self._crashes.pop(generation, None)
            for task_id in found:
                found[task_id] = labels.get(task_id)
            try:
                result.set_result(found)
            except InvalidStateError:   # close() answered for it
                pass
        return found

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
            broken = list(self._crashes.values())
        for waiting in broken:   # nobody asks about crashes after close
            try:
                waiting.set_result({})
            except InvalidStateError:   # crashed() answered already
                pass
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
        self._board.close()

    def __enter__(self) -> ReaderProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<ReaderProcesses {state} workers={self.workers} "
                f"generation={self.generation} forgets={self._forget_epoch}>")


def _watch_new_reader(executor: ProcessPoolExecutor) -> None:
    """Make the executor watch a reader it just spawned for this submit.

    ``submit`` wakes the executor's thread *before* it spawns a reader on demand, so the
    thread can go back to waiting on the sentinels of the readers it knew: a reader
    spawned then that crashes goes unnoticed (its task never fails) until some other
    result or submit wakes the thread. Measured: a crashing read hung while the other
    reader was busy. Waking it once more makes it take the new sentinel.
    """
    wakeup = getattr(executor, "_executor_manager_thread_wakeup", None)
    if wakeup is not None:
        try:
            wakeup.wakeup()
        except (OSError, ValueError):   # shut down meanwhile
            pass


def _exit_code(proc, deadline: float) -> int | None:
    """The exit code of reader ``proc`` once it ended (by ``deadline``), else None."""
    try:
        multiprocessing.connection.wait([proc.sentinel],
                                        max(deadline - time.monotonic(), 0.0))
    except (OSError, ValueError):   # its sentinel is closed already: it ended
        pass
    while True:  # the executor's thread may be reaping it at the same moment
        code = proc.exitcode
        if code is not None or time.monotonic() >= deadline:
            return code
        threading.Event().wait(0.01)   # polling another thread's waitpid


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
