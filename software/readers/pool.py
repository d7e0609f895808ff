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

Tasks wait in a :class:`~software.readers.fair.FairQueue`: reads of equal priority are
served round-robin by owner (the connection's serving thread that asked), so one client's
300 queued reads delay another client's read by about one task, not 300.

A reader process that dies (segfault, SIGKILL) breaks the executor: the pool is rebuilt
once per breakage and every task that was in flight is resubmitted. Only the task whose
reader died on its own (see :meth:`ReaderProcesses.crashed`) counts the crash, up to
``max_attempts`` times; the others, of any session, are resubmitted without counting, so
callers see either their data or a :class:`~software.errors.ReaderError` of their own.
A session charged with ``quarantine_after`` crashes is quarantined
(:mod:`software.readers.quarantine`): its reads fail at once until it changes on disk.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

from ..errors import ServiceClosedError
from .attempts import Attempts
from .fair import FairQueue
from .landing import LandingArea
from .leftovers import sweep_leftovers
from .processes import ReaderProcesses
from .quarantine import Quarantine
from .worker import _envelope_task, _forget_task, _inspect_task, _read_task, _read_task_stored

logger = logging.getLogger(__name__)

#: Priority of a read a client is waiting for; reads ahead use 1, 2, ... (lower first).
DEMAND = 0
#: Seconds readers of :meth:`ReaderPool.open_everywhere` wait for a busy one to join.
OPEN_EVERYWHERE_WAIT = 1.0


class ReaderPool(Attempts):
    """A pool of reader processes that survives the death of any of them.

    Parameters
    ----------
    workers : int
        Number of reader processes.
    max_attempts : int
        How often a task may crash its reader before it fails (crashes it did not cause
        are not counted).
    nice : int
        Added to the reader processes' nice value (0 keeps the server's priority).
    landing_mb : float
        Size of the shared-memory area reads land in (0: every read goes through the
        executor's pipe). Only the pages reads reach are used.
    quarantine_after : int, optional
        Crashes charged to one session after which it is quarantined (default
        ``max_attempts``; 0: never).
    """

    def __init__(self, workers: int = 2, max_attempts: int = 3, nice: int = 0,
                 landing_mb: float = 256, quarantine_after: int | None = None) -> None:
        if int(workers) < 1:
            raise ValueError(f"workers={workers!r} must be at least 1")
        self.workers = int(workers)
        self.max_attempts = int(max_attempts)
        self.nice = int(nice)
        sweep_leftovers()   # of a server or readers killed before: not ours to keep
        self._landing_bytes = int(landing_mb * 2**20)
        self._landing = LandingArea.create(self._landing_bytes)
        self.quarantine = Quarantine(self.max_attempts if quarantine_after is None
                                     else quarantine_after)
        self.restarts = 0
        self.tasks_retried = 0    # resubmitted after a reader died (counted or not)
        self.crashes_pinned = 0   # reader deaths pinned on the task that caused them
        self.reads_landed = 0     # reads whose samples crossed in the landing area
        self.reads_piped = 0      # ... and through the executor's pipe
        self._lock = threading.Lock()
        self._closed = False
        self._procs = ReaderProcesses(self.workers, self.nice)
        self._queue = FairQueue()   # key: result future; (result, fn, args, consume)
        self._verdicts: dict[int, Future] = {}   # broken generation -> crashed tasks
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
        """Open ``path`` in a reader process; the future yields its :class:`SessionInfo`.

        A quarantined session is opened only if its files changed since.
        """
        return self._submit(DEMAND, _inspect_task, path, password)

    def block_envelopes(self, path: str, password: str | None, max_groups: int) -> Future:
        """A future of every channel's block minima and maxima, read from the block tables
        by a reader (see :mod:`software.mef3.envelope`), at demand priority."""
        return self._submit(DEMAND, _envelope_task, path, password, int(max_groups))

    def read(self, path: str, password: str | None, names: Sequence[str], start: int,
             stop: int, priority: int = DEMAND, consume=None,
             owner: Hashable | None = None, stored: bool = False) -> Future:
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
        owner : hashable, optional
            Whose read it is, for round-robin among reads of equal priority (default:
            the calling thread, i.e. the connection whose serving thread asks).
        stored : bool
            MEF3's stored int32 samples instead, half the bytes (:mod:`software.mef3.samples`).
        """
        fn = _read_task_stored if stored else _read_task
        return self._submit(int(priority), fn, path, password, tuple(names),
                            int(start), int(stop), consume=consume, owner=owner)

    def open_everywhere(self, path: str, password: str | None) -> list[Future]:
        """Open ``path`` in every reader process ahead of reads (best effort).

        A broadcast: one task per reader, each holding its reader until every reader
        has opened the session (one that has it open, e.g. the one that inspected it,
        joins at once), so that the first reads do not wait for opens. A reader busy
        with a long read is waited for at most :data:`OPEN_EVERYWHERE_WAIT` seconds;
        it then opens the session at its first read. Nothing is done for a quarantined
        session.

        Returns
        -------
        list of Future
            One per task; their errors can be ignored (a read reports its own).
        """
        if self.quarantine.refused(path) is not None:
            return []
        return self._procs.broadcast(OPEN_EVERYWHERE_WAIT, _inspect_task, path, password,
                                     label=path)

    def promote(self, future: Future, priority: int = DEMAND,
                owner: Hashable | None = None) -> None:
        """Run a waiting task with ``priority`` if that is sooner (no-op once it started).

        At the priority it has already, the task gets a place in ``owner``'s turn too
        (default: the calling thread), so a client waiting for a read another client
        queued does not wait for that client's other reads.
        """
        with self._lock:
            self._queue.promote(future, priority,
                                threading.current_thread() if owner is None else owner)

    def queued(self) -> int:
        """Tasks waiting in the server for a reader (not yet handed to the executor)."""
        with self._lock:
            return len(self._queue)

    def crashes(self, path: str) -> int:
        """Reader crashes charged to the session ``path`` (since its last quarantine)."""
        return self.quarantine.crashes(path)

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

    def _submit_raw(self, fn, *args, label: object = None) -> tuple[Future, int, int]:
        return self._procs.submit(fn, *args, label=label)

    def _submit(self, priority: int, fn, *args, consume=None,
                owner: Hashable | None = None) -> Future:
        """Queue ``fn(*args)``: a pool task, whose first argument is the session's path."""
        result: Future = Future()
        result.set_running_or_notify_cancel()
        refused = self.quarantine.refused(args[0], reopening=fn is _inspect_task)
        if refused is not None:
            result.set_exception(refused)
            return result
        with self._lock:
            closed = self._closed
            if not closed:
                self._queue.push(result, priority,
                                 threading.current_thread() if owner is None else owner,
                                 (result, fn, args, consume))
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
                taken = self._queue.pop()
                if taken is None:
                    return
                _key, (result, fn, args, consume) = taken
                self._running += 1
            result.add_done_callback(self._task_finished)
            self._attempt(result, fn, args, 1, consume)

    def _task_finished(self, _result: Future) -> None:
        with self._lock:
            self._running -= 1
        self._pump()

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
            waiting = self._queue.clear()
        for result, *_ in waiting:
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

