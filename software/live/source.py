"""A live stream: a producer pushes samples into a bounded ring, views pull them.

:class:`LiveStream` is the documented in-process object: create it, serve it with
``MefStreamServer(live=stream)`` (at the connection root, CREPE style) or
``MefStreamServer(live_streams=[stream])`` (beside the file service: ``open_live(name)``),
and push with CREPE's names::

    stream = LiveStream("rig", ["a", "b", "c"], fs=30000, dtype="int16")
    stream.append_stream_segment_data(block)        # 3 x n samples (or 3 values)
    stream.append_stream_row_data("b", values)      # one channel
    stream.append_marker("stimulus")                # an event at the head (markers.py)

Pushing copies into the ring and wakes the views whose earliest waiting request is now
complete (:mod:`software.live.waiters`): the same cost whatever number of requests wait.
Each view answers its requests in its own delivery thread, copying the samples out of
the ring as it sends them (a request whose samples the ring overwrote before that gets
DroppedSamplesError, never other samples), so a slow or stalled client never blocks the
producer or another client, and holds no copies of samples waiting to be sent.
"""
from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

from ..errors import (
    DroppedSamplesError,
    InvalidArgumentError,
    InvalidRangeError,
    PushRefusedError,
    ServiceClosedError,
)
from ..mef3.metadata import ChannelInfo, RateGroup, SessionInfo
from ..stream.counters import Counters
from ..stream.source import Source
from ..validation import as_positive_float
from .lease import ProducerLease
from .markers import MarkerHistory, MarkerSide
from .ring import DTYPES, Ring
from .samples import as_block, as_row, check_ahead, check_level, row_index
from .view import LiveView
from .waiters import RingAnswer, Waiters, Watchlist

__all__ = ["LiveStream", "LiveView"]  # LiveView lives in .view


