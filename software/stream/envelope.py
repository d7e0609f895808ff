"""Envelopes on every stream: the min and max of each bin, for overviews.

:class:`EnvelopeMixin` is a base of :class:`~software.stream.service.StreamService`. A file
answers from its min/max pyramid (:func:`~software.cache.envelope.file_envelope`: block
tables, tiles, samples), whose tiles ``build_envelope`` can fill in the background; a live
or replayed stream reduces the samples it still holds.

Wire form: ``(envelope, edges)``, both ``(bytes, dtype, shape)`` as segments are
(:func:`~software.decode_segment` turns each into an array): ``envelope`` is float64 of
shape ``(2, channels, bins)``, ``[0]`` the minima and ``[1]`` the maxima of the active
channels, NaN for a bin without any sample (a gap); ``edges`` (``bins + 1`` values,
int64 grid indices, or uUTC for :meth:`EnvelopeMixin.exposed_get_time_envelope`) bound
the bins: bin ``k`` is ``[edges[k], edges[k + 1])``.

Threads: the exposed methods run in the connection's serving thread and wait there for
the reads they need.
"""
from __future__ import annotations

import numpy as np

from ..cache.envelope import even_edges, file_envelope, reduce_bins
from ..cache.pyramid import pyramid_of
from ..errors import InvalidRangeError
from ..mef3.metadata import grid_length, grid_offset
from ..transport.wire import encode_segment
from ..validation import as_index, as_uutc
from .source import FileSource

__all__ = ["EnvelopeMixin"]


