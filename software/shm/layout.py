"""The layout of a connection's shared-memory area, known to both ends.

The server end is :mod:`software.stream.answers`, the client end
:mod:`software.client.shared_memory`.
"""
from __future__ import annotations

import mmap
import re

import numpy as np

#: Where the areas are created (tmpfs on Linux); without it the socket is used.
SHM_DIR = "/dev/shm"
PREFIX = "mefstream-"
NAME_RE = re.compile(r"^mefstream-[0-9a-f]{32}$")
MAGIC = b"MEFSHM01"
TOKEN_BYTES = 16
#: Answers a connection may have in its area at once; more go through the socket.
SLOTS = 1024
HEADER_BYTES = 64             # magic, token, slots, data offset, capacity
#: Where the samples start: after the header and the two slot tables, page aligned.
DATA_OFFSET = -(-(HEADER_BYTES + 16 * SLOTS) // mmap.PAGESIZE) * mmap.PAGESIZE


def slot_views(mm: mmap.mmap) -> tuple[np.ndarray, np.ndarray]:
    """The ``issued`` (server-written) and ``released`` (client-written) slot words."""
    issued = np.frombuffer(mm, dtype=np.uint64, count=SLOTS, offset=HEADER_BYTES)
    released = np.frombuffer(mm, dtype=np.uint64, count=SLOTS,
                              offset=HEADER_BYTES + 8 * SLOTS)
    return issued, released


