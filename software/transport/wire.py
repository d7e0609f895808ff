"""Segments on the wire: only types RPyC sends by value (bytes, str, numbers, tuples).

A segment crosses as ``(payload: bytes, dtype: str, shape: tuple)`` (a ``get_connection``
client receives the payload as a writable ``bytearray``); a read that failed
after a callback was registered crosses as ``("error", class_name, message)`` so that
:func:`decode_segment` raises it where the data was expected. On a connection that
negotiated same-host shared memory the server sends ``("mefstream-shm", dtype, shape,
slot, seq, offset, nbytes)`` instead, and the client's connection turns it back into
``(bytearray, dtype, shape)`` as it arrives (see :mod:`software.client.shared_memory`).
"""
from __future__ import annotations

import numpy as np

from .. import errors
from .framing import Buffer

ERROR_TAG = "error"
#: First item of a segment that lies in a shared-memory area.
SHARED_TAG = "mefstream-shm"


def encode_segment(data: np.ndarray, *, copy: bool = True) -> tuple:
    """Encode an array as ``(bytes, dtype name, shape)``.

    Parameters
    ----------
    data : numpy.ndarray
        The samples.
    copy : bool
        False: the payload is a :class:`~software.transport.framing.Buffer` over the array's
        memory instead of a bytes copy. Only a
        :class:`~software.transport.connection.FastConnection` can send it (the peer still receives
        bytes), and ``data`` must not change afterwards.
    """
    data = np.ascontiguousarray(data)
    shape = tuple(int(n) for n in data.shape)
    if copy or data.nbytes == 0:
        return data.tobytes(), data.dtype.str, shape
    return Buffer(data), data.dtype.str, shape


def encode_error(exc: BaseException) -> tuple[str, str, str]:
    """Encode an exception for delivery through a data callback."""
    return (ERROR_TAG, type(exc).__name__, str(exc))


def decode_segment(value: object) -> np.ndarray | bool:
    """Turn a wire value into a numpy array without copying the samples.

    Parameters
    ----------
    value : tuple, numpy.ndarray, exception or False
        What a ``get_*`` method returned or a callback received: the wire form
        ``(payload, dtype, shape)`` (plain ``rpyc.connect``), or what a
        :class:`~software.RemoteStream` hands out (an array, or for a failed read the
        rebuilt exception), so code written for either keeps working.

    Returns
    -------
    numpy.ndarray or False
        Channels x samples, or samples for a row; an array is returned unchanged.
        Writable when the payload is a ``bytearray`` (answers of ``get_connection``
        connections), read-only over ``bytes`` (``np.array(seg)`` for a writable copy).
        ``False`` (or None) is passed through unchanged (no data: past the end, or not
        ready yet).

    Raises
    ------
    StreamError
        The value carries an error (a read that failed after a callback was registered);
        the mefstream exception class is rebuilt when it is one of ours. An exception
        object is raised as it is.
    """
    if value is False or value is None:
        return False
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, BaseException):
        raise value
    if value[0] == SHARED_TAG:
        raise errors.StreamError(
            "this segment lies in a shared-memory area and was not taken out of it by its "
            "connection; connect with software.get_connection (which reads such answers "
            "as they arrive) or pass shared_memory=False.")
    payload, dtype, shape = value
    if isinstance(payload, str) and payload == ERROR_TAG:
        raise decode_error(dtype, shape)
    return np.frombuffer(payload, dtype=np.dtype(str(dtype))).reshape(tuple(shape))


def decode_error(name: object, message: object) -> errors.StreamError:
    """The exception of a wire error ``("error", name, message)``, not raised.

    Parameters
    ----------
    name : str
        Class name; a mefstream error class is rebuilt, anything else is a
        :class:`~software.ReaderError`.
    message : str
        Its message.

    Returns
    -------
    StreamError
    """
    cls = getattr(errors, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.StreamError)):
        cls = errors.ReaderError
    return cls(str(message))
