"""A live stream's markers: events stamped on its sample clock, kept in a bounded history.

A marker is ``(index, text, duration)`` on the stream's grid; it is served as a record
like those of a MEF3 file: a ``Note``, or an ``EDFA`` when it has a duration (what the
recorder writes). :class:`MarkerHistory` keeps them sorted by index (the producer may
stamp an index in the past), at most ``capacity`` and none older than the stream's ring
holds, and tells its watchers of each new one::

    append_marker(text, index, duration) --> LiveStream (checks, head) --> MarkerHistory.add
        --> sorted lists (index, time) under the history's own lock
        --> watchers(record), outside the lock (a view queues it for its client)
    get_records(t0, t1) / get_records_by_index(a, b) --> binary searches --> wire tuples

Threads: :meth:`MarkerHistory.add` runs in the pusher's thread (the producer, or a
connection's serving thread); queries in the serving threads of the views.
"""
from __future__ import annotations

import bisect
import itertools
import logging
import threading
from collections.abc import Callable

from ..errors import InvalidRangeError, UnknownChannelError
from ..mef3.records import (
    check_marker_duration,
    check_marker_text,
    check_marker_type,
    marker_record,
    wire_fields,
)
from ..validation import as_index

__all__ = ["DEFAULT_CAPACITY", "MarkerHistory", "MarkerSide"]

logger = logging.getLogger(__name__)

#: Markers a stream keeps at most (the oldest are dropped first).
DEFAULT_CAPACITY = 10_000


class MarkerHistory:
    """The markers of one live stream, sorted by sample index.

    Parameters
    ----------
    fs : float
        The stream's sampling rate.
    start_uutc : int
        Time of sample index 0.
    capacity : int
        Markers kept at most.
    """

    def __init__(self, fs: float, start_uutc: int, capacity: int = DEFAULT_CAPACITY) -> None:
        self.fs = float(fs)
        self.start_uutc = int(start_uutc)
        self.capacity = max(1, int(capacity))
        self._lock = threading.Lock()
        self._indices: list[int] = []      # sorted
        self._times: list[int] = []        # the same order (time grows with index)
        self._records: list[tuple] = []    # (index, seq, record tuple), the same order
        self._longest = 0                  # longest duration in microseconds ever kept
        self._seq = itertools.count()
        self._watchers: dict[int, Callable[[tuple], object]] = {}
        self._tokens = itertools.count(1)
        self.added = 0
        self.dropped = 0

    def uutc(self, index: int) -> int:
        """Time stamp of sample ``index`` (the stream's grid)."""
        return self.start_uutc + int(round(index * 1e6 / self.fs))

    def __len__(self) -> int:
        with self._lock:
            return len(self._indices)

    # ---- adding -----------------------------------------------------------------------

    def add(self, index: int, text: str, duration_us: int, first_available: int, head: int,
            channel: str | None = None, kind: str | None = None) -> tuple:
        """Keep a marker at ``index`` (checked by the caller) and tell the watchers.

        Parameters
        ----------
        index : int
            Its sample index, ``first_available <= index <= head``.
        text : str
            Checked text.
        duration_us : int
            Duration in microseconds (0: none).
        first_available, head : int
            The stream's ring now: markers before ``first_available`` are dropped.
        channel : str, optional
            The channel it concerns (None: the whole stream).
        kind : str, optional
            Its record type (checked); default Note, or EDFA with a duration.

        Returns
        -------
        tuple
            The marker as a wire record ``(time, index, type, text, duration, channel,
            fields)``.
        """
        time = self.uutc(index)
        record = marker_record(time, text, duration_us, channel, kind)
        wire = (record[0], int(index)) + record[1:5] + (
            wire_fields(record[1], record[2], record[3], record[5]),)
        with self._lock:
            at = bisect.bisect_right(self._indices, index)
            self._indices.insert(at, int(index))
            self._times.insert(at, time)
            self._records.insert(at, (int(index), next(self._seq), wire))
            self._longest = max(self._longest, int(duration_us))
            self.added += 1
            self._prune(first_available)
            watchers = list(self._watchers.items())
        for token, watcher in watchers:
            try:
                if watcher(wire) is False:      # the watcher's view is gone
                    self.unwatch(token)
            except Exception:  # a broken watcher must not stop the pusher
                logger.exception("a marker watcher failed; it is dropped")
                self.unwatch(token)
        return wire

    def _prune(self, first_available: int) -> None:
        """Drop markers before ``first_available`` and beyond ``capacity`` (lock held)."""
        cut = bisect.bisect_left(self._indices, first_available)
        cut = max(cut, len(self._indices) - self.capacity)
        if cut > 0:
            del self._indices[:cut], self._times[:cut], self._records[:cut]
            self.dropped += cut

    # ---- watching ---------------------------------------------------------------------

    def watch(self, watcher: Callable[[tuple], object]) -> int:
        """Call ``watcher(record)`` for every marker added from now on; returns a token.

        The watcher runs in the pusher's thread and must return at once (queue the record,
        do not send it); returning False removes it.
        """
        with self._lock:
            token = next(self._tokens)
            self._watchers[token] = watcher
            return token

    def unwatch(self, token: int) -> None:
        """Stop calling the watcher of ``token`` (idempotent)."""
        with self._lock:
            self._watchers.pop(token, None)

    @property
    def watchers(self) -> int:
        """Watchers registered now."""
        with self._lock:
            return len(self._watchers)

    # ---- answering --------------------------------------------------------------------

    def select(self, start: int | None, stop: int | None, first_available: int = 0
               ) -> list[tuple]:
        """Markers overlapping ``[start, stop)`` in microseconds (None: unbounded), by time."""
        with self._lock:
            self._prune(first_available)
            times = self._times
            lo = 0 if start is None else bisect.bisect_left(times, start - self._longest)
            hi = len(times) if stop is None else bisect.bisect_left(times, stop)
            out = []
            for entry in self._records[lo:hi]:
                wire = entry[2]
                if start is None or wire[0] >= start or wire[0] + (wire[4] or 0) > start:
                    out.append(wire)
            return out

    def by_index(self, start: int, stop: int, first_available: int = 0) -> list[tuple]:
        """Markers whose sample index lies in ``[start, stop)``, by index."""
        with self._lock:
            self._prune(first_available)
            lo = bisect.bisect_left(self._indices, start)
            hi = bisect.bisect_left(self._indices, stop)
            return [entry[2] for entry in self._records[lo:hi]]

    @staticmethod
    def check_size(records: list[tuple], limit_bytes: int, max_records: int, start,
                   stop) -> None:
        """Refuse an answer of more than ``max_records`` records or ``limit_bytes``."""
        nbytes = sum(64 + len(r[3]) for r in records)
        if len(records) <= max_records and nbytes <= limit_bytes:
            return
        raise InvalidRangeError(
            f"the window start_uutc={start}, stop_uutc={stop} holds {len(records)} markers "
            f"({nbytes / 2**20:.1f} MiB); one answer carries at most {max_records} and "
            f"{limit_bytes / 2**20:g} MiB. Ask for a shorter window.")

    def __repr__(self) -> str:
        return (f"<MarkerHistory {len(self._indices)}/{self.capacity} markers, "
                f"{self.added} added, {self.dropped} dropped>")


