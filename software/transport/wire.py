"""Segments on the wire: only types RPyC sends by value (bytes, str, numbers, tuples).

A segment crosses in one of two forms, chosen per connection (the root's
``set_answer_form``):

* **plain** (the default of a plain ``rpyc.connect`` connection): CREPE's shape, a tuple of
  per-channel tuples of Python numbers (a row: a tuple of numbers), made by
  :func:`encode_plain`;
* **packed** (what :func:`~software.get_connection` asks for): ``(payload: bytes, dtype:
  str, shape: tuple)``, made by :func:`encode_segment` (a ``get_connection`` client
  receives the payload as a writable ``bytearray``). On a connection that negotiated
  same-host shared memory the server sends ``("mefstream-shm", dtype, shape, slot, seq,
  offset, nbytes)`` instead, and the client's connection turns it back into
  ``(bytearray, dtype, shape)`` as it arrives (see :mod:`software.client.shared_memory`).

A read that failed after a callback was registered crosses as ``("error", class_name,
message)`` in either form, so that :func:`decode_segment` raises it where the data was
expected. :func:`decode_segment` takes every form.
"""
from __future__ import annotations

import numpy as np
from rpyc.core import brine

from .. import errors
from .framing import Brined, Buffer

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


_TUPLE_TAGS = (brine.TAG_EMPTY_TUPLE, brine.TAG_TUP1, brine.TAG_TUP2, brine.TAG_TUP3,
               brine.TAG_TUP4)
#: One float as brine encodes it: its tag, then the value big-endian.
_BRINE_FLOAT = np.dtype([("tag", "u1"), ("value", ">f8")])


def _tuple_head(n: int) -> bytes:
    """Brine's header of a tuple of ``n`` items."""
    if n < len(_TUPLE_TAGS):
        return _TUPLE_TAGS[n]
    if n < 256:
        return brine.TAG_TUP_L1 + brine.I1.pack(n)
    return brine.TAG_TUP_L4 + brine.I4.pack(n)


def encode_plain(data: np.ndarray, *, prebuilt: bool = True) -> tuple | Brined:
    """Encode an array in the plain form: nested tuples of Python numbers (CREPE's shape).

    Parameters
    ----------
    data : numpy.ndarray
        Channels x samples, or samples (a row).
    prebuilt : bool
        Floats only: return the brine encoding made at once by numpy (a
        :class:`~software.transport.framing.Brined`, which a
        :class:`~software.transport.connection.FastConnection` sends as the tuples it
        encodes) instead of the tuples themselves, which brine would walk item by item.

    Returns
    -------
    tuple or Brined
        What the peer receives either way: ``len(seg)`` channels of ``len(seg[0])``
        samples, ``seg[c][k]`` a Python float (NaN in gaps) or, for an integer stream,
        a Python int; for a row, a tuple of numbers.
    """
    data = np.asarray(data)
    if data.ndim not in (1, 2):
        raise ValueError(f"a plain answer is 1-D or 2-D; this one has shape {data.shape}.")
    if not (prebuilt and data.dtype.kind == "f" and data.size):
        values = data.tolist()
        return tuple(map(tuple, values)) if data.ndim == 2 else tuple(values)
    items = np.empty(data.shape, dtype=_BRINE_FLOAT)
    items["tag"] = brine.TAG_FLOAT[0]
    items["value"] = data
    if data.ndim == 1:
        return Brined(_tuple_head(data.shape[0]) + items.tobytes())
    rows, n = data.shape
    head = np.frombuffer(_tuple_head(n), dtype=np.uint8)
    out = np.empty((rows, head.size + items.itemsize * n), dtype=np.uint8)
    out[:, :head.size] = head
    out[:, head.size:] = items.view(np.uint8).reshape(rows, -1)
    return Brined(_tuple_head(rows) + out.tobytes())


def encode_error(exc: BaseException) -> tuple[str, str, str]:
    """Encode an exception for delivery through a data callback."""
    return (ERROR_TAG, type(exc).__name__, str(exc))


def decode_segment(value: object) -> np.ndarray | bool:
    """Turn a wire value into a numpy array without copying the samples.

    Parameters
    ----------
    value : tuple, numpy.ndarray, exception or False
        What a ``get_*`` method returned or a callback received: the plain form (nested
        tuples of numbers, what a plain ``rpyc.connect`` connection gets by default), the
        packed form ``(payload, dtype, shape)``, or what a :class:`~software.RemoteStream`
        hands out (an array, or for a failed read the rebuilt exception), so code written
        for any of them keeps working.

    Returns
    -------
    numpy.ndarray or False
        Channels x samples, or samples for a row; an array is returned unchanged.
        From the packed form: writable when the payload is a ``bytearray`` (answers of
        ``get_connection`` connections), read-only over ``bytes`` (``np.array(seg)`` for
        a writable copy), without copying the samples. From the plain form: a new array
        (float64; int64 for an integer stream). ``False`` (or None) is passed through
        unchanged (no data: past the end, or not ready yet).

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
    if isinstance(value, (tuple, list)) and (
            not value or not isinstance(value[0], (bytes, bytearray, memoryview, str))):
        return np.array(value)  # the plain form: numbers, or tuples of numbers
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
