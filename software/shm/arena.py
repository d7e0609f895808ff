"""tmpfs arenas: the lifecycle shared by the readers' landing area and connection areas.

A file in ``/dev/shm`` created exclusively (mode 0600) and ``flock``-ed by its owner, a
first-fit allocator over its regions, tmpfs pages reserved as regions first reach them (so
a full ``/dev/shm`` fails an allocation instead of raising SIGBUS in a write through the
mapping) and given back with ``MADV_REMOVE`` once regions are freed, and a sweep of the
files a killed owner left behind.
"""
from __future__ import annotations

import logging
import os
import time

try:
    import fcntl
except ImportError:  # not POSIX: callers fall back to pipes and sockets
    fcntl = None

from .layout import NAME_RE, SHM_DIR

logger = logging.getLogger(__name__)

COMMIT_STEP = 2**21   # tmpfs pages are reserved in steps of this many bytes


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


def sweep_stale(directory: str = SHM_DIR, min_age: float = 1.0) -> int:
    """Remove areas left by a killed server before any client took them; return how many.

    A live server holds an exclusive ``flock`` on every area it has not handed over yet;
    the lock dies with the process. Files of another user or younger than ``min_age``
    seconds are left alone.
    """
    removed = 0
    try:
        names = [n for n in os.listdir(directory) if NAME_RE.match(n)]
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
            logger.info("removed %s, left by a server that died", path)
        except OSError:  # locked by its live server, or already gone
            pass
        finally:
            os.close(fd)
    return removed
