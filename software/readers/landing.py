"""Shared memory where reader processes put the samples they decode.

Returned the ordinary way, a reader's samples are pickled, pushed through the process
pool's pipe in 64 KiB pieces and unpickled: measured here at 3.3 s of the reader's CPU and
1.9 s of the server's per GB, with both cores busy decoding. Instead the server reserves a
region of a :class:`LandingArea` for each read it hands out, the reader decodes straight
into it and returns nothing, and the server copies the samples into its cache from there::

    server: reserve(nbytes) -> offset ------ task(path, offset) -----> reader process
                                                                       reader_view(path,
    server: view(offset) -> cache copies <-- done (no samples) ------    offset) <- decode
    server: release(offset)

The area is one ``/dev/shm`` file per reader-pool generation, locked by the server while
it lives (so :func:`software.shm.arena.sweep_stale` removes it after a crash)
and removed when the pool closes or is rebuilt; a rebuilt pool gets a new area, so a
reader of a broken pool that is still being terminated never writes where a new read
lands. A read whose samples do not fit goes the ordinary way.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from ..shm.arena import Arena
from ..shm.layout import SHM_DIR

__all__ = ["LandingArea"]

logger = logging.getLogger(__name__)


class LandingArea:
    """The server's side of one landing area: an :class:`~software.shm.arena.Arena` that
    readers decode into, retired (not reused) when its reader pool is rebuilt.

    Parameters
    ----------
    capacity : int
        Bytes of the file. Pages are reserved as regions first reach them; those above
        ``keep`` are given back whenever the area empties.
    keep : int
        Reserved bytes kept when the area is empty.
    directory : str, optional
        Where the file is created (default: where client areas go, ``/dev/shm``).

    Raises
    ------
    OSError
        No shared memory here (not POSIX, no such directory).

    Notes
    -----
    Thread-safe (the server's reading threads and the pool's result thread). Use
    :meth:`create`, which returns None where shared memory is missing.
    """

    def __init__(self, capacity: int, keep: int = 32 * 2**20,
                 directory: str | None = None) -> None:
        self.capacity = int(capacity)
        self.keep = int(keep)
        self._arena = Arena.create(self.capacity, directory=directory or SHM_DIR,
                                   full_note="reader results that do not fit go through "
                                             "the process pool's pipe")
        #: The file readers map (an attribute: what reserve hands out with each read).
        self.path = self._arena.path
        self._lock = threading.Lock()
        self._retired = False

    @classmethod
    def create(cls, capacity: int, directory: str | None = None) -> LandingArea | None:
        """A new area, or None (logged) where none can be made; reads then use the pipe."""
        if capacity <= 0:
            return None
        try:
            return cls(capacity, directory=directory)
        except OSError as exc:
            logger.info("no shared memory for reader results (%s); they go through the "
                        "process pool's pipe", exc)
            return None

    def reserve(self, nbytes: int) -> int | None:
        """Offset of a free region of ``nbytes``, or None when none fits (or retired)."""
        with self._lock:
            if self._retired:
                return None
            return self._arena.allocate(nbytes)

    def view(self, offset: int, shape: tuple[int, int], dtype=np.float64) -> np.ndarray:
        """The ``dtype`` array a reader wrote at ``offset`` (valid until :meth:`release`)."""
        return self._arena.view(offset, dtype, shape)

    def release(self, offset: int) -> None:
        """Free the region at ``offset``; a retired area closes with its last region."""
        with self._lock:
            arena = self._arena
            arena.free(offset)
            if arena.regions:
                return
            if self._retired:
                arena.close()
            else:  # the readers' mappings see the hole too
                arena.give_back(self.keep)

    def retire(self) -> None:
        """Reserve nothing more; remove the file now and unmap with the last region."""
        with self._lock:
            self._retired = True
            self._arena.unlink()
            if not self._arena.regions:
                self._arena.close()

    def close(self) -> None:
        """Remove the file and unmap it (idempotent); call once no reader writes to it."""
        with self._lock:
            self._retired = True
            self._arena.close()

    @property
    def closed(self) -> bool:
        """Whether the area is unmapped (closed, or retired with its last region freed)."""
        return self._arena.closed

    def __enter__(self) -> LandingArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._arena.closed else ("retired" if self._retired else "open")
        return f"<LandingArea {self.path} {state}, {self._arena.regions} regions>"
