"""Reader processes: MEF3 decoding in a ``ProcessPoolExecutor`` (spawn), never in the server.

pymef holds the GIL and keeps process-global state, so parallel reads need processes::

    server process                          reader process (x workers)
    ReaderPool.read(...) --submit--> _read_into_task(path, password, names, start, stop,
         |                                           landing area, offset)
         |                                  |  per-process dict of open MefSessionFile
         |   LandingArea (/dev/shm) <-------+  samples decoded straight into the area
         v                                  v
    consume(view) -> our Future <--done-- executor future (None, or exception + traceback)

Samples cross in a :class:`~software.readers.landing.LandingArea` rather than pickled through the
executor's pipe (which cost more CPU than decoding them; see :mod:`software.readers.landing`); a
read too large for the area's free space goes through the pipe (``_read_task``).

Tasks wait in a priority queue in the server and only ``workers + 1`` are handed to the
executor at a time (every reader busy, one task queued behind them), so a client's demand
read (priority 0) overtakes reads ahead (priority 1, 2, ... by distance) that are still
waiting, and :meth:`ReaderPool.promote` moves a waiting read-ahead up when a client asks
for it. Reader processes can run at a lower CPU priority (``nice``), so that reading ahead
yields the CPU to client scripts on the same machine; by default they do not (a niced
reader also yields to every unrelated busy process, and then a client waits longer).

The executor hands a task to whichever reader is idle, so "one task per reader" would
reach every reader only by luck: :class:`~software.readers.processes.ReaderProcesses`
makes forgets reach every reader and broadcasts (warm-up, opening a session everywhere)
run once in each, and bounds :meth:`ReaderPool.close`.

A reader process that dies (segfault, SIGKILL) breaks the executor: the pool is rebuilt
once per breakage and every task that was in flight is resubmitted, up to ``max_attempts``
times, so callers see either their data or a :class:`~software.errors.ReaderError`.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool


from ..errors import ReaderError, ServiceClosedError
from .landing import LandingArea
from .processes import ReaderProcesses
from .worker import _envelope_task, _forget_task, _inspect_task, _read_task
from .worker import LANDED, _read_task_stored

logger = logging.getLogger(__name__)

#: Priority of a read a client is waiting for; reads ahead use 1, 2, ... (lower first).
DEMAND = 0
#: Seconds readers of :meth:`ReaderPool.open_everywhere` wait for a busy one to join.
OPEN_EVERYWHERE_WAIT = 1.0


class ReaderPool:
    """A pool of reader processes that survives the death of any of them.

    Parameters
    ----------
    workers : int
        Number of reader processes.
    max_attempts : int
        How often a task is submitted before a crashing reader makes it fail.
    nice : int
        Added to the reader processes' nice value (0 keeps the server's priority).
    landing_mb : float
        Size of the shared-memory area reads land in (0: every read goes through the
        executor's pipe). Only the pages reads reach are used.
    """

    def __init__(self, workers: int = 2, max_attempts: int = 3, nice: int = 0,
                 landing_mb: float = 256) -> None:
        if int(workers) < 1:
            raise ValueError(f"workers={workers!r} must be at least 1")
        self.workers = int(workers)
        self.max_attempts = int(max_attempts)
        self.nice = int(nice)
        self._landing_bytes = int(landing_mb * 2**20)
        self._landing = LandingArea.create(self._landing_bytes)
        self.restarts = 0
        self.tasks_retried = 0
        self.reads_landed = 0     # reads whose samples crossed in the landing area
        self.reads_piped = 0      # ... and through the executor's pipe
        self._lock = threading.Lock()
        self._closed = False
        self._procs = ReaderProcesses(self.workers, self.nice)
        # waiting tasks: heap of [priority, seq, result, fn, args, consume];
        # entry[2] None = moved
        self._waiting: list[list] = []
        self._entry_of: dict[Future, list] = {}
        self._seq = itertools.count()
        self._running = 0
        self._max_running = self.workers + 1

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def pids(self) -> list[int]:
        """Process ids of the live reader processes (started lazily by the executor)."""
        return self._procs.pids()

    def warm_up(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Start every reader process now rather than at the first read.

        A broadcast: each reader runs one of ``workers`` tasks, so every process has
        started once they are done.

        Parameters
        ----------
        wait : bool
            Return only once every process has started (about a second per process).
        timeout : float
            Seconds a started reader waits for the others to start.
        """
        futures = self._procs.broadcast(timeout, _forget_task, "")
        if wait:
            for fut in futures:
                fut.result()

    def inspect(self, path: str, password: str | None) -> Future:
        """Open ``path`` in a reader process; the future yields its :class:`SessionInfo`."""
        return self._submit(DEMAND, _inspect_task, path, password)

    def block_envelopes(self, path: str, password: str | None, max_groups: int) -> Future:
        """A future of every channel's block minima and maxima, read from the block tables
        by a reader (see :mod:`software.mef3.envelope`), at demand priority."""
        return self._submit(DEMAND, _envelope_task, path, password, int(max_groups))

    def read(self, path: str, password: str | None, names: Sequence[str], start: int,
             stop: int, priority: int = DEMAND, consume=None, stored: bool = False) -> Future:
        """Read grid samples ``[start, stop)``; the future yields a float64 ndarray.

        Parameters
        ----------
        path, password : str, str or None
            The session and its level-2 password.
        names : sequence of str
            Channels of one sampling rate.
        start, stop : int
            Grid sample range.
        priority : int
            :data:`DEMAND` (0) for a read a client waits for; larger numbers run later.
        consume : callable, optional
            Called with the samples, ``(len(names), stop - start)`` float64, in the pool's
            result thread; the future then yields what it returns. The array may be a view
            of shared memory that is reused once ``consume`` returns: copy what you keep.
            Without it the future yields an array of its own.
        stored : bool
            MEF3's stored int32 samples instead, half the bytes (:mod:`software.mef3.samples`).
        """
        fn = _read_task_stored if stored else _read_task
        return self._submit(int(priority), fn, path, password, tuple(names),
                            int(start), int(stop), consume=consume)

    def open_everywhere(self, path: str, password: str | None) -> list[Future]:
        """Open ``path`` in every reader process ahead of reads (best effort).

        A broadcast: one task per reader, each holding its reader until every reader
        has opened the session (one that has it open, e.g. the one that inspected it,
        joins at once), so that the first reads do not wait for opens. A reader busy
        with a long read is waited for at most :data:`OPEN_EVERYWHERE_WAIT` seconds;
        it then opens the session at its first read.

        Returns
        -------
        list of Future
            One per task; their errors can be ignored (a read reports its own).
        """
        return self._procs.broadcast(OPEN_EVERYWHERE_WAIT, _inspect_task, path, password)

    def promote(self, future: Future, priority: int = DEMAND) -> None:
        """Run a waiting task with ``priority`` if that is sooner (no-op once it started)."""
        with self._lock:
            entry = self._entry_of.get(future)
            if entry is None or entry[0] <= priority:
                return
            moved = [priority, next(self._seq), *entry[2:]]
            entry[2] = None
            self._entry_of[future] = moved
            heapq.heappush(self._waiting, moved)

    def queued(self) -> int:
        """Tasks waiting in the server for a reader (not yet handed to the executor)."""
        with self._lock:
            return len(self._entry_of)

    def forget(self, path: str) -> None:
        """Make every reader process close ``path`` (returns at once).

        Idle readers close it now (one task per reader); whichever reader did not run
        one of those closes it before its next task, because every task carries the
        forgets since (see :func:`software.readers.worker._task`).
        """
        try:
            self._procs.forget(path)
        except (ServiceClosedError, BrokenProcessPool, RuntimeError):
            # closed, or broken by a dead reader (whose handles died with it): nothing
            # to forget, and a caller closing a session or the server must not fail
            pass

    def _submit_raw(self, fn, *args) -> tuple[Future, int]:
        return self._procs.submit(fn, *args)

    def _submit(self, priority: int, fn, *args, consume=None) -> Future:
        result: Future = Future()
        result.set_running_or_notify_cancel()
        with self._lock:
            closed = self._closed
            if not closed:
                entry = [priority, next(self._seq), result, fn, args, consume]
                self._entry_of[result] = entry
                heapq.heappush(self._waiting, entry)
        if closed:
            result.set_exception(ServiceClosedError("the reader pool is closed; restart "
                                                    "the server"))
            return result
        self._pump()
        return result

    def _pump(self) -> None:
        """Hand waiting tasks to the executor while fewer than ``workers + 1`` run."""
        while True:
            with self._lock:
                if self._closed or self._running >= self._max_running:
                    return
                entry = None
                while self._waiting:
                    entry = heapq.heappop(self._waiting)
                    if entry[2] is not None:
                        break
                    entry = None
                if entry is None:
                    return
                _priority, _seq, result, fn, args, consume = entry
                del self._entry_of[result]
                self._running += 1
            result.add_done_callback(self._task_finished)
            self._attempt(result, fn, args, 1, consume)

    def _task_finished(self, _result: Future) -> None:
        with self._lock:
            self._running -= 1
        self._pump()

    def _landing_slot(self, fn, args: tuple) -> tuple:
        """``(area, offset, shape)`` for a read that fits the landing area, else Nones."""
        if fn not in LANDED:
            return None, None, None
        area = self._landing
        shape = (len(args[2]), args[4] - args[3])
        nbytes = LANDED[fn][1].itemsize * shape[0] * shape[1]
        offset = area.reserve(nbytes) if area is not None else None
        with self._lock:
            if offset is None:
                self.reads_piped += 1
                return None, None, None
            self.reads_landed += 1
        return area, offset, shape

    def _attempt(self, result: Future, fn, args: tuple, attempt: int, consume=None) -> None:
        area, offset, shape = self._landing_slot(fn, args)
        task, task_args = (fn, args) if area is None else \
            (LANDED[fn][0], args + (area.path, offset))
        try:
            try:
                inner, generation = self._submit_raw(task, *task_args)
            except BrokenProcessPool:
                # broke between our last rebuild and this submit
                self._rebuild(self._procs.generation)
                inner, generation = self._submit_raw(task, *task_args)
        except (ServiceClosedError, BrokenProcessPool, RuntimeError) as exc:
            if area is not None:
                area.release(offset)
            if isinstance(exc, ServiceClosedError):
                result.set_exception(exc)
            else:  # in a retry thread nobody else would see it: the caller must hear of it
                result.set_exception(ReaderError(
                    f"could not hand {fn.__name__} to the reader processes ({exc}); try "
                    f"again."))
            return

        def done(fut: Future) -> None:  # runs in the executor's management thread
            try:
                finish(fut)
            finally:
                if area is not None:
                    area.release(offset)

        def finish(fut: Future) -> None:
            if fut.cancelled():  # close() cancels what the readers have not started
                result.set_exception(ServiceClosedError(
                    "the reader pool was closed before this read ran; the server is "
                    "shutting down"))
                return
            exc = fut.exception()
            if exc is None:
                try:
                    value = fut.result()
                    landed = value is None  # else the reader could not map the area
                    if landed:
                        value = area.view(offset, shape, LANDED[fn][1])
                    if consume is not None:
                        value = consume(value)
                    elif landed:  # the region is reused once we return: the caller's copy
                        value = value.copy()
                except BaseException as exc2:  # noqa: BLE001 - the caller hears of it
                    result.set_exception(exc2)
                    return
                result.set_result(value)
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
            threading.Thread(target=self._attempt, args=(result, fn, args, attempt + 1,
                                                         consume),
                             name="reader-retry", daemon=True).start()

        inner.add_done_callback(done)

    def _rebuild(self, generation: int) -> None:
        with self._lock:
            if self._closed:
                return
            old = self._procs.renew(generation)
            if old is None:
                return  # already rebuilt for this breakage
            # readers of the broken pool may still write until they are terminated: the
            # new pool lands its reads in a new area
            old_landing = self._landing
            self._landing = LandingArea.create(self._landing_bytes)
            self.restarts += 1
        logger.error("a reader process died; reader pool rebuilt (restart #%d)", self.restarts)
        if old_landing is not None:
            old_landing.retire()
        old.shutdown(wait=False, cancel_futures=True)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the reader processes (idempotent); pending reads fail with ServiceClosedError.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the reads the readers are running (a hung pymef read
            would otherwise hold SIGTERM forever); readers still running then are
            terminated, and killed if that does not end them (logged).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = list(self._entry_of)
            self._entry_of.clear()
            self._waiting.clear()
        for result in waiting:
            result.set_exception(ServiceClosedError(
                "the reader pool was closed before this read ran; the server is shutting "
                "down"))
        self._procs.close(timeout)
        if self._landing is not None:
            self._landing.close()
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
