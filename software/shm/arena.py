"""tmpfs arenas: the lifecycle shared by the readers' landing area and connection areas.

An :class:`Arena` is a ``/dev/shm`` file created exclusively (0600), ``flock``-ed by its
owner and mapped, with a first-fit allocator over its regions; tmpfs pages are reserved
as regions first reach them (so a full ``/dev/shm`` fails an allocation instead of raising
SIGBUS in a write through the mapping) and given back with ``MADV_REMOVE`` once freed. :func:`sweep_stale` removes the files a killed
owner left behind (its lock died with it)::

    Arena.create(capacity, header) -> [ header | regions ...                  ]
        allocate(nbytes, tag) -> offset    first fit, pages committed up to its end
        view(offset, dtype, shape)         an array over the region (no copy)
        free(offset) / free_where(pred)    the region is free again
        give_back(keep)                    pages above max(live regions, keep) returned
        unlink() / close()                 name removed / fd closed and unmapped

Users: :class:`software.readers.landing.LandingArea` (reader processes decode into it)
and :class:`software.stream.answers.ServerArea` (a connection's answers, read by the
client). Imported by reader processes: no rpyc here.
"""
from __future__ import annotations

import bisect
import logging
import math
import mmap
import operator
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Hashable

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: callers fall back to pipes and sockets
    fcntl = None

from .layout import NAME_RE, PREFIX, SHM_DIR

__all__ = ["COMMIT_STEP", "Arena", "sweep_stale"]

logger = logging.getLogger(__name__)

COMMIT_STEP = 2**21   # tmpfs pages are reserved in steps of this many bytes
ALIGN = 64            # every region starts on a cache line
_START = operator.itemgetter(0)


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


def sweep_stale(directory: str = SHM_DIR, min_age: float = 1.0,
                pattern: re.Pattern = NAME_RE) -> int:
    """Remove arenas left by a killed owner before anyone took them; return how many.

    A live owner holds an exclusive ``flock`` on every arena it has not handed over yet;
    the lock dies with the process. Files of another user, younger than ``min_age``
    seconds or whose names do not match ``pattern`` are left alone.

    Parameters
    ----------
    directory : str
        Where the arenas are.
    min_age : float
        Seconds since a file's last change before it may be removed (one being created
        is not locked yet).
    pattern : re.Pattern
        Names of arena files (default: ``mefstream-`` and 32 hex digits).

    Returns
    -------
    int
        Files removed.
    """
    if fcntl is None:
        return 0
    removed = 0
    try:
        names = [n for n in os.listdir(directory) if pattern.match(n)]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if st.st_uid != os.getuid() or time.time() - st.st_mtime < min_age:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
            removed += 1
            logger.info("removed %s, left by an owner that died", path)
        except OSError:  # locked by its live server, or already gone
            pass
        finally:
            os.close(fd)
    return removed


