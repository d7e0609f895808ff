"""Answers over the server's per-request limit, fetched in pieces and put back together.

The server refuses a request whose answer would exceed its ``--max-request-mb``
(``get_limits()['max_request_bytes']``) and names the largest range allowed; plain RPyC
clients see that refusal. A :class:`~software.RemoteStream` asks again in pieces of at
most the limit, each copied into one preallocated array as it arrives::

    get_stream_segment(range, start) --refused: too large--> get_info (channels, n_samples)
        --> cut to the file --> out = np.empty((channels, samples))
        --> get_stream_segment(piece, start + offset) --> out[:, offset:offset + piece] ...

The result is what one call would return, sample for sample (pieces are slices of the
same grid), writable. Only a request refused for its size is asked again, so other calls
cost nothing more. Not in pieces: live streams (a request is bounded by their history),
and answers larger than :data:`MAX_ASSEMBLED_BYTES` (half the machine's memory): those are
refused on the client, naming the piece size to iterate with. A call with a callback gets
its answer at once (the callback is then not called).

Envelopes (``get_envelope``) decode to ``(envelope, edges)`` arrays here too.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import errors
from ..mef3.metadata import grid_length, grid_offset
from ..validation import MAX_INDEX
from .values import as_array, plain_argument

__all__ = ["MAX_ASSEMBLED_BYTES", "envelope", "row_segment", "stream_segment",
           "time_envelope", "time_segment"]


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX: assume 8 GiB
        return 8 * 2**30


#: Largest answer a RemoteStream puts together from pieces (half the physical memory).
MAX_ASSEMBLED_BYTES = _memory_bytes() // 2


def _plain_int(value: Any, minimum: int) -> int | None:
    """``value`` as an int within ``[minimum, MAX_INDEX]``, else None (not ours to fix)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    value = int(value)
    return value if minimum <= value <= MAX_INDEX else None


def _limit(stream) -> int | None:
    limits = getattr(getattr(stream, "connection", None), "limits", None) or {}
    value = limits.get("max_request_bytes")
    return int(value) if value else None


def _layout(stream) -> dict | None:
    """The view's info, or None for a growing stream (not assembled from pieces)."""
    info = stream.get_info()
    return None if info.get("growing") else info


def _check_total(refusal: BaseException, rows: int, samples: int, per: int,
                 fs: float) -> None:
    total = rows * samples * 8
    if total > MAX_ASSEMBLED_BYTES:
        raise errors.InvalidRangeError(
            f"the request makes an answer of {total / 2**30:.1f} GiB, more than this client "
            f"puts together from pieces ({MAX_ASSEMBLED_BYTES / 2**30:.1f} GiB, half its "
            f"memory); ask for at most {per} samples ({per / fs:g} s) at a time, e.g. with "
            f"StreamSegmentIterator.") from refusal


def _fill(out: np.ndarray, ask, start: int, length: int, per: int) -> None:
    """``out[..., k] = sample start + k`` for ``k < length``, ``per`` samples a call."""
    for offset in range(0, length, per):
        count = min(per, length - offset)
        piece = as_array(ask(count, start + offset))
        if piece is False or piece.shape[-1] != count:
            raise errors.ReaderError(
                f"a piece of samples [{start + offset}, {start + offset + count}) came back "
                f"{'empty' if piece is False else f'with {piece.shape[-1]} samples'}; the "
                f"recording changed while it was read in pieces. Ask again.")
        out[..., offset:offset + count] = piece


