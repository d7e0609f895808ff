"""A session's records, read once in a reader process and kept: answers by time window.

::

    first get_records of a session --> ReaderPool task _records_task (reader process:
        pymef metadata -> plain tuples, see software.mef3.records) --> RecordTable (kept
        by the Recording while it is open)
    every get_records --> RecordTable.select(start, stop): two binary searches + a mask
        --> answer(group): one tuple per record with its index on the view's grid (the
            fields of a Note, SyLg or EDFA left out: the client rebuilds them from the
            text and duration; brine's cost is per object, and they are most records)

A window holds the records that overlap it: a record at ``time`` with duration ``d`` is
in ``[start, stop)`` when ``time < stop`` and ``time + d > start`` (``time >= start`` for
one without a duration). One answer carries at most :data:`MAX_RECORDS` records and
``max_request_bytes``; a larger window is refused with the window that would fit.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from ..errors import InvalidRangeError
from ..mef3.metadata import RateGroup
from ..mef3.records import wire_fields
from ..readers.pool import DEMAND, ReaderPool
from ..readers.worker import _records_task

__all__ = ["MAX_RECORDS", "RecordTable", "SessionRecords", "grid_indices"]

#: Records one answer carries at most.
MAX_RECORDS = 100_000


def grid_indices(times: np.ndarray, group: RateGroup) -> np.ndarray:
    """Grid index of each time stamp, rounded as pymef places samples (half away from 0)."""
    x = ((times - group.start_uutc) / 1000000.0) * group.fs
    return np.trunc(np.where(x >= 0, x + 0.5, x - 0.5)).astype(np.int64)


def _size(record: tuple) -> int:
    """Bytes a record takes on the wire, roughly (its text and fields dominate)."""
    return 64 + len(repr(record))


class RecordTable:
    """Records sorted by time, with the arrays that answer a window quickly.

    Parameters
    ----------
    records : sequence of tuple
        ``(time_uutc, type, text, duration, channel, fields)``, sorted by time.
    """

    def __init__(self, records: Sequence[tuple]) -> None:
        self.records = tuple(records)
        n = len(self.records)
        # what crosses per record (fields the client rebuilds left out), built once
        self._wire = tuple((r[0], r[1], r[2], r[3], r[4], wire_fields(r[1], r[2], r[3], r[5]))
                           for r in self.records)
        self.times = np.fromiter((r[0] for r in self.records), np.int64, n)
        spans = np.fromiter((max(r[3] or 0, 0) for r in self.records), np.int64, n)
        self.ends = self.times + spans
        self.longest = int(spans.max()) if n else 0
        self._sizes = np.fromiter((_size(r) for r in self.records), np.int64, n)
        #: Records per type.
        self.types = Counter(r[1] for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    def select(self, start: int | None, stop: int | None) -> np.ndarray:
        """Positions of the records overlapping ``[start, stop)`` (None: unbounded), in order."""
        times = self.times
        lo = 0 if start is None else int(np.searchsorted(times, start - self.longest, "left"))
        hi = len(times) if stop is None else int(np.searchsorted(times, stop, "left"))
        if hi <= lo:
            return np.empty(0, np.int64)
        positions = np.arange(lo, hi)
        if start is None:
            return positions
        keep = (times[lo:hi] >= start) | (self.ends[lo:hi] > start)
        return positions[keep]

    def check_size(self, positions: np.ndarray, limit_bytes: int, start, stop) -> None:
        """Refuse an answer of more than :data:`MAX_RECORDS` records or ``limit_bytes``."""
        if positions.size == 0:
            return
        count = int(positions.size)
        total = np.cumsum(self._sizes[positions])
        nbytes = int(total[-1])
        if count <= MAX_RECORDS and nbytes <= limit_bytes:
            return
        fit = min(MAX_RECORDS, int(np.searchsorted(total, limit_bytes, "right")))
        # the window up to the first record that does not fit holds only those that do
        until = int(self.times[positions[fit]])
        if fit == 0:
            hint = ("A single record is larger than that: start the server with a larger "
                    "--max-request-mb.")
        elif start is None or until > start:
            hint = f"Ask for a shorter window, e.g. stop_uutc={until}, and go on from there."
        else:
            hint = ("Records that start before start_uutc and last into it fill an answer "
                    "alone: start the window later.")
        raise InvalidRangeError(
            f"the window start_uutc={start}, stop_uutc={stop} holds {count} records "
            f"({nbytes / 2**20:.1f} MiB); one answer carries at most {MAX_RECORDS} records "
            f"and {limit_bytes / 2**20:g} MiB. {hint}")

    def answer(self, positions: np.ndarray, group: RateGroup) -> tuple[tuple, ...]:
        """Wire tuples ``(time, index, type, text, duration, channel, fields)``."""
        if positions.size == 0:
            return ()
        indices = grid_indices(self.times[positions], group).tolist()
        wire = self._wire
        return tuple((r[0], i, r[1], r[2], r[3], r[4], r[5])
                     for r, i in zip((wire[p] for p in positions.tolist()), indices))

    def by_index(self, group: RateGroup, start: int, stop: int) -> np.ndarray:
        """Positions of the records whose grid index lies in ``[start, stop)``."""
        if not len(self.times):
            return np.empty(0, np.int64)
        # the times that round into [start, stop), widened by a microsecond each side
        t0 = group.start_uutc + int(np.floor((start - 0.5) * 1e6 / group.fs)) - 1
        t1 = group.start_uutc + int(np.ceil((stop - 0.5) * 1e6 / group.fs)) + 1
        lo = int(np.searchsorted(self.times, t0, "left"))
        hi = int(np.searchsorted(self.times, t1, "right"))
        positions = np.arange(lo, hi)
        index = grid_indices(self.times[lo:hi], group)
        return positions[(index >= start) & (index < stop)]


class SessionRecords:
    """The records of one open session: read in a reader process on first use, then kept.

    Parameters
    ----------
    pool : ReaderPool
        The shared reader processes.
    path, password : str, str or None
        The session and its level-2 password.

    Notes
    -----
    Thread-safe: concurrent first callers share one reader task; a failed read is
    forgotten, so the next call tries again.
    """

    def __init__(self, pool: ReaderPool, path: str, password: str | None) -> None:
        self._pool = pool
        self._path = path
        self._password = password
        self._future: Future | None = None
        self._lock = threading.Lock()

    def future(self) -> Future:
        """A future of the session's :class:`RecordTable`."""
        with self._lock:
            future = self._future
            if future is None:
                future = self._future = self._pool._submit(
                    DEMAND, _records_task, self._path, self._password, consume=RecordTable)
                future.add_done_callback(self._forget_failure)
        return future

    def _forget_failure(self, future: Future) -> None:
        if future.exception() is not None:
            with self._lock:
                if self._future is future:
                    self._future = None

    def table(self, timeout: float | None = None) -> RecordTable:
        """The session's records (waits for the reader the first time).

        Raises
        ------
        ReaderError, SessionError
            The reader could not read them (the next call tries again).
        concurrent.futures.TimeoutError
            Not read within ``timeout`` seconds.
        """
        return self.future().result(timeout=timeout)
