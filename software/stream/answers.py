"""Each connection's encoder of answers, and the server end of the same-host shared memory.

A :class:`SegmentEncoder` per connection answers in the form the client chose (the root's
``set_answer_form``): **plain** by default, CREPE's nested tuples of numbers (capped at
:data:`PLAIN_MAX_VALUES` values per answer), or **packed** ``(bytes, dtype, shape)``, what
:func:`~software.get_connection` asks for. Packed, it offers an area, switches to it once
the client proves it mapped it, and then copies each answer into a region of it (first
fit, under a lock; the copy outside it), falling back to the socket when nothing fits. The
layout is in :mod:`software.shm.layout`, the arena under an area in
:mod:`software.shm.arena`, the client end in :mod:`software.client.shared_memory`.
"""
from __future__ import annotations

import hmac
import logging
import math
import os
import secrets
import threading
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no shared memory, the socket serves
    fcntl = None

from ..errors import InvalidArgumentError, InvalidRangeError, InvalidTypeError
from ..shm.arena import Arena, sweep_stale
from ..shm.layout import (
    DATA_OFFSET,
    MAGIC,
    SHM_DIR,
    SLOTS,
    TOKEN_BYTES,
    slot_views,
)
from ..transport.wire import SHARED_TAG, encode_plain, encode_segment
from ..validation import as_index
from .counters import Counters

__all__ = ["ANSWER_FORMS", "PLAIN_MAX_VALUES", "SegmentEncoder", "ServerArea",
           "sweep_stale"]

logger = logging.getLogger(__name__)

#: Area sizes a server grants (larger requests are cut, smaller raised).
MIN_AREA, MAX_AREA = 2**20, 2**30

#: The forms an answer can take (see :mod:`software.transport.wire`).
ANSWER_FORMS = ("plain", "packed")
#: Most values (channels x samples) of one answer in the plain form: about 9 MB on the
#: wire (brine spends 9 bytes per float) and about 0.4 s of the client's time to load
#: (brine builds each number in Python), where the packed form takes milliseconds.
PLAIN_MAX_VALUES = 1_000_000


class ServerArea:
    """The server's side of one connection's area: an arena of answers in slots.

    An :class:`~software.shm.arena.Arena` whose header (magic, token, slot count, data
    offset, capacity, then the ``issued`` and ``released`` slot words, see
    :mod:`software.shm.layout`) this owner writes; each answer is a region tagged with
    its ``(slot, seq)``, free again once the client wrote ``seq`` to ``released[slot]``.

    Parameters
    ----------
    capacity : int
        Bytes for samples.
    directory : str
        Where the file is created.

    Raises
    ------
    OSError
        The file could not be made (no /dev/shm, no room for its header).

    Notes
    -----
    :meth:`put` runs in the connection's serving thread and in its views' callback
    threads; allocation is under a lock, the copy is not.
    """

    #: Committed bytes an area keeps when its answers have been read (pages beyond are
    #: given back to the system, so many connections do not each hold their high mark).
    RESIDENT_KEEP = 16 * 2**20

    def __init__(self, capacity: int, directory: str = SHM_DIR) -> None:
        self._arena = Arena.create(capacity, header=DATA_OFFSET, directory=directory,
                                   full_note="answers go through the socket")
        self.name = self._arena.name
        self.path = self._arena.path
        self.capacity = self._arena.capacity
        self.token = secrets.token_bytes(TOKEN_BYTES)
        mm = self._arena.mapping
        np.frombuffer(mm, dtype=np.uint64, count=3, offset=24)[:] = (
            SLOTS, DATA_OFFSET, self.capacity)
        mm[8:8 + TOKEN_BYTES] = self.token
        mm[:8] = MAGIC                       # last: the header is complete
        self._issued, self._released = slot_views(mm)
        self._lock = threading.Lock()
        self._free_slots = list(range(SLOTS - 1, -1, -1))
        self._seq = 0
        self._closed = False

    def attach(self) -> None:
        """The client has mapped the area: remove its name (the mappings keep it)."""
        self._arena.unlink()

    def _read_by_client(self, _offset: int, tag: tuple[int, int]) -> bool:
        return self._released[tag[0]] == tag[1]

    def reserve(self, shape: tuple[int, ...], dtype=np.float64
                ) -> tuple[np.ndarray, tuple] | None:
        """A free region as an array of ``shape`` to fill, and its ticket; None if none fits.

        Pass the ticket to :meth:`publish` once the array is filled, or to :meth:`cancel`.
        """
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes == 0:
            return None
        arena = self._arena
        with self._lock:
            if self._closed:
                return None
            for _offset, (slot, _seq) in arena.free_where(self._read_by_client):
                self._free_slots.append(slot)       # reclaim what the client has read
            if not self._free_slots:
                return None
            slot, seq = self._free_slots[-1], self._seq + 1
            offset = arena.allocate(nbytes, tag=(slot, seq))
            if offset is None:
                return None
            self._free_slots.pop()
            self._seq = seq
            if offset + nbytes <= self.RESIDENT_KEEP:   # low again: give back the rest
                arena.give_back(self.RESIDENT_KEEP)
            dest = arena.view(offset, dtype, shape)      # holds the mapping until dropped
        return dest, (slot, seq, offset, nbytes, dtype.str, shape)

    def publish(self, ticket: tuple) -> tuple:
        """The wire value of a filled region: from now on the client may read it."""
        slot, seq, offset, nbytes, dtype, shape = ticket
        with self._lock:
            if not self._closed:
                self._issued[slot] = seq
        return (SHARED_TAG, dtype, shape, slot, seq, offset, nbytes)

    def cancel(self, ticket: tuple) -> None:
        """Free a reserved region that will not be published."""
        tag = (ticket[0], ticket[1])
        with self._lock:
            if self._arena.free_where(lambda _offset, t: t == tag):
                self._free_slots.append(tag[0])

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
        return self._arena.regions

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop allocating, remove the name if the client never took the area, unmap it.

        An answer still being copied in keeps the mapping until it is done. The memory
        goes when the client's mapping goes too. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._issued = self._released = None
        self._arena.close()

    def __enter__(self) -> ServerArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("offered" if self._arena.named
                                               else "attached")
        return f"<ServerArea {self.name} {state}, {self.capacity} bytes, {self.in_use} in use>"