def stream_segment(stream, refusal: BaseException, length: Any, start: Any
                   ) -> np.ndarray | bool:
    """``get_stream_segment(length, start)`` of ``stream`` in pieces, after ``refusal``.

    Raises
    ------
    InvalidRangeError
        ``refusal`` itself when it was not about the answer's size (or the stream is
        live), or the answer is larger than :data:`MAX_ASSEMBLED_BYTES`.
    """
    length, start = _plain_int(length, 1), _plain_int(start, 0)
    limit = _limit(stream)
    info = _layout(stream) if None not in (length, start, limit) else None
    if info is None:
        raise refusal
    rows, n = len(info["channels"]), int(info["n_samples"])
    if rows * length * 8 <= limit:
        raise refusal                     # refused for another reason
    if start >= n:
        return False
    length = min(length, n - start)
    per = max(1, limit // (8 * rows))
    _check_total(refusal, rows, length, per, float(info["fs"]))
    out = np.empty((rows, length))
    method = stream._method("get_stream_segment")
    _fill(out, lambda k, at: method(k, at), start, length, per)
    return out


def row_segment(stream, refusal: BaseException, row: Any, length: Any, start: Any
                ) -> np.ndarray | bool:
    """``get_row_segment(row, length, start)`` in pieces, after ``refusal`` (as
    :func:`stream_segment`)."""
    length, start = _plain_int(length, 1), _plain_int(start, 0)
    limit = _limit(stream)
    info = _layout(stream) if None not in (length, start, limit) and length * 8 > limit \
        else None
    if info is None:
        raise refusal
    n = int(info["n_samples"])
    if start >= n:
        return False
    length = min(length, n - start)
    per = max(1, limit // 8)
    _check_total(refusal, 1, length, per, float(info["fs"]))
    out = np.empty(length)
    method, row = stream._method("get_row_segment"), plain_argument(row)
    _fill(out, lambda k, at: method(row, k, at), start, length, per)
    return out


def time_segment(stream, refusal: BaseException, start_uutc: Any, stop_uutc: Any
                 ) -> np.ndarray | bool:
    """``get_time_segment(start_uutc, stop_uutc)`` in pieces, after ``refusal``: the
    samples of the recording, NaN for the rest of the window, as the server pads them."""
    t0, t1 = _plain_int(start_uutc, -MAX_INDEX), _plain_int(stop_uutc, -MAX_INDEX)
    limit = _limit(stream)
    info = _layout(stream) if None not in (t0, t1, limit) and t1 > t0 else None
    if info is None:
        raise refusal
    rows, n, fs = len(info["channels"]), int(info["n_samples"]), float(info["fs"])
    first = grid_offset(t0, int(info["start_uutc"]), fs)
    count = grid_length(t0, t1, fs)
    if rows * count * 8 <= limit:
        raise refusal
    lo, hi = max(first, 0), min(first + count, n)
    if hi <= lo:
        return False
    per = max(1, limit // (8 * rows))
    _check_total(refusal, rows, count, per, fs)
    out = np.full((rows, count), np.nan)
    method = stream._method("get_stream_segment")
    _fill(out[:, lo - first:hi - first], lambda k, at: method(k, at), lo, hi - lo, per)
    return out


# ---- envelopes ------------------------------------------------------------------------

def _decode_envelope(value) -> tuple[np.ndarray, np.ndarray] | bool:
    if value is False or value is None:
        return False
    return as_array(value[0]), as_array(value[1])


def _envelope_pieces(stream, refusal: BaseException, info: dict | None, start: int,
                     stop: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Too many bins for one answer: runs of bins over consecutive stretches of the grid
    (``[start, stop)`` already cut to the recording)."""
    limit = _limit(stream)
    if info is None or limit is None:
        raise refusal
    rows = len(info["channels"])
    n_bins = min(n_bins, stop - start)
    per = max(1, (limit - 8) // (16 * rows + 8))
    if per >= n_bins:
        raise refusal
    ask = stream._method("get_envelope")
    parts, edges = [], []
    for k0 in range(0, n_bins, per):
        k1 = min(n_bins, k0 + per)
        got = _decode_envelope(ask(start + (stop - start) * k0 // n_bins,
                                   start + (stop - start) * k1 // n_bins, k1 - k0))
        parts.append(got[0])
        edges.append(got[1] if not edges else got[1][1:])
    return np.concatenate(parts, axis=2), np.concatenate(edges)


def envelope(stream, start: Any, stop: Any, n_bins: Any) -> tuple[np.ndarray, np.ndarray] | bool:
    """``get_envelope`` as arrays ``(envelope (2, channels, bins), edges (bins + 1,))``;
    an answer over the limit is asked for in runs of bins."""
    args = (plain_argument(start), plain_argument(stop), plain_argument(n_bins))
    try:
        return _decode_envelope(stream._method("get_envelope")(*args))
    except errors.InvalidRangeError as refusal:
        a, b, k = _plain_int(args[0], 0), _plain_int(args[1], 1), _plain_int(args[2], 1)
        if None in (a, b, k) or b <= a or _limit(stream) is None:
            raise
        info = _layout(stream)
        if info is None or a >= int(info["n_samples"]):
            raise
        return _envelope_pieces(stream, refusal, info, a, min(b, int(info["n_samples"])), k)


def time_envelope(stream, start_uutc: Any, stop_uutc: Any, n_bins: Any
                  ) -> tuple[np.ndarray, np.ndarray] | bool:
    """``get_time_envelope`` as arrays (edges in microseconds), in runs of bins when the
    answer is over the limit."""
    args = tuple(plain_argument(v) for v in (start_uutc, stop_uutc, n_bins))
    try:
        return _decode_envelope(stream._method("get_time_envelope")(*args))
    except errors.InvalidRangeError as refusal:
        t0, t1 = _plain_int(args[0], -MAX_INDEX), _plain_int(args[1], -MAX_INDEX)
        k = _plain_int(args[2], 1)
        if None in (t0, t1, k) or t1 <= t0 or _limit(stream) is None:
            raise
        info = _layout(stream)
        if info is None:
            raise
        origin, fs, n = int(info["start_uutc"]), float(info["fs"]), int(info["n_samples"])
        first = grid_offset(t0, origin, fs)
        lo, hi = max(first, 0), min(first + grid_length(t0, t1, fs), n)
        if hi <= lo:
            raise
        env, edges = _envelope_pieces(stream, refusal, info, lo, hi, k)
        return env, origin + np.round(edges * (1e6 / fs)).astype(np.int64)
