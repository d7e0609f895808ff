"""The server end of the same-host shared memory: areas and each connection's encoder.

A :class:`SegmentEncoder` per connection offers an area, switches to it once the client
proves it mapped it, and then copies each answer into a region of it (first fit, under a
lock; the copy outside it), falling back to the socket when nothing fits. The protocol,
the layout and the client end are in :mod:`software.shared_memory`.
"""
from __future__ import annotations

import hmac
import logging
import math
import mmap
import os
import secrets
import threading
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no shared memory, the socket serves
    fcntl = None

from ..errors import InvalidTypeError
from ..shm.arena import (
    COMMIT_STEP,
    commit_pages,
    first_fit,
    remove_quietly,
    sweep_stale,
)
from ..shm.layout import (
    DATA_OFFSET,
    MAGIC,
    PREFIX,
    SHM_DIR,
    SLOTS,
    TOKEN_BYTES,
    slot_views,
)
from ..transport.wire import SHARED_TAG, encode_segment
from ..validation import as_index

__all__ = ["SegmentEncoder", "ServerArea", "sweep_stale"]

logger = logging.getLogger(__name__)

#: Area sizes a server grants (larger requests are cut, smaller raised).
MIN_AREA, MAX_AREA = 2**20, 2**30
_ALIGN = 64                   # each region starts on a cache line