class Arena:
    """One ``/dev/shm`` file owned by this process: regions, committed pages, lifecycle.

    Make one with :meth:`create`. Offsets of regions count from the end of the header
    (``header`` bytes at the start of the file that the owner writes through
    :attr:`mapping`; its pages are reserved at creation). Thread-safe: every method takes
    the arena's lock, and no I/O but page reservation happens under it.

    Attributes
    ----------
    path, name : str
        The file and its name in its directory.
    capacity : int
        Bytes for regions (the file has ``header + capacity``).
    header : int
        Bytes before the first region.
    """

    def __init__(self, path: str, fd: int, mapping: mmap.mmap, capacity: int, header: int,
                 full_note: str) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.capacity = capacity
        self.header = header
        self._fd = fd
        self._mm = mapping
        self._full_note = full_note
        self._lock = threading.Lock()
        self._live: list[tuple[int, int, Hashable]] = []   # (offset, end, tag), sorted
        self._committed = 0        # region bytes whose pages are reserved
        self._full_logged = False
        self._named = True
        self._closed = False

    @classmethod
    def create(cls, capacity: int, header: int = 0, directory: str = SHM_DIR,
               prefix: str = PREFIX, full_note: str = "") -> Arena:
        """Create, lock and map a new arena file.

        Parameters
        ----------
        capacity : int
            Bytes for regions (at least 1).
        header : int
            Bytes at the start of the file kept for the owner's header (committed now).
        directory : str
            Where the file is created (tmpfs: ``/dev/shm``).
        prefix : str
            Start of the file's name; 32 random hex digits follow.
        full_note : str
            What happens instead when ``/dev/shm`` is full, for the one warning logged
            per arena (e.g. "answers go through the socket").

        Returns
        -------
        Arena

        Raises
        ------
        OSError
            Not a POSIX system, the directory is missing, or the header's pages cannot be
            reserved.
        """
        capacity, header = int(capacity), int(header)
        if fcntl is None:
            raise OSError("no fcntl: shared memory arenas need a POSIX system")
        if capacity < 1 or header < 0:
            raise ValueError(f"capacity={capacity} must be at least 1 and header={header} "
                             f"at least 0")
        path = os.path.join(directory, prefix + secrets.token_hex(16))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, header + capacity)
            if header:
                os.posix_fallocate(fd, 0, header)
            mapping = mmap.mmap(fd, header + capacity)
        except BaseException:
            remove_quietly(path)
            os.close(fd)
            raise
        return cls(path, fd, mapping, capacity, header, full_note)

    # ---- regions ------------------------------------------------------------------------

    def allocate(self, nbytes: int, tag: Hashable = None) -> int | None:
        """Reserve a region of ``nbytes`` (rounded up to 64) at the lowest offset it fits.

        Parameters
        ----------
        nbytes : int
            Bytes wanted (0 or less: nothing is reserved).
        tag : hashable, optional
            Kept with the region for :meth:`free_where`.

        Returns
        -------
        int or None
            The region's offset (from the end of the header); None when nothing fits,
            the arena is closed, or ``/dev/shm`` has no pages left (logged once).
        """
        size = -(-int(nbytes) // ALIGN) * ALIGN
        if size <= 0:
            return None
        with self._lock:
            if self._closed:
                return None
            offset = first_fit(self._live, size, self.capacity)
            if offset is None or not self._commit(offset + size):
                return None
            bisect.insort(self._live, (offset, offset + size, tag), key=_START)
            return offset

    def _commit(self, end: int) -> bool:
        """Reserve pages up to ``end`` (lock held); False (logged once) when none are left."""
        try:
            self._committed = commit_pages(self._fd, self._committed, end, self.capacity,
                                           base=self.header)
        except OSError as exc:
            if not self._full_logged:  # once per arena: it would repeat with every region
                self._full_logged = True
                logger.warning("shared memory full (%s)%s", exc,
                               "; " + self._full_note if self._full_note else "")
            return False
        return True

    def free(self, offset: int) -> bool:
        """Free the region at ``offset``; False if there is none."""
        return bool(self.free_where(lambda start, _tag: start == offset))

    def free_where(self, predicate: Callable[[int, Hashable], bool]
                   ) -> list[tuple[int, Hashable]]:
        """Free every region for which ``predicate(offset, tag)`` is true.

        Returns
        -------
        list of (int, hashable)
            The freed regions' offsets and tags.
        """
        with self._lock:
            kept, freed = [], []
            for region in self._live:
                if predicate(region[0], region[2]):
                    freed.append((region[0], region[2]))
                else:
                    kept.append(region)
            if freed:
                self._live = kept
            return freed

    @property
    def regions(self) -> int:
        """Regions allocated and not freed."""
        return len(self._live)

    @property
    def committed(self) -> int:
        """Region bytes whose tmpfs pages are reserved."""
        return self._committed

    def give_back(self, keep: int = 0) -> int:
        """Return the reserved pages above the live regions and ``keep`` bytes to tmpfs.

        Punches a hole in the file (``MADV_REMOVE``): every process mapping it sees zeros
        there. Returns the bytes given back (0 where the system cannot).
        """
        with self._lock:
            if self._closed or not hasattr(mmap, "MADV_REMOVE"):
                return 0
            high = max((region[1] for region in self._live), default=0)
            floor = min(-(-max(high, int(keep)) // COMMIT_STEP) * COMMIT_STEP, self.capacity)
            if self._committed <= floor:
                return 0
            try:
                self._mm.madvise(mmap.MADV_REMOVE, self.header + floor,
                                 self._committed - floor)
            except OSError as exc:
                logger.debug("could not give back pages of %s: %s", self.path, exc)
                return 0
            given, self._committed = self._committed - floor, floor
            return given

    # ---- access ---------------------------------------------------------------------------

    @property
    def mapping(self) -> mmap.mmap | None:
        """The whole file's mapping (the owner writes its header through it); None once
        closed."""
        return self._mm

    def view(self, offset: int, dtype, shape: tuple[int, ...]) -> np.ndarray:
        """An array of ``shape`` over the region at ``offset`` (it keeps the mapping alive).

        Parameters
        ----------
        offset : int
            What :meth:`allocate` returned.
        dtype : numpy dtype
            Element type.
        shape : tuple of int
            Shape of the array.

        Raises
        ------
        ValueError
            The arena is closed.
        """
        mapping = self._mm
        if mapping is None:
            raise ValueError(f"arena {self.name} is closed: its regions cannot be viewed")
        dtype = np.dtype(dtype)
        # frombuffer holds a buffer export (np.ndarray(buffer=) does not): close() cannot
        # unmap the pages under a live view, which would then crash the process
        return np.frombuffer(mapping, dtype=dtype, count=math.prod(shape),
                             offset=self.header + offset).reshape(shape)

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def named(self) -> bool:
        """Whether the file still has its name (others can still map it)."""
        return self._named

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def unlink(self) -> None:
        """Remove the file's name (idempotent); mappings keep its memory until unmapped."""
        with self._lock:
            if self._named:
                self._named = False
                remove_quietly(self.path)

    def close(self) -> None:
        """Allocate nothing more, remove the name, close the file and unmap it (idempotent).

        A view still held keeps the mapping until it is dropped.
        """
        self.unlink()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._live.clear()
            os.close(self._fd)
            mapping, self._mm = self._mm, None
            try:
                mapping.close()
            except BufferError:  # a view is still held: unmapped when the last one goes
                logger.debug("%s still viewed; unmapped when released", self.path)

    def __enter__(self) -> Arena:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("named" if self._named else "unlinked")
        return (f"<Arena {self.name} {state}, {len(self._live)} regions, "
                f"{self._committed} of {self.capacity} bytes committed>")
