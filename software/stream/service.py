"""One connection's view of one source: the StreamService clients call.

Each connection gets its own :class:`StreamService` per opened file or live stream (active
channels, segment size, read-ahead direction, pending callbacks) over a
:class:`~software.stream.source.Source`: a :class:`~software.stream.source.FileSource` over
the shared :class:`~software.cache.recording.Recording`, or a live ring. Exposed methods
validate their arguments, ask the source for grid samples, hint the direction the client
moves, and return only brine types.

Threads: exposed methods run in the connection's serving thread; callbacks are delivered
by the view's :class:`~software.stream.delivery.CallbackDeliverer`.
"""
from __future__ import annotations

import logging
import math
import threading

import rpyc

from ..cache.recording import Recording
from ..errors import (
    InvalidRangeError,
    ServiceClosedError,
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
from .channels import check_selection, row_name
from .envelope import EnvelopeMixin
from .options import ServiceOptions
from .records import RecordsMixin
from .requests import Requests
from .source import FileSource, Source
from .withdrawal import Withdrawal

__all__ = ["ServiceOptions", "StreamService"]

logger = logging.getLogger(__name__)


class StreamService(RecordsMixin, EnvelopeMixin, Withdrawal, rpyc.Service):
    """One connection's view of one source (an opened MEF3 session, or a live stream).

    Parameters
    ----------
    source : Source or Recording
        What the view serves; a :class:`~software.cache.recording.Recording` is wrapped in
        a :class:`~software.stream.source.FileSource` of this view's own.
    options : ServiceOptions
        Server-wide settings.
    display_path : str
        The name clients see (a path relative to the data root, or a stream's name).
    """

    #: How answers are encoded: the connection's encoder (shared memory once negotiated),
    #: set by the root service; this socket-only default serves views used in-process.
    _encoder = SegmentEncoder()

    def __init__(self, source: Source | Recording, options: ServiceOptions,
                 display_path: str) -> None:
        if isinstance(source, Recording):
            self._recording = source  # the root gives it back to the registry
            source = FileSource(source)
        self._source = source
        self._options = options
        self._display_path = display_path
        info = source.info
        self._fs = info.default_fs
        self._names: tuple[str, ...] = source.group(self._fs).channels
        self._wanted_seconds = float(options.segment_seconds)
        self._segment_samples = self._segment_for(self._wanted_seconds)
        self._lock = threading.Lock()
        self._closed = False
        self._requests = Requests(source, options, f"callbacks-{display_path}")

    # ---- settings -------------------------------------------------------------------

    @property
    def _group(self) -> RateGroup:
        return self._source.group(self._fs)

    def _samples_for(self, seconds: float) -> int:
        return max(1, int(round(seconds * self._fs)))

    def _segment_for(self, seconds: float) -> int:
        """Samples of a segment of ``seconds``, cut to what one answer (and a live ring's
        history) may hold."""
        return min(self._samples_for(seconds), self._options.max_samples(len(self._names)),
                   self._source.longest or math.inf)

    def exposed_get_info(self) -> tuple:
        """Describe the source and this view's settings.

        Returns
        -------
        tuple of (str, value) pairs
            ``dict(svc.get_info())`` gives ``path``, ``channels`` (active, in order),
            ``all_channels``, ``fs``, ``rates`` ((name, fs) pairs), ``start_uutc``,
            ``end_uutc``, ``n_samples``, ``units``, ``segment_seconds`` and
            ``segment_samples`` (the segment size in effect: the size asked for, cut to
            the largest answer the server sends), ``n_segments``, ``gaps``
            ((start_uutc, stop_uutc) pairs), ``growing`` (False for a file), and for a
            live stream the pairs its source adds.
        """
        self._check_open()
        source = self._source
        info = source.info
        group = self._group
        samples = self._segment_samples
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
            ("segment_seconds", samples / group.fs),
            ("segment_samples", samples),
            ("n_segments", math.ceil(group.n_samples / samples)),
            ("gaps", info.gaps(self._names)),
            ("growing", source.growing),
        ) + source.extra_info()

    def exposed_set_active_channels(self, names=None) -> tuple[str, ...]:
        """Choose the channels (and their order) that every later segment returns.

        The segment size asked for (:meth:`exposed_set_segment_size`) is kept in seconds
        and cut again to what one answer of the new channels may hold.

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
            A name is repeated, or more names than the session has channels are given.
        MixedRateError
            The names have different sampling rates.
        """
        self._check_open()
        info = self._source.info
        wanted = as_name_list("names", names, limit=len(info.names))
        if not wanted:
            wanted = self._source.group(info.default_fs).channels
        fs = check_selection(info, wanted)
        with self._lock:
            self._fs = fs
            self._names = wanted
            self._segment_samples = self._segment_for(self._wanted_seconds)
        self._requests.forget_position()
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

        Raises
        ------
        InvalidRangeError
            A segment of the active channels would be larger than the largest answer;
            the message names the longest segment allowed.
        """
        self._check_open()
        seconds = as_positive_float("seconds", seconds)
        samples = self._samples_for(seconds)
        limit = self._options.max_samples(len(self._names))
        if samples > limit:
            raise InvalidRangeError(
                f"seconds={seconds:g} makes segments of {len(self._names)} channels x "
                f"{samples} samples, above the per-request limit of "
                f"{self._options.max_request_bytes / 2**20:g} MiB; set at most "
                f"{limit / self._fs:g} s ({limit} samples) with these channels.")
        self._source.check_segment(seconds, samples, self._fs)   # a live ring's history
        with self._lock:
            self._wanted_seconds = seconds
            self._segment_samples = samples
        return math.ceil(self._group.n_samples / samples)

    # ---- data -----------------------------------------------------------------------

    def exposed_get_segment(self, index, _callback=None):
        """Return the ``index``-th segment of the current size (channels x samples).

        Parameters
        ----------
        index : int
            0 <= index < n_segments (of a growing source: any index; one not pushed yet
            is not ready).
        _callback : callable, optional
            Called with the segment when it was not ready (see Returns).

        Returns
        -------
        tuple or False
            ``(bytes, dtype, shape)`` for :func:`~software.decode_segment`; with a
            callback and data not ready yet: ``False`` now and the data via the callback.
        """
        self._check_open()
        index = as_index("index", index)
        size = self._segment_samples
        n = self._group.n_samples
        start = index * size
        if not self._source.growing:
            n_segments = math.ceil(n / size)
            if index >= n_segments:
                raise InvalidRangeError(f"index={index} is past the last segment; valid "
                                        f"indices are 0..{n_segments - 1} for segments of "
                                        f"{size / self._fs:g} s.")
            return self._serve(self._names, start, min(start + size, n), _callback, None)
        return self._serve(self._names, start, start + size, _callback, None)

    def exposed_get_stream_segment(self, _range, _startIndex, _callback=None):
        """Return ``_range`` samples of every active channel from sample ``_startIndex``.

        Parameters
        ----------
        _range : int
            Number of samples (> 0); fewer are returned near the end of a file.
        _startIndex : int
            Grid index from the start (>= 0).
        _callback : callable, optional
            Called with the data when it was not ready.

        Returns
        -------
        tuple or False
            ``(bytes, dtype, shape)`` with shape (channels, samples); False past the end
            of a file, or when the data is not ready (then, with a callback, it comes
            through the callback).
        """
        self._check_open()
        length = as_index("_range", _range, minimum=1)
        start = as_index("_startIndex", _startIndex)
        # the limit applies to what is asked, so a call fails or works whatever the file size
        check_request_size(len(self._names), length, self._options.max_request_bytes)
        return self._serve_range(self._names, start, length, _callback, None)

    def exposed_get_row_segment(self, _row, _range, _startIndex, _callback=None):
        """Return ``_range`` samples of one channel from sample ``_startIndex``.

        Parameters
        ----------
        _row : int or str
            Index into the active channels, or the name of an active channel.
        _range, _startIndex, _callback
            As in :meth:`exposed_get_stream_segment`.

        Returns
        -------
        tuple or False
            ``(bytes, dtype, shape)`` with shape (samples,), or False as for stream segments.
        """
        self._check_open()
        name = row_name(self._source.info, self._names, _row)
        length = as_index("_range", _range, minimum=1)
        start = as_index("_startIndex", _startIndex)
        check_request_size(1, length, self._options.max_request_bytes)
        return self._serve_range((name,), start, length, _callback, 0)

    def _serve_range(self, names, start, length, callback, rows):
        n = self._group.n_samples
        if self._source.growing:
            return self._serve(names, start, start + length, callback, rows)
        if start >= n:
            return False
        return self._serve(names, start, min(start + length, n), callback, rows)

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
            when it is not ready (then, with a callback, it comes through the callback).
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
        end = first + count if self._source.growing else min(first + count, group.n_samples)
        lo, hi = max(first, 0), end
        if count == 0 or hi <= lo:
            return False
        pad = (lo - first, first + count - hi)
        return self._serve(self._names, lo, hi, _callback, rows=None, pad=pad)

    # ---- machinery ------------------------------------------------------------------

    def _serve(self, names, start, stop, callback, rows, pad=(0, 0)):
        # an answer too large for the connection's form is refused before any reading
        self._encoder.admit(1 if rows is not None else len(names), stop - start + sum(pad))
        return self._requests.serve(self._encoder, names, self._group, start, stop,
                                    callback, rows, pad)

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceClosedError(f"{self._display_path!r} was closed on this connection; "
                                     f"open it again with open_file().")

    def close(self) -> None:
        """Stop delivering callbacks for this view and withdraw its pending requests
        (idempotent)."""
        self._closed = True
        self._requests.close()
        self._source.close()

    @property
    def closed(self) -> bool:
        """Whether the view was closed."""
        return self._closed

    # ---- CREPE push side --------------------------------------------------------------

    def exposed_append_stream_segment_data(self, _new_data) -> int:
        """CREPE's push side: append samples of every active channel.

        Parameters
        ----------
        _new_data : array-like
            channels x n samples, or one value per channel.

        Returns
        -------
        int
            The stream's head (samples every channel has) after the push.

        Raises
        ------
        StreamError
            The stream is a MEF3 file (read-only), or the samples do not fit the stream.
        """
        self._check_open()
        return self._source.push_segment(_new_data)

    def exposed_append_stream_row_data(self, _row, _new_data) -> int:
        """CREPE's push side: append samples of one channel (``_row``: index or name).

        Returns
        -------
        int
            The stream's head after the push: where every channel has samples.
        """
        self._check_open()
        return self._source.push_row(_row, _new_data)

    # in-process producers call the same methods by CREPE's names
    append_stream_segment_data = exposed_append_stream_segment_data
    append_stream_row_data = exposed_append_stream_row_data

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<StreamService {self._display_path!r} {state}, {len(self._names)} channels "
                f"at {self._fs:g} Hz>")
