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
it lives (so :func:`software.shared_memory_server.sweep_stale` removes it after a crash)
and removed when the pool closes or is rebuilt; a rebuilt pool gets a new area, so a
reader of a broken pool that is still being terminated never writes where a new read
lands. A read whose samples do not fit goes the ordinary way.
"""
from __future__ import annotations

import logging
import mmap
import os
import secrets
import threading

import numpy as np

from ..shm.arena import commit_pages, first_fit, remove_quietly
from ..shm.layout import PREFIX, SHM_DIR

try:
    import fcntl
except ImportError:  # not POSIX: reads go through the pipe
    fcntl = None

__all__ = ["LandingArea"]

logger = logging.getLogger(__name__)

_ALIGN = 64          # regions start on a cache line

class LandingArea:
    """The server's side of one landing area: a first-fit allocator over a ``/dev/shm`` file.

    Parameters
    ----------
    capacity : int
        Bytes of the file. Pages are reserved as regions first reach them; those above
        ``keep`` are given back whenever the area empties.
    keep : int
        Reserved bytes kept when the area is empty.
    directory : str, optional
        Where the file is created (default: where client areas go, ``/dev/shm``).

    Notes
    -----
    Thread-safe. Use :meth:`create`, which returns None where shared memory is missing.
    """

    def __init__(self, capacity: int, keep: int = 32 * 2**20,
                 directory: str | None = None) -> None:
        if fcntl is None:
            raise OSError("no fcntl: shared memory areas need a POSIX system")
        self.capacity = int(capacity)
        self.keep = int(keep)
        self.path = os.path.join(directory or SHM_DIR, PREFIX + secrets.token_hex(16))
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(self._fd, self.capacity)
            self._mm = mmap.mmap(self._fd, self.capacity)
        except BaseException:
            self._unlink()
            os.close(self._fd)
            raise
        self._lock = threading.Lock()
        self._live: list[tuple[int, int]] = []     # (offset, end), sorted
        self._committed = 0
        self._full_logged = False
        self._retired = False
        self._closed = False

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

    def _unlink(self) -> None:
        remove_quietly(self.path)

    def reserve(self, nbytes: int) -> int | None:
        """Offset of a free region of ``nbytes``, or None when none fits (or retired)."""
        size = -(-int(nbytes) // _ALIGN) * _ALIGN
        if size <= 0:
            return None
        with self._lock:
            if self._retired:
                return None
            offset = first_fit(self._live, size, self.capacity)
            if offset is None or not self._commit(offset + size):
                return None
            self._live.append((offset, offset + size))
            self._live.sort()
            return offset

    def _commit(self, end: int) -> bool:
        """Reserve tmpfs pages up to ``end``; False (logged once) when /dev/shm is full."""
        try:
            self._committed = commit_pages(self._fd, self._committed, end, self.capacity)
        except OSError as exc:
            if not self._full_logged:  # once per area: it would repeat with every read
                self._full_logged = True
                logger.warning("shared memory full (%s); reader results that do not fit go "
                               "through the process pool's pipe", exc)
            return False
        return True

    def view(self, offset: int, shape: tuple[int, int]) -> np.ndarray:
        """The float64 array a reader wrote at ``offset`` (valid until :meth:`release`)."""
        return np.ndarray(shape, dtype=np.float64, buffer=self._mm, offset=offset)

    def release(self, offset: int) -> None:
        """Free the region at ``offset``; a retired area closes with its last region."""
        with self._lock:
            self._live = [r for r in self._live if r[0] != offset]
            if self._live:
                return
            if self._retired:
                self._close_locked()
            elif self._committed > self.keep and hasattr(mmap, "MADV_REMOVE"):
                try:  # punches a hole in the tmpfs file: the readers' mappings see it too
                    self._mm.madvise(mmap.MADV_REMOVE, self.keep, self._committed - self.keep)
                    self._committed = self.keep
                except OSError as exc:
                    logger.debug("could not give back landing pages: %s", exc)

    def retire(self) -> None:
        """Reserve nothing more; remove the file now and unmap with the last region."""
        with self._lock:
            self._retired = True
            self._unlink()
            if not self._live:
                self._close_locked()

    def close(self) -> None:
        """Remove the file and unmap it (idempotent); call once no reader writes to it."""
        with self._lock:
            self._retired = True
            self._live.clear()
            self._unlink()
            self._close_locked()

    def _close_locked(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._mm.close()
        except BufferError:  # a caller still holds a view: the mapping goes with it
            logger.debug("landing area %s still viewed; unmapped when released", self.path)
        os.close(self._fd)

    def __enter__(self) -> LandingArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("retired" if self._retired else "open")
        return f"<LandingArea {self.path} {state}, {len(self._live)} regions>"
