"""One connection's view of one MEF3 session: the StreamService clients call.

Each connection gets its own :class:`StreamService` per opened file (active channels,
segment size, prefetch direction, pending callbacks) over the shared
:class:`~software.recording.Recording`. Exposed methods validate their arguments, ask the
recording for the samples, read ahead in the direction the client moves, and return only
brine types.

Threads: exposed methods run in the connection's serving thread; callbacks are delivered
by the view's :class:`~software.delivery.CallbackDeliverer`.
"""
from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np
import rpyc

from ..cache.recording import Recording
from ..errors import (
    InvalidRangeError,
    InvalidTypeError,
    MixedRateError,
    ReaderError,
    ServiceClosedError,
    StreamError,
    UnknownChannelError,
)
from ..mef3.metadata import RateGroup, grid_length, grid_offset
from ..validation import (
    as_index,
    as_name_list,
    as_positive_float,
    as_uutc,
    check_request_size,
)
from .answers import SegmentEncoder
from .counters import Counters
from .delivery import CallbackDeliverer, async_callback

__all__ = ["ServiceOptions", "StreamService"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceOptions:
    """Per-server settings every view uses.

    Attributes
    ----------
    segment_seconds : float
        Default segment size of a new view.
    prefetch : int
        Requests of the same size (at least 60 s) read ahead of a streaming client.
    max_request_bytes : int
        Largest answer one call may produce (float64 samples).
    read_timeout : float
        Seconds a call without callback waits for its data before failing.
    callback_timeout : float
        Seconds after which a client callback that has not returned is noted (logged once
        per view, counted).
    counters : Counters
        The server's event counters (one object shared by every view and connection).
    """

    segment_seconds: float = 60.0
    prefetch: int = 1
    max_request_bytes: int = 256 * 2**20
    read_timeout: float = 120.0
    callback_timeout: float = 30.0
    counters: Counters = field(default_factory=Counters)


class StreamService(rpyc.Service):
    """One connection's view of one opened MEF3 session.

    Parameters
    ----------
    recording : Recording
        The shared session.
    options : ServiceOptions
        Server-wide settings.
    display_path : str
        The path as clients see it (relative to the data root).
    """

    #: How answers are encoded: the connection's encoder (shared memory once negotiated),
    #: set by the root service; this socket-only default serves views used in-process.
    _encoder = SegmentEncoder()

    def __init__(self, recording: Recording, options: ServiceOptions,
                 display_path: str) -> None:
        self._recording = recording
        self._options = options
        self._display_path = display_path
        info = recording.info
        self._group: RateGroup = recording.groups[info.default_fs]
        self._names: tuple[str, ...] = self._group.channels
        self._segment_samples = self._samples_for(options.segment_seconds)
        self._segment_seconds = float(options.segment_seconds)
        self._last_range: tuple[int, int] | None = None
        self._last_prefetch: tuple | None = None
        self._direction = 1
        self._lock = threading.Lock()
        self._closed = False
        self._deliverer = CallbackDeliverer(f"callbacks-{display_path}",
                                     options.callback_timeout)

    # ---- settings -------------------------------------------------------------------

    def _samples_for(self, seconds: float) -> int:
        return max(1, int(round(seconds * self._group.fs)))

    def exposed_get_info(self) -> tuple:
        """Describe the session and this view's settings.

        Returns
        -------
        tuple of (str, value) pairs
            ``dict(svc.get_info())`` gives ``path``, ``channels`` (active, in order),
            ``all_channels``, ``fs``, ``rates`` ((name, fs) pairs), ``start_uutc``,
            ``end_uutc``, ``n_samples``, ``units``, ``segment_seconds``,
            ``segment_samples``, ``n_segments``, ``gaps`` ((start_uutc, stop_uutc) pairs),
            ``growing`` (False: a file does not grow).
        """
        self._check_open()
        info = self._recording.info
        group = self._group
        return (
            ("path", self._display_path),
            ("channels", self._names),
            ("all_channels", info.names),
            ("fs", group.fs),
            ("rates", tuple((c.name, c.fs) for c in info.channels)),
            ("start_uutc", group.start_uutc),
            ("end_uutc", group.end_uutc),
            ("n_samples", group.n_samples),
            ("units", tuple(info.channel(n).units for n in self._names)),
            ("segment_seconds", self._segment_seconds),
            ("segment_samples", self._segment_samples),
            ("n_segments", self._n_segments()),
            ("gaps", info.gaps(self._names)),
            ("growing", False),
        )

    def _n_segments(self) -> int:
        return math.ceil(self._group.n_samples / self._segment_samples)

    def exposed_set_active_channels(self, names=None) -> tuple[str, ...]:
        """Choose the channels (and their order) that every later segment returns.

        Parameters
        ----------
        names : list of str, str or None
            Channel names in the wanted order; empty or None selects the default: every
            channel of the file's most common sampling rate, in file order.

        Returns
        -------
        tuple of str
            The active channels.

        Raises
        ------
        UnknownChannelError
            A name is not a channel of the session.
        InvalidArgumentError
            A name is repeated.
        MixedRateError
            The names have different sampling rates.
        """
        self._check_open()
        wanted = as_name_list("names", names)
        info = self._recording.info
        if not wanted:
            group = self._recording.groups[info.default_fs]
            wanted = group.channels
        unknown = [n for n in wanted if n not in info.names]
        if unknown:
            raise UnknownChannelError(
                f"names contains {unknown!r}, not channels of this session; choose from "
                f"{list(info.names)!r}.")
        dupes = sorted({n for n in wanted if wanted.count(n) > 1})
        if dupes:
            raise InvalidRangeError(f"names lists {dupes!r} more than once; give each channel "
                                    f"once.")
        rates = {n: info.channel(n).fs for n in wanted}
        if len(set(rates.values())) > 1:
            by_rate: dict[float, list[str]] = {}
            for n, fs in rates.items():
                by_rate.setdefault(fs, []).append(n)
            detail = "; ".join(f"{fs:g} Hz: {chs}" for fs, chs in sorted(by_rate.items()))
            raise MixedRateError(f"names mixes sampling rates ({detail}); select channels of "
                                 f"one rate per view (open the file again for another rate).")
        fs = rates[wanted[0]]
        seconds = self._segment_seconds
        with self._lock:
            self._group = self._recording.groups[fs]
            self._names = wanted
            self._segment_samples = self._samples_for(seconds)
            self._last_range = None
        return wanted

    def exposed_set_segment_size(self, seconds) -> int:
        """Set the segment length used by :meth:`exposed_get_segment`.

        Parameters
        ----------
        seconds : float
            Segment length in seconds (> 0; rounded to whole samples, at least one).

        Returns
        -------
        int
            Number of segments; the last one may be shorter.
        """
        self._check_open()
        seconds = as_positive_float("seconds", seconds)
        samples = self._samples_for(seconds)
        check_request_size(len(self._names), samples, self._options.max_request_bytes)
        with self._lock:
            self._segment_seconds = seconds
            self._segment_samples = samples
        return self._n_segments()

    # ---- data -----------------------------------------------------------------------

    def exposed_get_segment(self, index, _callback=None):
        """Return the ``index``-th segment of the current size (channels x samples).

        Parameters
        ----------
        index : int
            0 <= index < n_segments.
        _callback : callable, optional
            Called with the segment when it was not ready (see Returns).

        Returns
        -------
        tuple or False
            ``(bytes, dtype, shape)`` for :func:`~software.decode_segment`; with a
            callback and data not cached yet: ``False`` now and the data via the callback.
        """
        self._check_open()
        index = as_index("index", index)
        n_segments = self._n_segments()
        if index >= n_segments:
            raise InvalidRangeError(f"index={index} is past the last segment; valid indices "
                                    f"are 0..{n_segments - 1} for segments of "
                                    f"{self._segment_seconds:g} s.")
        start = index * self._segment_samples
        stop = min(start + self._segment_samples, self._group.n_samples)
        return self._serve(self._names, start, stop, _callback, rows=None)

    def exposed_get_stream_segment(self, _range, _startIndex, _callback=None):
        """Return ``_range`` samples of every active channel from sample ``_startIndex``.

        Parameters
        ----------
        _range : int
            Number of samples (> 0); fewer are returned near the end.
        _startIndex : int
            Grid index from the session start (>= 0).
        _callback : callable, optional
            Called with the data when it was not ready.

        Returns
        -------
        tuple or False
            ``(bytes, dtype, shape)`` with shape (channels, samples); False past the end,
            or (with a callback) when the data will come through the callback.
        """
        self._check_open()
        length = as_index("_range", _range, minimum=1)
        start = as_index("_startIndex", _startIndex)
        names = self._names
        n = self._group.n_samples
        # the limit applies to what is asked, so a call fails or works whatever the file size
        check_request_size(len(names), length, self._options.max_request_bytes)
        if start >= n:
            return False
        return self._serve(names, start, min(start + length, n), _callback, rows=None)

    def exposed_get_row_segment(self, _row, _range, _startIndex, _callback=None):
        """Return ``_range`` samples of one channel from sample ``_startIndex``.

        Parameters
        ----------
        _row : int or str
            Index into the active channels, or a channel name of the same sampling rate.
        _range, _startIndex, _callback
            As in :meth:`exposed_get_stream_segment`.

        Returns
        -------
        tuple or False
            ``(bytes, dtype, shape)`` with shape (samples,), or False as for stream segments.
        """
        self._check_open()
        name = self._row_name(_row)
        length = as_index("_range", _range, minimum=1)
        start = as_index("_startIndex", _startIndex)
        n = self._group.n_samples
        check_request_size(1, length, self._options.max_request_bytes)
        if start >= n:
            return False
        return self._serve((name,), start, min(start + length, n), _callback, rows=0)

    def _row_name(self, row) -> str:
        names = self._names
        if isinstance(row, str):
            row = str(row)
            if row not in names:
                where = ("is not an active channel" if row in self._recording.info.names
                         else "is not a channel of this session")
                raise UnknownChannelError(f"_row={row!r} {where}; active channels: "
                                          f"{list(names)!r}.")
            return row
        index = as_index("_row", row)
        if index >= len(names):
            raise UnknownChannelError(f"_row={index} is out of range: there are {len(names)} "
                                      f"active channels (0..{len(names) - 1}).")
        return names[index]

    def exposed_get_time_segment(self, start_uutc, stop_uutc, _callback=None):
        """Return every active channel in the time window ``[start_uutc, stop_uutc)``.

        Equals ``MefReader.get_data(channels, start_uutc, stop_uutc)`` for windows that
        start on the sample grid; an off-grid start snaps to the nearest grid sample.
        Parts of the window outside the recording are NaN.

        Parameters
        ----------
        start_uutc, stop_uutc : int
            Microseconds since the epoch, ``start_uutc < stop_uutc``.
        _callback : callable, optional
            As for :meth:`exposed_get_stream_segment`.

        Returns
        -------
        tuple or False
            The segment; False when the window lies entirely outside the recording, or
            (with a callback) when the data will come through the callback.
        """
        self._check_open()
        t0 = as_uutc("start_uutc", start_uutc)
        t1 = as_uutc("stop_uutc", stop_uutc)
        if t1 <= t0:
            raise InvalidRangeError(f"stop_uutc={t1} must be after start_uutc={t0}.")
        group = self._group
        first = grid_offset(t0, group.start_uutc, group.fs)
        count = grid_length(t0, t1, group.fs)
        check_request_size(len(self._names), count, self._options.max_request_bytes)
        lo, hi = max(first, 0), min(first + count, group.n_samples)
        if count == 0 or hi <= lo:
            return False
        pad = (lo - first, first + count - hi)
        return self._serve(self._names, lo, hi, _callback, rows=None, pad=pad)

    # ---- machinery ------------------------------------------------------------------

    def _serve(self, names, start, stop, callback, rows, pad=(0, 0)):
        if callback is not None and not callable(callback):
            raise InvalidTypeError(f"_callback must be a function taking one argument, or None; "
                                   f"a value of type {type(callback).__name__} is not.")
        recording, group = self._recording, self._group
        gathered = recording.gather(names, group, start, stop)
        ready = gathered.done()
        if not ready:  # reads ahead queue behind this request's reads (lower priority)
            self._prefetch(names, group, start, stop)
        # an answer sent as it is is assembled in the connection's shared-memory area
        reserve = self._encoder.reserve if rows is None and pad == (0, 0) else None

        def encode(blocks) -> tuple:  # in the serving thread, or the view's delivery thread
            try:
                data = blocks.assemble(reserve)
                if pad != (0, 0):
                    data = np.pad(data, ((0, 0), pad), constant_values=np.nan)
                return self._encoder(data[rows] if rows is not None else data)
            finally:
                self._encoder.discard()

        if callback is None or ready:
            try:
                value = encode(gathered.result(timeout=self._options.read_timeout))
            except FutureTimeout:
                raise ReaderError(f"no data after {self._options.read_timeout:g} s for samples "
                                  f"[{start}, {stop}); the reader processes are overloaded "
                                  f"or stuck. Try again or ask for less.") from None
            if ready:  # start reading ahead once the answer is built, not while building it
                self._prefetch(names, group, start, stop)
            return value
        deliverer = self._deliverer
        cb = async_callback(callback)
        gathered.add_done_callback(lambda f: deliverer.put(cb, f, encode))
        return False

    def _prefetch(self, names, group: RateGroup, start: int, stop: int) -> None:
        """Read ahead of a client that moves through the file, in its direction.

        Only a request that continues the previous one (or the first) reads ahead, so
        random access costs no reading. Ahead means ``prefetch`` requests of this size
        but at least two reader runs (2 x 60 s), so small steps are read in efficient runs
        and a reader finishing one run has the next waiting (with one run ahead, a client
        with no work between requests left the readers idle a quarter of a cold pass);
        nearer parts get the better reader priority.
        """
        depth = self._options.prefetch
        if depth <= 0:
            return
        with self._lock:
            last = self._last_range
            self._last_range = (start, stop)
            if last is not None and start != last[1] and stop != last[0]:
                return  # a jump: not a stream
            if last is not None:
                self._direction = 1 if start >= last[1] else -1
            direction = self._direction
        recording, n = self._recording, group.n_samples
        size = recording.block_samples(group)
        length = stop - start
        step = max(length, recording.run_blocks * size)
        ahead = max(depth * length, 2 * step)
        lo, hi = (stop, min(stop + ahead, n)) if direction > 0 else (max(start - ahead, 0),
                                                                     start)
        spans = []  # (first block, last block, priority), nearest first
        for i, edge in enumerate(range(0, hi - lo, step), start=1):
            a, b = (lo + edge, min(lo + edge + step, hi)) if direction > 0 else \
                (max(hi - edge - step, lo), hi - edge)
            spans.append((a // size, (b - 1) // size, i))
        plan = (names, group.fs, tuple(spans))
        if plan == self._last_prefetch:  # small steps within the same blocks: done already
            return
        self._last_prefetch = plan
        for first, last_block, priority in spans:
            recording.prefetch(names, group, first * size, (last_block + 1) * size,
                               priority=priority)

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceClosedError(f"{self._display_path!r} was closed on this connection; "
                                     f"open it again with open_file().")

    def close(self) -> None:
        """Stop delivering callbacks for this view (idempotent)."""
        self._closed = True
        self._deliverer.close()

    @property
    def closed(self) -> bool:
        """Whether the view was closed."""
        return self._closed

    # ---- CREPE push side --------------------------------------------------------------

    def append_stream_segment_data(self, _new_data) -> None:
        """CREPE's push side; a MEF3 file is read-only, so this always refuses."""
        raise StreamError("a MEF3 file stream is read-only: data arrives from the reader "
                          "processes; use a LiveStream to push samples.")

    def append_stream_row_data(self, _row, _new_data) -> None:
        """CREPE's push side; a MEF3 file is read-only, so this always refuses."""
        self.append_stream_segment_data(_new_data)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<StreamService {self._display_path!r} {state}, {len(self._names)} channels "
                f"at {self._group.fs:g} Hz>")