class EnvelopeMixin:
    """``get_envelope``, ``get_time_envelope`` and ``build_envelope`` of a view (see the
    module docstring).

    Uses the view's ``_source``, ``_names``, ``_group``, ``_options`` and ``_check_open``.
    """

    def exposed_get_envelope(self, start, stop, n_bins) -> tuple | bool:
        """Min and max of every active channel in ``n_bins`` bins of grid samples
        ``[start, stop)``.

        Exact: each value equals ``numpy.nanmin``/``nanmax`` of the samples
        ``get_stream_segment`` returns for that bin. The server chooses the inner edges
        near the even split: at the boundary of a MEF block (bins of a block or more:
        answered from the block tables, nothing decoded), of a 1024-, 256- or 64-sample tile
        (finer bins: from tiles filled as samples are decoded), or the even split itself
        (bins under 128 samples).

        Parameters
        ----------
        start, stop : int
            Grid indices, ``0 <= start < stop``; ``stop`` past the end (of a live stream:
            past the newest sample) is cut there.
        n_bins : int
            Number of bins (>= 1); fewer when the range holds fewer samples.

        Returns
        -------
        tuple or False
            ``(envelope, edges)`` in the wire form of the module docstring; False when a
            live stream has no sample from ``start`` on yet.

        Raises
        ------
        InvalidRangeError
            ``start`` is past the end of a file, ``stop <= start``, or the answer would
            exceed the per-request limit (the message names the most bins allowed).
        DroppedSamplesError
            A live stream no longer holds samples from ``start``.
        """
        self._check_open()
        start = as_index("start", start)
        stop = as_index("stop", stop, minimum=1)
        n_bins = as_index("n_bins", n_bins, minimum=1)
        if stop <= start:
            raise InvalidRangeError(f"stop={stop} must be after start={start}.")
        got = self._envelope(start, stop, n_bins, "start")
        if got is False:
            return False
        env, edges = got
        return encode_segment(env), encode_segment(edges)

    def exposed_get_time_envelope(self, start_uutc, stop_uutc, n_bins) -> tuple | bool:
        """:meth:`exposed_get_envelope` of the time window ``[start_uutc, stop_uutc)``.

        The window is placed on the grid as ``get_time_segment`` places it, then cut to
        the recording; the edges come back in microseconds (each the time stamp of the
        bin's first grid sample, as ``get_info``'s ``start_uutc + index / fs`` rounds it).

        Parameters
        ----------
        start_uutc, stop_uutc : int
            Microseconds since the epoch, ``start_uutc < stop_uutc``.
        n_bins : int
            Number of bins (>= 1).

        Returns
        -------
        tuple or False
            ``(envelope, edges_uutc)``; False as for :meth:`exposed_get_envelope`.

        Raises
        ------
        InvalidRangeError
            The window is empty or lies outside the recording, or the answer is too large.
        """
        self._check_open()
        t0 = as_uutc("start_uutc", start_uutc)
        t1 = as_uutc("stop_uutc", stop_uutc)
        n_bins = as_index("n_bins", n_bins, minimum=1)
        if t1 <= t0:
            raise InvalidRangeError(f"stop_uutc={t1} must be after start_uutc={t0}.")
        group = self._group
        first = grid_offset(t0, group.start_uutc, group.fs)
        last = first + grid_length(t0, t1, group.fs)
        start = max(first, 0)
        if last <= start or (not self._source.growing and start >= group.n_samples):
            raise InvalidRangeError(
                f"the window [{t0}, {t1}) holds no sample of the recording, which spans "
                f"[{group.start_uutc}, {group.end_uutc}); ask for a window inside it.")
        got = self._envelope(start, last, n_bins, "start_uutc")
        if got is False:
            return False
        env, edges = got
        uutc = group.start_uutc + np.round(edges * (1e6 / group.fs)).astype(np.int64)
        return encode_segment(env), encode_segment(uutc)

    def exposed_build_envelope(self, start=0, stop=None) -> int:
        """Decode ``[start, stop)`` of the active channels in the background, filling the
        file's min/max tiles, so that later envelopes at any resolution need no decoding.

        One stretch of a minute is read at a time (a client's read waits behind one at
        most); a build already running for the file stops first.

        Parameters
        ----------
        start, stop : int
            Grid indices; default the whole recording.

        Returns
        -------
        int
            Samples per channel the build covers (0 for a live stream: its envelopes come
            from the samples it holds).
        """
        self._check_open()
        source, group = self._source, self._group
        if not isinstance(source, FileSource):
            return 0
        n = group.n_samples
        start = as_index("start", start)
        stop = n if stop is None else min(as_index("stop", stop, minimum=1), n)
        if start >= stop:
            raise InvalidRangeError(f"start={start}, stop={stop} hold no sample of the "
                                    f"recording; give 0 <= start < stop (n_samples={n}).")
        pyramid_of(source.recording).build(self._names, group, start, stop,
                                           self._options.read_timeout)
        return stop - start

    def _envelope(self, start: int, stop: int, n_bins: int, start_name: str):
        """``(envelope, grid edges)`` of ``[start, stop)``, cut to the data; or False."""
        source, names, group = self._source, self._names, self._group
        n = group.n_samples
        if start >= n:
            if source.growing:
                return False
            raise InvalidRangeError(f"{start_name} lies past the end of the recording "
                                    f"(grid sample {start}, n_samples={n}); ask for a "
                                    f"range inside [0, {n}).")
        stop = min(stop, n)
        n_bins = min(n_bins, stop - start)
        limit = self._options.max_request_bytes
        most = max(1, (limit - 8) // (16 * len(names) + 8))
        if n_bins > most:
            raise InvalidRangeError(
                f"n_bins={n_bins} of {len(names)} channels makes an answer of "
                f"{(16 * len(names) + 8) * n_bins / 2**20:.1f} MiB, above the per-request "
                f"limit of {limit / 2**20:.4g} MiB; ask for at most {most} bins with these "
                f"channels.")
        timeout = self._options.read_timeout
        if isinstance(source, FileSource):
            return file_envelope(source.recording, names, group, start, stop, n_bins,
                                 timeout)
        edges = even_edges(start, stop, n_bins)
        data = source.gather(names, group, start, stop).result(timeout=timeout).assemble()
        return reduce_bins(data, edges - start), edges
