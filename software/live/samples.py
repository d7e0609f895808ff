"""Pushed samples checked and cast to a stream's dtype before anything is appended.

Accepted forms of ``data`` (what ``append_stream_segment_data`` and
``append_stream_row_data`` take):

- a numpy array or a number / sequence of numbers (in-process, or tuples over RPyC);
- the wire form ``(payload: bytes, dtype: str, shape: tuple)``, as
  :func:`~software.transport.wire.encode_segment` makes it: the fast way to push an array
  over RPyC (``svc.append_stream_segment_data(software.encode_segment(chunk))``).

An RPyC proxy of a remote array or list is refused: reading it element by element would
take one round trip per sample.
"""
from __future__ import annotations

import math

import numpy as np
from rpyc.core.netref import BaseNetref

from ..errors import InvalidArgumentError, InvalidTypeError, UnknownChannelError

__all__ = ["as_block", "as_row", "check_ahead", "check_level", "row_index", "wire_array"]

#: Largest number of samples one push may carry (per channel x channels), a sanity bound.
MAX_PUSH_VALUES = 64 * 2**20


def wire_array(value: tuple) -> np.ndarray:
    """The array of a ``(bytes, dtype, shape)`` wire tuple (no copy), checked."""
    payload, dtype, shape = value
    try:
        kind = np.dtype(str(dtype))
    except TypeError as exc:
        raise InvalidTypeError(f"data: dtype {dtype!r} of the (bytes, dtype, shape) form is "
                               f"not a numpy type name such as '<f8' or 'int16'.") from exc
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)
            and len(shape) <= 2):
        raise InvalidArgumentError(f"data: shape {shape!r} of the (bytes, dtype, shape) form "
                                   f"must be a tuple of at most 2 non-negative ints.")
    if kind.kind not in "biuf":
        raise InvalidTypeError(f"data: dtype {kind} cannot be cast to samples; push numbers "
                               f"(int or float arrays).")
    count = math.prod(shape)
    if count > MAX_PUSH_VALUES or len(payload) != count * kind.itemsize:
        raise InvalidArgumentError(f"data: {len(payload)} bytes do not hold shape {shape} of "
                                   f"{kind} ({count * kind.itemsize} bytes), or exceed "
                                   f"{MAX_PUSH_VALUES} values.")
    return np.frombuffer(payload, dtype=kind).reshape(shape)


def _as_array(data: object) -> np.ndarray:
    if issubclass(type(data), BaseNetref):   # checked first: isinstance asks the proxy
        raise InvalidTypeError(
            "data: a proxy of a remote object (a numpy array or list on the pushing side) "
            "would be read one element per round trip; push "
            "software.encode_segment(array) (the (bytes, dtype, shape) form) or a tuple.")
    if isinstance(data, np.ndarray):
        array = data
    elif (isinstance(data, tuple) and len(data) == 3 and isinstance(data[0], (bytes, bytearray,
                                                                              memoryview))):
        array = wire_array(data)
    else:
        try:
            array = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise InvalidTypeError(f"data: {type(data).__name__} is not an array of numbers "
                                   f"({exc}).") from exc
    if array.dtype.kind not in "biuf":
        raise InvalidTypeError(f"data: samples of dtype {array.dtype} cannot be cast; push "
                               f"numbers (int or float).")
    if array.size > MAX_PUSH_VALUES:
        raise InvalidArgumentError(f"data: {array.size} values in one push exceed "
                                   f"{MAX_PUSH_VALUES}; push smaller chunks.")
    return array


