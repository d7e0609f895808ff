"""Reader processes: MEF3 decoding in a ``ProcessPoolExecutor`` (spawn), never in the server.

pymef holds the GIL and keeps process-global state, so parallel reads need processes::

    server process                          reader process (x workers)
    ReaderPool.read(...) --submit--> _read_task(path, password, names, start, stop)
         ^                                  |  per-process dict of open MefSessionFile
         |                                  v
    our Future  <--done-callback--  executor future (ndarray, or exception + traceback)

A reader process that dies (segfault, SIGKILL) breaks the executor: the pool is rebuilt
once per breakage and every task that was in flight is resubmitted, up to ``max_attempts``
times, so callers see either their data or a :class:`~software.errors.ReaderError`.
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .errors import ReaderError, ServiceClosedError
from .metadata import SessionInfo

logger = logging.getLogger(__name__)

#: Sessions a reader process keeps open at once (least recently used closed first).
MAX_OPEN_PER_WORKER = 16

_open_sessions: OrderedDict = OrderedDict()  # lives in each reader process


def _worker_init() -> None:
    # Ctrl-C in a terminal reaches the whole process group; the server decides shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _session(path: str, password: str | None):
    from .mef_access import MefSessionFile  # imported in reader processes only

    key = (path, password)
    session = _open_sessions.get(key)
    if session is None:
        session = MefSessionFile(path, password)
        _open_sessions[key] = session
        while len(_open_sessions) > MAX_OPEN_PER_WORKER:
            _open_sessions.popitem(last=False)[1].close()
    else:
        _open_sessions.move_to_end(key)
    return session


def _inspect_task(path: str, password: str | None) -> SessionInfo:
    """Runs in a reader process: open the session and return its metadata."""
    return _session(path, password).info


def _read_task(path: str, password: str | None, names: tuple[str, ...], start: int,
               stop: int) -> np.ndarray:
    """Runs in a reader process: grid samples ``[start, stop)`` of ``names``."""
    return _session(path, password).read_grid(names, start, stop)


def _forget_task(path: str) -> None:
    """Runs in a reader process: close every open handle of ``path``."""
    for key in [k for k in _open_sessions if k[0] == path]:
        _open_sessions.pop(key).close()


class ReaderPool:
    """A pool of reader processes that survives the death of any of them.

    Parameters
    ----------
    workers : int
        Number of reader processes.
    max_attempts : int
        How often a task is submitted before a crashing reader makes it fail.
    """

    def __init__(self, workers: int = 2, max_attempts: int = 3) -> None:
        if int(workers) < 1:
            raise ValueError(f"workers={workers!r} must be at least 1")
        self.workers = int(workers)
        self.max_attempts = int(max_attempts)
        self.restarts = 0
        self.tasks_retried = 0
        self._lock = threading.Lock()
        self._closed = False
        self._generation = 0
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, initializer=_worker_init,
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

    def warm_up(self) -> None:
        """Start every reader process now rather than at the first read."""
        futures = [self._submit_raw(_forget_task, "")[0] for _ in range(self.workers)]
        for fut in futures:
            fut.result()

    def inspect(self, path: str, password: str | None) -> Future:
        """Open ``path`` in a reader process; the future yields its :class:`SessionInfo`."""
        return self._submit(_inspect_task, path, password)

    def read(self, path: str, password: str | None, names: Sequence[str], start: int,
             stop: int) -> Future:
        """Read grid samples ``[start, stop)``; the future yields a float64 ndarray."""
        return self._submit(_read_task, path, password, tuple(names), int(start), int(stop))

    def forget(self, path: str) -> None:
        """Ask the reader processes to close ``path`` (best effort, returns at once)."""
        for _ in range(self.workers):
            try:
                self._submit_raw(_forget_task, path)
            except (ServiceClosedError, BrokenProcessPool, RuntimeError):
                # closed, or broken by a dead reader (whose handles died with it): nothing
                # to forget, and a caller closing a session or the server must not fail
                return

    def _submit_raw(self, fn, *args) -> tuple[Future, int]:
        with self._lock:
            if self._closed:
                raise ServiceClosedError("the reader pool is closed; restart the server")
            return self._executor.submit(fn, *args), self._generation

    def _submit(self, fn, *args) -> Future:
        result: Future = Future()
        result.set_running_or_notify_cancel()
        self._attempt(result, fn, args, 1)
        return result

    def _attempt(self, result: Future, fn, args: tuple, attempt: int) -> None:
        try:
            try:
                inner, generation = self._submit_raw(fn, *args)
            except BrokenProcessPool:
                # broke between our last rebuild and this submit
                self._rebuild(self._generation)
                inner, generation = self._submit_raw(fn, *args)
        except ServiceClosedError as exc:
            result.set_exception(exc)
            return
        except (BrokenProcessPool, RuntimeError) as exc:
            # in a retry thread nobody else would see it: the caller must hear of it
            result.set_exception(ReaderError(
                f"could not hand {fn.__name__} to the reader processes ({exc}); try again."))
            return

        def done(fut: Future) -> None:  # runs in the executor's management thread
            if fut.cancelled():  # close() cancels what the readers have not started
                result.set_exception(ServiceClosedError(
                    "the reader pool was closed before this read ran; the server is "
                    "shutting down"))
                return
            exc = fut.exception()
            if exc is None:
                result.set_result(fut.result())
                return
            if isinstance(exc, BrokenProcessPool) and self._closed:
                result.set_exception(ServiceClosedError(
                    "the reader pool was closed during this read; the server is shutting "
                    "down"))
                return
            if not isinstance(exc, BrokenProcessPool):
                result.set_exception(exc)
                return
            self._rebuild(generation)
            if attempt >= self.max_attempts:
                result.set_exception(ReaderError(
                    f"a reader process died {attempt} times running {fn.__name__}"
                    f"{_describe(args)}; the session may be damaged. The server keeps "
                    f"running; other reads are unaffected."))
                return
            self.tasks_retried += 1
            logger.warning("retrying %s%s after a reader process died (attempt %d)",
                           fn.__name__, _describe(args), attempt + 1)
            threading.Thread(target=self._attempt, args=(result, fn, args, attempt + 1),
                             name="reader-retry", daemon=True).start()

        inner.add_done_callback(done)

    def _rebuild(self, generation: int) -> None:
        with self._lock:
            if self._closed or generation != self._generation:
                return  # already rebuilt for this breakage
            old = self._executor
            self._executor = self._new_executor()
            self._generation += 1
            self.restarts += 1
        logger.error("a reader process died; reader pool rebuilt (restart #%d)", self.restarts)
        old.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the reader processes (idempotent); pending reads fail with ServiceClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor = self._executor
        executor.shutdown(wait=True, cancel_futures=True)
        logger.info("reader pool closed (%d restarts)", self.restarts)

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ReaderPool {state} workers={self.workers} restarts={self.restarts}>"


def _describe(args: tuple) -> str:
    """Arguments of a task for a log line, without the password."""
    shown = [repr(a) for a in args]
    if len(shown) > 1:
        shown[1] = "<password>"
    return "(" + ", ".join(shown) + ")"