class MarkerSide:
    """The producer's side of markers, mixed into :class:`~software.live.source.LiveStream`.

    Uses the stream's ``_lock`` (a marker at the head is kept before any sample at the
    head is pushed, so a follower finds it with the chunk that holds that sample, and a
    watcher hears of it before that chunk), ``ring``, ``channels``, ``markers`` and
    ``_check_pushable``.
    """

    markers: MarkerHistory

    def append_marker(self, text: str, index: int | None = None, duration: float = 0,
                      type: str | None = None, *, channel: str | None = None) -> int:
        """Put a marker on the stream's sample clock (a stimulus onset, a detection...).

        Parameters
        ----------
        text : str
            What happened (non-empty, no NUL, at most 4096 UTF-8 bytes).
        index : int, optional
            Its sample index, from ``first_available`` to the head; default the head (the
            next sample to be pushed).
        duration : float
            Seconds it lasts (0: an instant).
        type : str, optional
            ``Note`` (default), ``EDFA`` (default with a duration) or ``SyLg``.
        channel : str, optional
            The channel it concerns (a replayed channel-level record); None: the stream.

        Returns
        -------
        int
            The marker's sample index.

        Raises
        ------
        InvalidArgumentError, InvalidTypeError
            No text, a bad duration or type, an unknown channel; nothing is kept.
        InvalidRangeError
            ``index`` lies outside the stream's history (before ``first_available`` or
            past the head).
        ServiceClosedError
            The stream was closed.
        """
        text = check_marker_text(text)
        duration_us = int(round(check_marker_duration(duration) * 1e6))
        kind = check_marker_type(type, duration_us)
        at = None if index is None else as_index("index", index)
        if channel is not None and channel not in self.channels:
            raise UnknownChannelError(f"channel={channel!r} is not a channel of this stream; "
                                      f"channels: {', '.join(self.channels)}.")
        with self._lock:
            self._check_pushable()
            head, first = self.ring.head, self.ring.first_available
            at = head if at is None else at
            if not first <= at <= head:
                raise InvalidRangeError(
                    f"index={at} lies outside the stream's history: a marker goes on a "
                    f"sample from first_available={first} to the head={head} (the next "
                    f"sample); pass index=None for the head.")
            self.markers.add(at, text, duration_us, first, head, channel, kind)
        return at
