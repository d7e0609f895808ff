"""Scratch directories owned by a live process, and the sweep that removes a dead one's.

A scratch directory (a reader's shadow of a session while it opens it, the reader pool's
task board, a broadcast's rendezvous) is named ``PREFIX<pid>-<random>`` after the process
that made it, which holds an ``flock`` on the directory itself until it removes it::

    OwnedDir.create("mefstream-shadow-")  ->  /tmp/mefstream-shadow-4242-k2j9s/  (flock)
    ... the owner is SIGKILLed: the lock dies with it ...
    sweep_owned("mefstream-shadow-")      ->  unlocked and its pid gone: removed

:func:`sweep_owned` removes a directory only when nobody holds its lock and its maker
is gone (or it is older than ``min_age``: a pid reused since, or a directory of an older
version without a pid). Runs in the server and in reader processes; no pymef here.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time

try:
    import fcntl
except ImportError:  # not POSIX: nothing is locked, nothing is swept
    fcntl = None

__all__ = ["SHADOW_PREFIX", "OwnedDir", "sweep_owned"]

logger = logging.getLogger(__name__)

#: Name prefix of a reader's shadow of a session while it opens it
#: (:mod:`software.mef3.pymef_window`).
SHADOW_PREFIX = "mefstream-shadow-"
#: Seconds after which an unlocked scratch directory is removed even if a process with
#: its maker's pid runs (the pid was reused) or its name carries no pid.
STALE_AFTER = 60.0


class OwnedDir:
    """A temporary directory locked by this process until :meth:`remove`.

    Parameters
    ----------
    path : str
        The directory.
    fd : int or None
        Its open descriptor holding the lock (None where there is no ``flock``).
    """

    def __init__(self, path: str, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def create(cls, prefix: str, directory: str | None = None) -> OwnedDir:
        """Make and lock ``<directory>/<prefix><pid>-<random>`` (the temporary directory
        by default)."""
        path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=directory)
        fd = None
        if fcntl is not None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if fd is not None:
                    os.close(fd)
                shutil.rmtree(path, ignore_errors=True)
                raise
        return cls(path, fd)

    @property
    def removed(self) -> bool:
        """Whether :meth:`remove` was called."""
        return self.path is None

    def remove(self) -> None:
        """Delete the directory and its contents, then drop the lock (idempotent)."""
        path, self.path = self.path, None
        if path is None:
            return
        shutil.rmtree(path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OwnedDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"<OwnedDir {self.path or 'removed'}>"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_owned(prefix: str, directory: str | None = None,
                stale_after: float = STALE_AFTER) -> int:
    """Remove the scratch directories named ``prefix...`` whose owner is gone.

    Parameters
    ----------
    prefix : str
        Start of the names (``mefstream-shadow-``).
    directory : str, optional
        Where to look (default: the temporary directory).
    stale_after : float
        Seconds after its last change that an unlocked directory is removed even though
        its maker's pid runs (reused) or cannot be read from its name.

    Returns
    -------
    int
        Directories removed.
    """
    if fcntl is None:
        return 0
    directory = directory or tempfile.gettempdir()
    pattern = re.compile(re.escape(prefix) + r"(?:(\d+)-)?")
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
    except OSError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if st.st_uid != os.getuid():
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # OSError: a live owner
            match = pattern.match(name)
            pid = int(match.group(1)) if match and match.group(1) else None
            old = time.time() - st.st_mtime > stale_after
            if not old and (pid is None or _pid_alive(pid)):
                continue   # being made (not locked yet), or of a pid that runs
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
            logger.info("removed %s, left by a process that died", path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
