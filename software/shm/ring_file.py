"""The memory file of a shared live ring: made by its owner, mapped by others on the host.

The file is a ``memfd`` (:func:`create`): it has no name in ``/dev/shm``, so nothing is
left behind whoever dies, and it is sealed against shrinking or growing, so no process
that maps it can make another's access fault. Another process of the same user on the
same host maps it through ``/proc/<owner pid>/fd/<fd>`` (:func:`open_shared`; the
kernel checks that it may read the owner's files), then proves it to the owner with the
random token the file holds.

Its memory is taken when it is made (``posix_fallocate``: a ring that does not fit fails
then, not in the middle of a recording) and every mapping is made with its pages in place
(``MAP_POPULATE``): a page first touched while following costs a fault (about 1 us here;
a 384 ch x 300 float32 chunk touches 115), which made the first lap of the ring several
times slower than the next ones.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import platform
import stat

from . import futex

__all__ = ["MAGIC", "SHAREABLE", "TOKEN_BYTES", "create", "open_shared"]

#: Whether rings can be shared with other processes here (memfd, futex, and x86-64's
#: ordering of stores and of loads, which the ring's protocol relies on).
SHAREABLE = (futex.AVAILABLE and hasattr(os, "memfd_create")
             and platform.machine().lower() in ("x86_64", "amd64"))
MAGIC = b"MEFRING1"
TOKEN_BYTES = 16
_POPULATE = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def create(size: int, shared: bool) -> tuple[mmap.mmap, int | None]:
    """A mapping of ``size`` bytes: a sealed memfd and its fd when ``shared`` (and
    :data:`SHAREABLE`), else memory of this process only (fd None).

    Raises
    ------
    OSError
        The memory cannot be had.
    """
    if shared and SHAREABLE:
        fd = os.memfd_create("mefstream-ring", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            os.posix_fallocate(fd, 0, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            return mmap.mmap(fd, size, _POPULATE), fd
        except BaseException:
            os.close(fd)
            raise
    return mmap.mmap(-1, size), None


def open_shared(pid: int, fd: int, size: int, writable: bool = False) -> mmap.mmap:
    """Map the ring file ``fd`` of process ``pid`` (``size`` bytes), read-only unless
    ``writable``.

    Raises
    ------
    OSError
        No such file here (another host, another user, no ``/proc``).
    ValueError
        Not a mefstream ring of that size.
    """
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC
    path = f"/proc/{int(pid)}/fd/{int(fd)}"
    handle = os.open(path, flags)       # O_NONBLOCK: never hang on a FIFO of that name
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode) or info.st_size != int(size) or size < 4096:
            raise ValueError(f"{path} is not a ring of {size} bytes")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mm = mmap.mmap(handle, int(size), _POPULATE, prot)
    finally:
        os.close(handle)
    if mm[:8] != MAGIC:
        mm.close()
        raise ValueError(f"{path} is not a mefstream ring")
    return mm
