"""Same-host fast path: segment answers handed over in a shared-memory area per connection.

This module holds the protocol, the area's layout and the client end; the server end is
:mod:`software.stream.answers`.

::

    client (get_connection)                      server (the connection's root service)
    open_shared_memory(nbytes) ---------------->  create /dev/shm/mefstream-<32 hex>, 0600,
                                                  flock-ed, random token in its header
    open + mmap the file, read the token,
    unlink it; attach_shared_memory(token) --->  token matches: unlink, answers go through
                                                  the area from now on
    get_*(...) / callbacks  <------------------  alloc region, copy samples in,
                                                  issued[slot] = seq; sends by value
                                                  ("mefstream-shm", dtype, shape, slot,
                                                   seq, offset, nbytes)
    value_hook: copy region -> bytearray,
    released[slot] = seq -> (bytearray, dtype, shape)
                                                  next alloc: reclaims released regions

Once attached the file has no name: the kernel frees it when the last mapping goes, so
nothing is left behind when either side dies, even by SIGKILL. A file still named (client
gone between the two calls) is removed on disconnect; a server killed in that window
leaves a file whose lock died with it, removed by the next server's first offer. Any
failure (another host, another user, no ``/dev/shm``, a stock server, an area too small
for an answer) means the bytes go through the socket as before.

Each slot word has one writer (``issued``: server, ``released``: client), so no atomic
operations are needed; the RPyC message (a syscall) orders the server's copy before the
client's read. The client copies an answer out at once instead of handing out views of
the area: values stay ``(payload, dtype, shape)``, the payload a ``bytearray`` so that
:func:`~software.decode_segment` gives a writable array without another copy, and an
answer nobody decodes cannot hold its region forever (8 MiB: 0.6 ms).
"""
from __future__ import annotations

import logging
import mmap
import os
import threading
from typing import Any

import numpy as np

from ..shm.layout import (
    DATA_OFFSET,
    MAGIC,
    NAME_RE,
    SHM_DIR,
    SLOTS,
    TOKEN_BYTES,
    slot_views,
)
from ..transport.connection import FastConnection
from ..transport.wire import ERROR_TAG, SHARED_TAG

__all__ = ["ClientArea", "negotiate"]

logger = logging.getLogger(__name__)

# ---- the client end -------------------------------------------------------------------
def _is_answer(value: tuple) -> bool:
    """Whether a 7-tuple is a shared-memory answer: the tag, then exactly its types."""
    tag, dtype, shape, slot, seq, offset, nbytes = value
    return (type(tag) is str and tag == SHARED_TAG and type(dtype) is str
            and type(shape) is tuple and type(slot) is int and type(seq) is int
            and type(offset) is int and type(nbytes) is int)


class ClientArea:
    """The client's side of its connection's area; reads answers out as they arrive.

    Parameters
    ----------
    mm : mmap.mmap
        The mapped area (its file already unlinked).
    name : str
        The file name it had.

    Notes
    -----
    :meth:`adopt` is the connection's ``value_hook``; it runs in whichever thread
    receives a message (a serving thread, or a thread waiting for its reply).
    """

    def __init__(self, mm: mmap.mmap, name: str = "") -> None:
        self.name = name
        slots, data_offset, capacity = (int(v) for v in np.frombuffer(
            mm, dtype=np.uint64, count=3, offset=24))
        if mm[:8] != MAGIC or slots != SLOTS or data_offset != DATA_OFFSET \
                or len(mm) < data_offset + capacity:
            raise ValueError("not a mefstream shared-memory area of this version")
        self.capacity = capacity
        self.token = bytes(mm[8:8 + TOKEN_BYTES])
        self._mm = mm
        self._issued, self._released = slot_views(mm)
        self._data = memoryview(mm)[data_offset:data_offset + capacity]
        self._lock = threading.Lock()
        self._closed = False
        self.adopted = 0

    def adopt(self, value: Any) -> Any:
        """Replace a shared-memory answer by the same answer in a ``bytearray`` of its own.

        An answer can only be a whole reply ``(SHARED_TAG, dtype, shape, slot, seq,
        offset, nbytes)`` or the only argument of a callback (the tuple ``(answer,)``);
        nothing else is looked into, and a tuple that merely starts with the tag but is
        not made of exactly those types (a channel list, say) is handed on unchanged.

        Parameters
        ----------
        value : object
            A value the connection received by copy.

        Returns
        -------
        object
            ``(bytearray, dtype, shape)`` for an answer (``(("error", ...),)`` style error
            tuple if it could not be read), ``(that,)`` for a callback's arguments,
            otherwise ``value`` itself.
        """
        if type(value) is not tuple:
            return value
        n = len(value)
        if n == 7:
            return self._take(value) if _is_answer(value) else value
        if n == 1:
            inner = value[0]
            if type(inner) is tuple and len(inner) == 7 and _is_answer(inner):
                return (self._take(inner),)
        return value

    def _take(self, value: tuple) -> tuple:
        _, dtype, shape, slot, seq, offset, nbytes = value
        with self._lock:
            ok = (not self._closed and 0 <= slot < SLOTS and offset >= 0 and nbytes >= 0
                  and offset + nbytes <= self.capacity and int(self._issued[slot]) == seq)
            if ok:  # the one copy: into memory of its own, writable for numpy
                payload = bytearray(self._data[offset:offset + nbytes])
                self._released[slot] = seq
        if not ok:
            logger.error("invalid shared-memory answer %r", value)
            return (ERROR_TAG, "ReaderError", "an answer in shared memory could not be read "
                    "(connection closed or protocol error); ask again.")
        self.adopted += 1
        return payload, dtype, shape

    def close(self) -> None:
        """Unmap the area (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._data.release()
            self._issued = self._released = None
        try:
            self._mm.close()
        except BufferError:  # a view still exported somewhere: freed with it
            pass

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ClientArea {state}, {self.capacity} bytes, {self.adopted} answers read>"


def negotiate(conn: Any, nbytes: int, directory: str = SHM_DIR) -> ClientArea | None:
    """Set up shared memory on a connection to a mefstream server, if both share a host.

    Parameters
    ----------
    conn : FastConnection
        A connection from :func:`~software.transport.connection.fast_connect`, not serving yet.
    nbytes : int
        Area size to ask for.
    directory : str
        Where the server's areas are (the same path on both sides).

    Returns
    -------
    ClientArea or None
        The area (also installed as ``conn.value_hook``), or None: answers keep coming
        through the socket (another host or user, an older server, no ``/dev/shm``).
    """
    if not isinstance(conn, FastConnection) or conn.value_hook is not None:
        return None
    try:
        offer = conn.root.open_shared_memory(int(nbytes))
    except (EOFError, ConnectionError):
        raise
    except Exception as exc:  # an older or stock server: AttributeError
        logger.debug("the server offers no shared memory (%r)", exc)
        return None
    if not offer:
        return None
    area = mm = None
    try:
        name = str(offer[0])
        if not NAME_RE.match(name):
            raise ValueError(f"unexpected area name {name!r}")
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            mm = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        try:
            os.unlink(path)  # from now on the kernel frees it with the last mapping
        except OSError:
            pass  # the server removes it too
        area = ClientArea(mm, name)
    except (OSError, ValueError) as exc:
        logger.debug("shared memory not usable (%s): using the socket", exc)
        if mm is not None:
            mm.close()
    conn.value_hook = area.adopt if area is not None else None
    if conn.root.attach_shared_memory(area.token if area is not None else False):
        logger.debug("shared memory attached: %r", area)
        return area
    conn.value_hook = None
    if area is not None:
        area.close()
    return None