class ServerArea:
    """The server's side of one connection's area: a first-fit allocator over its regions.

    Parameters
    ----------
    capacity : int
        Bytes for samples.
    directory : str
        Where the file is created.

    Notes
    -----
    :meth:`put` runs in the connection's serving thread and in its views' callback
    threads; allocation is under a lock, the copy is not.
    """

    def __init__(self, capacity: int, directory: str = SHM_DIR) -> None:
        self.name = PREFIX + secrets.token_hex(16)
        self.path = os.path.join(directory, self.name)
        self.capacity = int(capacity)
        self.token = secrets.token_bytes(TOKEN_BYTES)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                           0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(self._fd, DATA_OFFSET + self.capacity)
            os.posix_fallocate(self._fd, 0, DATA_OFFSET)
            self._mm = mmap.mmap(self._fd, DATA_OFFSET + self.capacity)
        except BaseException:
            self._unlink()
            os.close(self._fd)
            raise
        header = np.frombuffer(self._mm, dtype=np.uint64, count=3, offset=24)
        header[:] = (SLOTS, DATA_OFFSET, self.capacity)
        self._mm[8:8 + TOKEN_BYTES] = self.token
        self._mm[:8] = MAGIC                       # last: the header is complete
        self._issued, self._released = slot_views(self._mm)
        self._lock = threading.Lock()
        self._live: list[tuple[int, int, int, int]] = []   # (offset, end, slot, seq) sorted
        self._free_slots = list(range(SLOTS - 1, -1, -1))
        self._seq = 0
        self._committed = 0
        self._named = True
        self._closed = False

    def _unlink(self) -> None:
        remove_quietly(self.path)

    def attach(self) -> None:
        """The client has mapped the area: remove its name (the mappings keep it)."""
        with self._lock:
            if self._named:
                self._named = False
                self._unlink()

    def _commit(self, end: int) -> bool:
        """Reserve tmpfs pages up to ``end``; False (logged) when /dev/shm is full."""
        try:
            self._committed = commit_pages(self._fd, self._committed, end, self.capacity,
                                           base=DATA_OFFSET)
        except OSError as exc:
            logger.warning("shared memory full (%s); answers go through the socket", exc)
            return False
        return True

    #: Committed bytes an area keeps when its answers have been read (pages beyond are
    #: given back to the system, so many connections do not each hold their high mark).
    RESIDENT_KEEP = 16 * 2**20

    def _shrink(self) -> None:
        """Give back the committed pages above the live regions and RESIDENT_KEEP."""
        high = max((region[1] for region in self._live), default=0)
        keep = min(-(-max(high, self.RESIDENT_KEEP) // COMMIT_STEP) * COMMIT_STEP, self.capacity)
        if self._committed <= keep or not hasattr(mmap, "MADV_REMOVE"):
            return
        try:  # punches a hole in the tmpfs file: the client's mapping sees it too
            self._mm.madvise(mmap.MADV_REMOVE, DATA_OFFSET + keep, self._committed - keep)
        except OSError as exc:
            logger.debug("could not give back shared-memory pages: %s", exc)
            return
        self._committed = keep

    def reserve(self, shape: tuple[int, ...], dtype=np.float64
                ) -> tuple[np.ndarray, tuple] | None:
        """A free region as an array of ``shape`` to fill, and its ticket; None if none fits.

        Pass the ticket to :meth:`publish` once the array is filled, or to :meth:`cancel`.
        """
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes == 0:
            return None
        size = -(-nbytes // _ALIGN) * _ALIGN
        with self._lock:
            if self._closed:
                return None
            released, live = self._released, []
            for region in self._live:              # reclaim what the client has read
                if released[region[2]] == region[3]:
                    self._free_slots.append(region[2])
                else:
                    live.append(region)
            self._live = live
            offset = first_fit(self._live, size, self.capacity) if self._free_slots else None
            if offset is not None and offset + size <= self.RESIDENT_KEEP:
                self._shrink()
            if offset is None or not self._commit(offset + size):
                return None
            slot = self._free_slots.pop()
            self._seq += 1
            seq = self._seq
            self._live.append((offset, offset + size, slot, seq))
            self._live.sort()
            dest = np.frombuffer(self._mm, dtype=dtype, count=count,
                                 offset=DATA_OFFSET + offset)  # holds the mapping until dropped
        return dest.reshape(shape), (slot, seq, offset, nbytes, dtype.str,
                                     tuple(int(n) for n in shape))

    def publish(self, ticket: tuple) -> tuple:
        """The wire value of a filled region: from now on the client may read it."""
        slot, seq, offset, nbytes, dtype, shape = ticket
        with self._lock:
            if not self._closed:
                self._issued[slot] = seq
        return (SHARED_TAG, dtype, shape, slot, seq, offset, nbytes)

    def cancel(self, ticket: tuple) -> None:
        """Free a reserved region that will not be published."""
        slot, seq = ticket[0], ticket[1]
        with self._lock:
            live = [r for r in self._live if r[2:] != (slot, seq)]
            if len(live) < len(self._live):
                self._live = live
                self._free_slots.append(slot)

    def put(self, data: np.ndarray) -> tuple | None:
        """Copy ``data`` into a free region; return its wire value, or None if none fits."""
        got = self.reserve(data.shape, data.dtype)
        if got is None:
            return None
        dest, ticket = got
        dest[...] = data
        del dest
        return self.publish(ticket)

    @property
    def in_use(self) -> int:
        """Regions not released by the client yet (as of the last allocation)."""
        return len(self._live)

    def close(self) -> None:
        """Stop allocating, remove the name if the client never took the area, unmap it.

        An answer still being copied in keeps the mapping until it is done. The memory
        goes when the client's mapping goes too. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._named:
                self._named = False
                self._unlink()
            os.close(self._fd)
            self._issued = self._released = None
            try:
                self._mm.close()
            except BufferError:  # a copy in progress: unmapped when it lets go
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("offered" if self._named else "attached")
        return f"<ServerArea {self.name} {state}, {self.capacity} bytes, {self.in_use} in use>"


class SegmentEncoder:
    """One connection's segment encoder (server side): shared memory once attached.

    Parameters
    ----------
    conn : rpyc.Connection, optional
        The connection; on a :class:`~software.transport.FastConnection` socket answers
        are sent from the array's memory instead of a bytes copy. Without one (a view
        used in-process) answers are plain bytes and no area is offered.
    directory : str
        Where areas are created.
    """

    def __init__(self, conn: Any = None, directory: str = SHM_DIR) -> None:
        self._connected = conn is not None
        self._buffers = bool(getattr(conn, "sends_buffers", False))
        self._directory = directory
        self._lock = threading.Lock()
        self._offered: ServerArea | None = None
        self._area: ServerArea | None = None
        self._reserved = threading.local()   # (area, array, ticket) of reserve()
        self.shared = 0       # answers handed over in the area
        self.fallbacks = 0    # answers sent through the socket because the area was full

    def reserve(self, shape: tuple[int, int]) -> np.ndarray | None:
        """A float64 array in the area for an answer this thread builds and then encodes.

        Encoding that very array (in this thread) hands it over without a copy; call
        :meth:`discard` after encoding in any case, so that an answer built but not
        encoded (an error, or rows picked from it) frees its region. None when there is
        no area or no room: build the answer elsewhere.
        """
        area = self._area
        if area is None:
            return None
        got = area.reserve(shape)
        if got is None:
            return None
        self._reserved.value = (area, got[0], got[1])
        return got[0]

    def discard(self) -> None:
        """Free this thread's reserved region if it was not encoded."""
        reserved = getattr(self._reserved, "value", None)
        if reserved is not None:
            self._reserved.value = None
            reserved[0].cancel(reserved[2])

    def __call__(self, data: np.ndarray) -> tuple:
        """Encode ``data`` for this connection (any thread)."""
        reserved = getattr(self._reserved, "value", None)
        if reserved is not None and reserved[1] is data:
            self._reserved.value = None
            self.shared += 1
            return reserved[0].publish(reserved[2])
        area = self._area
        if area is not None:
            value = area.put(data)
            if value is not None:
                self.shared += 1
                return value
            self.fallbacks += 1
        return encode_segment(data, copy=not self._buffers)

    def offer(self, nbytes: object) -> tuple[str, int] | bool:
        """Create an area of about ``nbytes``; return ``(name, capacity)`` or False."""
        nbytes = min(max(as_index("nbytes", nbytes), MIN_AREA), MAX_AREA)
        with self._lock:
            if self._area is not None or not self._connected:
                return False
            if self._offered is not None:
                self._offered.close()
                self._offered = None
            if fcntl is None or not hasattr(os, "posix_fallocate") \
                    or not os.path.isdir(self._directory):
                return False
            sweep_stale(self._directory)
            try:
                self._offered = ServerArea(nbytes, self._directory)
            except OSError as exc:
                logger.info("no shared memory for this connection (%s)", exc)
                return False
            return self._offered.name, self._offered.capacity

    def attach(self, token: object) -> bool:
        """Switch to the offered area if ``token`` proves the client mapped it."""
        if token is not False and type(token) is not bytes:
            raise InvalidTypeError(f"token must be the bytes read from the area, or False "
                                   f"to decline; a value of type {type(token).__name__} "
                                   f"is not.")
        with self._lock:
            area, self._offered = self._offered, None
            if area is None:
                return False
            if token is False or not hmac.compare_digest(token, area.token):
                area.close()
                return False
            area.attach()
            self._area = area
        logger.info("answers of this connection go through shared memory (%d MiB)",
                    area.capacity >> 20)
        return True

    def close(self) -> None:
        """Release the areas (the connection is gone); idempotent."""
        with self._lock:
            areas = [a for a in (self._offered, self._area) if a is not None]
            self._offered = self._area = None
        for area in areas:
            area.close()

    def __repr__(self) -> str:
        return (f"<SegmentEncoder area={self._area or self._offered!r} shared={self.shared} "
                f"fallbacks={self.fallbacks}>")