class LiveStream(MarkerSide, Source):
    """Channels of one rate pushed by a producer, the last ``history_seconds`` kept.

    Parameters
    ----------
    name : str
        The stream's name (``get_info()['path']``, ``open_live(name)``).
    channels : sequence of str
        Channel names, in row order.
    fs : float
        Sampling rate in Hz.
    dtype : str
        ``float64`` (default), ``float32``, ``int16`` or ``int32``.
    history_seconds : float
        Seconds of samples the ring keeps (memory: channels x fs x history x itemsize,
        plus a quarter for rows pushed ahead of the others).
    start_uutc : int, optional
        Time of sample index 0 in microseconds; default: the wall clock at creation.
    units : str
        Units of the samples (``get_info()['units']``).
    shared_memory : bool
        Keep the ring in memory that followers and a producer on this host map (see
        :mod:`software.shm.ring`); False: in this process only (followers on the socket).
    """

    growing = True

    def __init__(self, name: str, channels: Sequence[str], fs: float, dtype: str = "float64",
                 history_seconds: float = 60.0, start_uutc: int | None = None,
                 units: str = "", shared_memory: bool = True) -> None:
        names = tuple(str(c) for c in channels)
        if not names or len(set(names)) != len(names):
            raise InvalidArgumentError(f"channels={names!r}: give one or more distinct names.")
        if str(dtype) not in DTYPES:
            raise InvalidArgumentError(f"dtype={dtype!r} is not a live stream type; use one of "
                                       f"{', '.join(DTYPES)}.")
        self.name = str(name)
        self.fs = as_positive_float("fs", fs)
        self.history_seconds = as_positive_float("history_seconds", history_seconds)
        self.start_uutc = int(time.time() * 1e6) if start_uutc is None else int(start_uutc)
        self.dtype = np.dtype(str(dtype))
        self.ring = Ring(len(names), max(1, int(round(self.history_seconds * self.fs))),
                         str(dtype), shared=bool(shared_memory))
        self._rows = {n: i for i, n in enumerate(names)}
        self._info = SessionInfo(path=self.name, channels=tuple(
            ChannelInfo(n, self.fs, self.start_uutc, self.start_uutc, units, 1.0, 0)
            for n in names))
        self._lock = threading.Lock()          # one producer at a time; guards the watchlist
        self._watchlist = Watchlist()          # views waiting, by their earliest stop
        self._views: weakref.WeakSet[Waiters] = weakref.WeakSet()
        self._own: Waiters | None = None       # requests made without a view
        self._describers: list[Callable[[], tuple]] = []
        self.controller = None                 # a Replay driving this stream, if any
        self._lease = None                     # a same-host producer's ProducerLease
        self._closed = False
        #: Markers put on the stream (:meth:`append_marker`), the last 10,000 kept.
        self.markers = MarkerHistory(self.fs, self.start_uutc)

    # ---- the Source seam ----------------------------------------------------------

    @property
    def info(self) -> SessionInfo:
        """Channels, rate and units (the grid grows: see :meth:`group`)."""
        return self._info

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names in row order."""
        return self._info.names

    @property
    def head(self) -> int:
        """Samples every channel has: the index the next segment push starts at."""
        return self.ring.head

    @property
    def first_available(self) -> int:
        """The oldest index every channel still holds."""
        return self.ring.first_available

    def group(self, fs: float) -> RateGroup:
        """The grid as it is now: ``n_samples`` is the head."""
        head = self.ring.head
        return RateGroup(fs=self.fs, channels=self._info.names, start_uutc=self.start_uutc,
                         end_uutc=self.start_uutc + int(round(head * 1e6 / self.fs)),
                         n_samples=head)

    def extra_info(self) -> tuple[tuple[str, object], ...]:
        """``first_available``, ``dtype``, ``history_seconds`` (and a replay's state)."""
        pairs = (("first_available", self.ring.first_available), ("dtype", self.dtype.name),
                 ("history_seconds", self.history_seconds))
        for describe in self._describers:
            pairs += describe()
        return pairs

    def describe_with(self, describer: Callable[[], tuple]) -> None:
        """Add ``describer()``'s ``(name, value)`` pairs to every ``get_info`` (a replay)."""
        self._describers.append(describer)

    def gather(self, names, group, start, stop, waiters: Waiters | None = None) -> Future:
        """Samples ``[start, stop)``: at once when all pushed, else when pushes reach ``stop``.

        The future's answer copies the samples when it is assembled.

        Parameters
        ----------
        names, group, start, stop
            The request.
        waiters : Waiters, optional
            The asking view's waiting requests (see :meth:`waiters`); without it the
            request is answered in the thread of the push that completes it.

        Raises
        ------
        DroppedSamplesError
            ``start`` is before the oldest sample the ring holds.
        InvalidRangeError
            The request is longer than the history, so it could never be held at once.
        """
        rows = self._row_selection(names)
        ring = self.ring
        if stop - start > ring.history:
            raise InvalidRangeError(
                f"a request of {stop - start} samples is longer than the {ring.history} "
                f"samples ({self.history_seconds:g} s) the stream {self.name!r} keeps; ask "
                f"for at most {ring.history} samples at once.")
        if start < ring.first_available:
            raise self.dropped_error(start, stop)
        if waiters is None:
            waiters = self._own_waiters()
        if stop <= ring.head:
            fut: Future = Future()
            fut.set_result(RingAnswer(self, rows, start, stop, waiters.dropped))
            return fut
        return waiters.add(rows, start, stop)

    def waiters(self, dropped: Callable[[], None] | None = None) -> Waiters:
        """A new view's list of waiting requests (``dropped()`` counts dropped answers)."""
        waiters = Waiters(self, dropped)
        with self._lock:
            self._views.add(waiters)
        return waiters

    def _own_waiters(self) -> Waiters:
        with self._lock:
            if self._own is None:
                self._own = Waiters(self)
                self._views.add(self._own)
            return self._own

    def watch(self, waiters: Waiters, stop: int) -> None:
        """Wake ``waiters`` once the head reaches ``stop`` (at once if it has)."""
        with self._lock:
            if self._closed:
                return
            if stop > self.ring.head:
                self._watchlist.watch(waiters, stop)
                return
        waiters.wake()

    def unwatch(self, waiters: Waiters) -> None:
        """Forget ``waiters`` (its view closed)."""
        with self._lock:
            self._watchlist.forget(waiters)

    @property
    def waiting(self) -> int:
        """Requests waiting for samples not pushed yet (withdrawn ones not counted)."""
        with self._lock:
            views = list(self._views)
        return sum(w.count for w in views)

    def dropped_error(self, start: int, stop: int) -> DroppedSamplesError:
        """The error of a request of samples ``[start, stop)`` the ring no longer holds."""
        ring = self.ring
        return DroppedSamplesError(
            f"samples [{start}, {stop}) of the live stream {self.name!r} were dropped from "
            f"its {self.history_seconds:g} s history: first_available={ring.first_available}, "
            f"head={ring.head}. Ask for samples from first_available on (a client that falls "
            f"behind can resume at the head).")

    def _row_selection(self, names) -> slice | list[int]:
        rows = [self._rows[n] for n in names]
        if rows == list(range(len(self._rows))):
            return slice(None)
        return rows

    # ---- the push side --------------------------------------------------------------

    def append_stream_segment_data(self, data) -> int:
        """Append samples of every channel (CREPE's name).

        Parameters
        ----------
        data : array-like or (bytes, dtype, shape)
            channels x n samples, or one value per channel (see
            :mod:`software.live.samples` for the accepted forms).

        Returns
        -------
        int
            The head after the push.

        Raises
        ------
        InvalidArgumentError, InvalidTypeError
            Wrong shape, or values the dtype cannot hold; nothing is appended.
        """
        block = as_block(data, self.ring.n_channels, self.dtype)
        with self._lock:
            self._check_pushable()
            ring = self.ring
            check_level(ring, self.name)
            n = block.shape[1]
            if n <= ring.history:
                ring.write(block)
            else:
                for done in range(0, n, ring.history):   # at most a ring's length per write
                    ring.write(block[:, done:done + ring.history])
            head = ring.head
            woken = self._watchlist.due(head)
        for waiters in woken:      # each view answers in its own thread
            waiters.wake()
        return head

    def append_stream_row_data(self, _row, data) -> int:
        """Append samples of one channel (CREPE's name).

        Parameters
        ----------
        _row : int or str
            Row index or channel name.
        data : array-like or (bytes, dtype, shape)
            That channel's new samples (n values, or one).

        Returns
        -------
        int
            The head after the push: where every channel has samples.

        Raises
        ------
        InvalidArgumentError
            The row would run more than a quarter of the history ahead of the slowest row,
            or the values do not fit; nothing is appended.
        """
        row = self._row_index(_row)
        values = as_row(data, self.dtype)
        with self._lock:
            self._check_pushable()
            ring = self.ring
            check_ahead(ring, row, values.shape[0], _row, self.name)
            ring.write(values[None, :], row)
            head = ring.head
            woken = self._watchlist.due(head)
        for waiters in woken:
            waiters.wake()
        return head

    def _row_index(self, row) -> int:
        return row_index(self._rows, row, self.name)

    def _check_pushable(self) -> None:
        if self._closed:
            raise ServiceClosedError(f"the live stream {self.name!r} was closed.")
        if self._lease is not None:
            raise PushRefusedError(f"{self.name!r} is pushed by the producer handle of "
                                   f"{self._lease.holder}: push through that handle, or "
                                   f"close it first.")

    def lease_producer(self, holder: str) -> ProducerLease:
        """Let one same-host producer handle write the shared ring (see
        :mod:`software.live.lease`); every other push is refused until it is released."""
        return ProducerLease.grant(self, holder)

    def heads_moved(self) -> None:
        """A producer holding the lease moved the head: wake the views it completed."""
        with self._lock:
            woken = self._watchlist.due(self.ring.head)
        for waiters in woken:
            waiters.wake()

    push_segment = append_stream_segment_data
    push_row = append_stream_row_data

    def view(self, counters: Counters | None = None, may_push: bool = True,
             refusal: str = "") -> LiveView:
        """A view's access to this stream (counts dropped requests, may refuse pushes)."""
        return LiveView(self, counters, may_push, refusal)

    def close(self) -> None:
        """End the stream: refuse pushes, withdraw every waiting request (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._watchlist.clear()
            views = list(self._views)
            lease, self._lease = self._lease, None
            self.ring.mark_closed()             # followers in memory learn it, and wake
        if lease is not None:
            lease.release()
        self.ring.close()
        controller = self.controller
        if controller is not None:
            controller.close()
        for waiters in views:
            waiters.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<LiveStream {self.name!r} {self.ring.n_channels} ch x {self.fs:g} Hz "
                f"{self.dtype.name}, head {self.ring.head}>")
