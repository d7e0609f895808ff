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

try:
    import fcntl
except ImportError:  # not POSIX: reads go through the pipe
    fcntl = None

__all__ = ["COMMIT_STEP", "LandingArea", "commit_pages", "first_fit", "reader_release",
           "reader_view", "remove_quietly"]

logger = logging.getLogger(__name__)

_ALIGN = 64          # regions start on a cache line
COMMIT_STEP = 2**21   # tmpfs pages are reserved in steps of this many bytes

_reader_maps: dict[str, mmap.mmap] = {}   # in reader processes: area path -> mapping


def first_fit(live: list, size: int, capacity: int) -> int | None:
    """Lowest offset where ``size`` bytes fit between the sorted ``(start, end, ...)``
    regions ``live`` of an area of ``capacity`` bytes, or None."""
    cursor = 0
    for region in live:
        if region[0] - cursor >= size:
            return cursor
        cursor = region[1]
    return cursor if capacity - cursor >= size else None


def commit_pages(fd: int, committed: int, end: int, capacity: int, base: int = 0) -> int:
    """Reserve the tmpfs pages of an area up to ``end`` (so that a full /dev/shm fails here
    rather than SIGBUS a write through a mapping); return the new committed size.

    Pages are reserved in steps of 2 MiB from ``base + committed``. Raises OSError when
    /dev/shm is full.
    """
    if end <= committed:
        return committed
    target = min(-(-end // COMMIT_STEP) * COMMIT_STEP, capacity)
    os.posix_fallocate(fd, base + committed, target - committed)
    return target


def remove_quietly(path: str) -> None:
    """Remove a shared-memory file; one already gone is fine, other failures are logged."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc)


def reader_view(path: str, offset: int, shape: tuple[int, int]) -> np.ndarray:
    """In a reader process: the float64 array at ``offset`` of the area at ``path``."""
    mm = _reader_maps.get(path)
    if mm is None:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            mm = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        for old in list(_reader_maps):   # an area of an earlier pool generation
            _reader_maps.pop(old).close()
        _reader_maps[path] = mm
    return np.ndarray(shape, dtype=np.float64, buffer=mm, offset=offset)


def reader_release(path: str, offset: int, nbytes: int) -> None:
    """In a reader process: unmap the pages of a region it wrote from this process only.

    The samples stay in the file for the server; without this every reader would keep
    every page it ever wrote mapped, and each process's RSS would count the area again.
    """
    mm = _reader_maps.get(path)
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = offset - offset % mmap.PAGESIZE
    try:
        mm.madvise(mmap.MADV_DONTNEED, start, min(offset + nbytes, len(mm)) - start)
    except OSError:  # only memory accounting suffers
        pass


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
        # imported here: reader processes use only reader_view and must not load rpyc
        from .shared_memory import PREFIX, SHM_DIR
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