def _cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` as ``dtype``, refusing values the type cannot hold."""
    if array.dtype == dtype:
        return array
    if array.dtype.kind == "b":
        return array.astype(dtype)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):   # checked just below
            cast = array.astype(dtype)
        if array.dtype.kind == "f" and array.dtype.itemsize > dtype.itemsize:
            over = np.isinf(cast) & np.isfinite(array)   # finite values beyond the type
            if over.any():
                at = int(np.argmax(over.ravel()))
                limit = float(np.finfo(dtype).max)
                raise InvalidArgumentError(
                    f"data: {array.ravel()[at]!r} (flat index {at}) does not fit a {dtype} "
                    f"stream (at most {limit:.6g} in magnitude; it would become infinity). "
                    f"Scale the values, or serve a float64 stream. Nothing was appended.")
        return cast
    # an integer stream: every value must be a whole number the type holds
    info = np.iinfo(dtype)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            raise InvalidArgumentError(f"data: NaN or infinity in a {dtype} stream (first at "
                                       f"flat index {int(np.argmax(bad.ravel()))}); an "
                                       f"integer stream cannot hold it. Nothing was appended.")
        if (array != np.round(array)).any():
            raise InvalidArgumentError(f"data: fractional values in a {dtype} stream; round "
                                       f"them (or serve a float stream). Nothing was appended.")
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise InvalidArgumentError(f"data: values from {array.min()} to {array.max()} do not fit "
                                   f"{dtype} ({info.min}..{info.max}). Nothing was appended.")
    return array.astype(dtype)


def as_block(data: object, n_channels: int, dtype: np.dtype) -> np.ndarray:
    """Samples of every channel, ``n_channels x n``, cast to ``dtype``.

    ``data`` is ``n_channels x n``, or one value per channel (``n_channels`` values); a
    one-channel stream also takes ``n`` values.

    Raises
    ------
    InvalidArgumentError
        Wrong shape, or values the stream's dtype cannot hold (NaN in an integer stream).
    InvalidTypeError
        Not numbers, or a proxy of a remote array.
    """
    if type(data) is np.ndarray and data.dtype == dtype and data.ndim == 2 \
            and data.shape[0] == n_channels and data.size <= MAX_PUSH_VALUES:
        return data                          # the common case, checked in a few steps
    array = _as_array(data)
    if array.ndim == 0 and n_channels == 1:
        array = array.reshape(1, 1)
    elif array.ndim == 1 and array.shape[0] == n_channels:
        array = array.reshape(n_channels, 1)
    elif array.ndim == 1 and n_channels == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[0] != n_channels:
        raise InvalidArgumentError(f"data: shape {array.shape} does not fit a stream of "
                                   f"{n_channels} channels; push channels x n samples "
                                   f"({n_channels} x n) or one value per channel.")
    return _cast(array, dtype)


def as_row(data: object, dtype: np.dtype) -> np.ndarray:
    """Samples of one channel (``n`` values, or one), cast to ``dtype``."""
    array = _as_array(data)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise InvalidArgumentError(f"data: shape {array.shape} is not one channel's samples; "
                                   f"push a 1-D array (or one value) per row.")
    return _cast(array, dtype)


# ---- where a push may go (the stream's lock held, or the producer lease) -------------

def check_level(ring, name: str) -> None:
    """Refuse a push of every channel while rows pushed one at a time are not level."""
    if not ring.level:
        raise InvalidArgumentError(
            f"rows of {name!r} were pushed one at a time and are not level "
            f"(counts {ring.counts.min()}..{ring.counts.max()}); push the lagging "
            f"rows with append_stream_row_data first.")


def check_ahead(ring, row: int, n: int, label: object, name: str) -> None:
    """Refuse ``n`` samples of one row that would run more than the slack ahead."""
    ahead = int(ring.counts[row]) + n - ring.head
    if ahead > ring.slack:
        raise InvalidArgumentError(
            f"row {label!r} of {name!r} would be {ahead} samples ahead of the "
            f"slowest row (at most {ring.slack} allowed); push the other rows too.")


def row_index(rows: dict[str, int], row: object, name: str) -> int:
    """The ring row of ``row`` (an index, or a channel name of ``rows``)."""
    if isinstance(row, str):
        if row not in rows:
            raise UnknownChannelError(f"_row={row!r} is not a channel of {name!r}; "
                                      f"channels: {', '.join(rows)}.")
        return rows[row]
    if isinstance(row, (bool, np.bool_)) or not isinstance(row, (int, np.integer)):
        raise UnknownChannelError(f"_row={row!r} must be a row index or a channel name.")
    if not 0 <= int(row) < len(rows):
        raise UnknownChannelError(f"_row={row} is outside 0..{len(rows) - 1} of "
                                  f"{name!r}.")
    return int(row)
