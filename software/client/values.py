"""Values at the client's edge: wire answers as writable arrays, arguments by copy."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..transport.wire import decode_segment, encode_segment

__all__ = ["as_array", "plain_argument", "push_argument"]


def as_array(value: Any) -> np.ndarray | bool:
    """A wire value as a writable array, or False.

    Parameters
    ----------
    value : tuple, numpy.ndarray or False
        What the server returned (or a callback received).

    Returns
    -------
    numpy.ndarray or False
        Over the payload the transport received (a ``bytearray``: no copy); copied only
        when that payload is read-only ``bytes`` (answers under 64 KiB through the
        socket, TLS).

    Raises
    ------
    StreamError
        The value is a wire error (see :func:`~software.decode_segment`).
    """
    data = decode_segment(value)
    if data is not False and not data.flags.writeable:
        data = data.copy()
    return data


def plain_argument(value: Any) -> Any:
    """Lists, tuples and numpy values as tuples and Python scalars, for one round trip.

    A list crosses RPyC as a proxy (the server would fetch every element with a round
    trip of its own); a tuple of plain values crosses by copy.

    Parameters
    ----------
    value : object
        An argument of a server method.

    Returns
    -------
    object
        Lists, tuples and arrays as tuples (nested ones too), numpy scalars and 0-d
        arrays as Python scalars; anything else unchanged (the server checks it), so no
        unbounded iterable is ever walked here.
    """
    kind = type(value)
    if kind is list or kind is tuple:
        return tuple(plain_argument(v) for v in value)
    if isinstance(value, np.ndarray):
        if value.ndim == 0:  # np.array(5): a scalar, not a sequence
            return value.item()
        return tuple(plain_argument(v) for v in value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def push_argument(value: Any) -> Any:
    """Samples to push as they best cross: a numpy array in the wire form
    ``(bytes, dtype, shape)`` (one message, whatever its size), anything else as
    :func:`plain_argument` makes it."""
    if isinstance(value, np.ndarray):
        return encode_segment(value)
    return plain_argument(value)
