"""Segments on the wire: only types RPyC sends by value (bytes, str, numbers, tuples).

A segment crosses as ``(payload: bytes, dtype: str, shape: tuple)``; a read that failed
after a callback was registered crosses as ``("error", class_name, message)`` so that
:func:`decode_segment` raises it where the data was expected.
"""
from __future__ import annotations

import numpy as np

from . import errors

ERROR_TAG = "error"


def encode_segment(data: np.ndarray) -> tuple[bytes, str, tuple[int, ...]]:
    """Encode an array as ``(bytes, dtype name, shape)``."""
    data = np.ascontiguousarray(data)
    return data.tobytes(), data.dtype.str, tuple(int(n) for n in data.shape)


def encode_error(exc: BaseException) -> tuple[str, str, str]:
    """Encode an exception for delivery through a data callback."""
    return (ERROR_TAG, type(exc).__name__, str(exc))


def decode_segment(value: object) -> np.ndarray | bool:
    """Turn a wire value into a numpy array without copying the samples.

    Parameters
    ----------
    value : tuple or False
        What a ``get_*`` method returned or a callback received.

    Returns
    -------
    numpy.ndarray or False
        A read-only array (channels x samples, or samples for a row); ``False`` is
        passed through unchanged (no data: past the end, or not ready yet).

    Raises
    ------
    StreamError
        The value carries an error (a read that failed after a callback was registered);
        the mefstream exception class is rebuilt when it is one of ours.
    """
    if value is False or value is None:
        return False
    payload, dtype, shape = value
    if payload == ERROR_TAG:
        cls = getattr(errors, str(dtype), None)
        if not (isinstance(cls, type) and issubclass(cls, errors.StreamError)):
            cls = errors.ReaderError
        raise cls(str(shape))
    return np.frombuffer(payload, dtype=np.dtype(str(dtype))).reshape(tuple(shape))