class SegmentEncoder:
    """One connection's segment encoder (server side): plain or packed, shared memory once
    attached (packed only).

    Parameters
    ----------
    conn : rpyc.Connection, optional
        The connection; on a :class:`~software.transport.connection.FastConnection` socket answers
        are sent from the array's memory instead of a bytes copy. Without one (a view
        used in-process) answers are plain bytes and no area is offered.
    directory : str
        Where areas are created.
    counters : Counters, optional
        The server's event counters: ``bytes_served`` (payload bytes of every answer
        encoded, through the area or the socket), ``answers_shared`` and
        ``shm_fallbacks`` are added to them as well as to :attr:`shared` and
        :attr:`fallbacks`.
    """

    def __init__(self, conn: Any = None, directory: str = SHM_DIR, *,
                 counters: Counters | None = None) -> None:
        self._connected = conn is not None
        #: The form of this connection's answers: ``"plain"`` for a connection (until its
        #: client asks otherwise), ``"packed"`` for a view used in-process.
        self.form = "plain" if self._connected else "packed"
        self._counters = counters
        self._buffers = bool(getattr(conn, "sends_buffers", False))
        self._directory = directory
        self._lock = threading.Lock()
        self._offered: ServerArea | None = None
        self._area: ServerArea | None = None
        self._reserved = threading.local()   # (area, array, ticket) of reserve()
        self.shared = 0       # answers handed over in the area
        self.fallbacks = 0    # answers sent through the socket because the area was full

    def set_form(self, form: object) -> str:
        """Answer in ``form`` from now on (``"plain"`` or ``"packed"``); returns it.

        Raises
        ------
        InvalidArgumentError
            ``form`` is not one of :data:`ANSWER_FORMS`.
        """
        if not isinstance(form, str) or form not in ANSWER_FORMS:
            raise InvalidArgumentError(
                f"form={form!r} is not an answer form; pass 'plain' (nested tuples of "
                f"numbers, CREPE's shape) or 'packed' ((bytes, dtype, shape) for "
                f"software.decode_segment).")
        self.form = form
        return form

    def admit(self, channels: int, samples: int) -> None:
        """Refuse, before any reading, an answer too large for this connection's form.

        Parameters
        ----------
        channels, samples : int
            The answer's shape (a row: one channel).

        Raises
        ------
        InvalidRangeError
            The plain form and more than :data:`PLAIN_MAX_VALUES` values; the message
            names the largest range and the packed form as the fix.
        """
        if self.form != "plain" or channels * samples <= PLAIN_MAX_VALUES:
            return
        largest = max(PLAIN_MAX_VALUES // max(channels, 1), 1)
        raise InvalidRangeError(
            f"{channels} channels x {samples} samples = {channels * samples:,} values is "
            f"more than a plain answer holds ({PLAIN_MAX_VALUES:,} values, about 9 MB of "
            f"nested tuples); with {channels} channels ask at most {largest} samples "
            f"(_range={largest}), or take the packed form: conn.root.set_answer_form("
            f"'packed') and software.decode_segment(answer), or connect with "
            f"software.get_connection (numpy arrays).")

    def reserve(self, shape: tuple[int, int]) -> np.ndarray | None:
        """A float64 array in the area for an answer this thread builds and then encodes.

        Encoding that very array (in this thread) hands it over without a copy; call
        :meth:`discard` after encoding in any case, so that an answer built but not
        encoded (an error, or rows picked from it) frees its region. None when there is
        no area or no room: build the answer elsewhere.
        """
        area = self._area
        if area is None or self.form != "packed":
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
        counters = self._counters
        if counters is not None:
            counters.add("bytes_served", data.nbytes)
        if self.form == "plain":
            self.admit(*(data.shape if data.ndim == 2 else (1, data.size)))
            return encode_plain(data, prebuilt=self._buffers)
        reserved = getattr(self._reserved, "value", None)
        if reserved is not None and reserved[1] is data:
            self._reserved.value = None
            self._count_shared()
            return reserved[0].publish(reserved[2])
        area = self._area
        if area is not None:
            value = area.put(data)
            if value is not None:
                self._count_shared()
                return value
            self.fallbacks += 1
            if counters is not None:
                counters.add("shm_fallbacks")
        return encode_segment(data, copy=not self._buffers)

    def _count_shared(self) -> None:
        self.shared += 1
        if self._counters is not None:
            self._counters.add("answers_shared")

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
        return (f"<SegmentEncoder {self.form} area={self._area or self._offered!r} "
                f"shared={self.shared} fallbacks={self.fallbacks}>")
