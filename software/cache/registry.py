"""Opened sessions, shared by every connection; paths confined to the data root.

A path is resolved against the data root (symlinks followed) and refused when it, or any
file or directory inside the session (a ``.tdat`` linked to a session elsewhere), leaves
it. The first ``acquire`` of a session reads its metadata in a reader process; later ones
share the same :class:`~software.cache.recording.Recording` (and its cached blocks) after
checking the password, and the session is closed when its last user releases it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from concurrent.futures import Future, wait

from ..errors import (
    InvalidTypeError,
    NotMefSessionError,
    OutsideDataRootError,
    SessionError,
    WrongPasswordError,
)
from ..readers.pool import ReaderPool
from ..validation import as_password
from .blocks import BlockCache
from .recording import Recording
from .warm import WarmSessions, session_identity

logger = logging.getLogger(__name__)


def inside(real: str, root: str) -> bool:
    """Whether the resolved path ``real`` is ``root`` or lies under it (whole path
    components: ``/data-private`` is not under ``/data``)."""
    return os.path.commonpath([real, root]) == root


def escaping_link(session: str, root: str) -> str | None:
    """The first link inside the session directory ``session`` that resolves outside
    ``root`` (its path relative to the session), or None.

    Every file a reader opens is reached through the session directory; links to
    directories are followed (each real directory once) so that the files under them are
    checked too.
    """
    seen = set()
    pending = [session]
    while pending:
        here = pending.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue   # unreadable: the reader reports it
        for entry in entries:
            try:
                link, is_dir = entry.is_symlink(), entry.is_dir()
            except OSError:
                continue
            if link:
                real = os.path.realpath(entry.path)
                if not inside(real, root):
                    return os.path.relpath(entry.path, session)
            else:
                real = entry.path
            if is_dir and real not in seen:
                seen.add(real)
                pending.append(entry.path)
    return None


def _digest(password: str | None) -> bytes:
    return hashlib.sha256(b"\0" if password is None else b"\1" + password.encode()).digest()


class SessionRegistry:
    """The sessions open on this server.

    Parameters
    ----------
    data_root : str
        Directory that every opened path must lie in.
    pool, cache
        Shared reader processes and block cache.
    block_seconds : float
        Cache block length handed to each :class:`Recording`.
    open_timeout : float
        Seconds to wait for a reader process to read a session's metadata.
    keep_warm_seconds : float
        How long a session stays open (blocks cached) after its last user released it,
        to be reused if it is opened again unchanged (:mod:`software.cache.warm`).
    """

    def __init__(self, data_root: str, pool: ReaderPool, cache: BlockCache,
                 block_seconds: float = 10.0,
                 open_timeout: float = 60.0, keep_warm_seconds: float = 0.0) -> None:
        self.data_root = os.path.realpath(data_root)
        self._pool = pool
        self._cache = cache
        self._block_seconds = block_seconds
        self._open_timeout = open_timeout
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Recording, bytes, int]] = {}
        self._opening: dict[str, Future] = {}
        self.warm = WarmSessions(keep_warm_seconds)

    def display_path(self, real_path: str) -> str:
        """The path relative to the data root, as clients should see it."""
        return os.path.relpath(real_path, self.data_root)

    def resolve(self, path: object) -> str:
        """Return the real absolute path of ``path`` after checking it is a session in the root.

        Raises
        ------
        InvalidTypeError
            ``path`` is not a str (or os.PathLike).
        OutsideDataRootError
            The path (after ``..`` and symlinks) leaves the data root.
        NotMefSessionError
            Nothing is there, or it is not a ``.mefd`` directory.
        """
        if type(path) is not str and isinstance(path, (str, os.PathLike)):
            path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        if not isinstance(path, str):
            raise InvalidTypeError(f"path must be a str naming a .mefd session under the data "
                                   f"root; a value of type {type(path).__name__} is not. Pass "
                                   f"e.g. path='recording.mefd'.")
        if not path or "\0" in path:
            raise NotMefSessionError(f"path must be a non-empty string naming a .mefd session "
                                     f"under the data root; {path!r} is not.")
        joined = path if os.path.isabs(path) else os.path.join(self.data_root, path)
        real = os.path.realpath(joined)
        if not inside(real, self.data_root):
            raise OutsideDataRootError(
                f"path={path!r} resolves outside the server's data root; only sessions under "
                f"the data root can be opened. Pass a path relative to it, or start the "
                f"server with --data-root set to a directory that contains the session.")
        if not os.path.isdir(real):
            raise NotMefSessionError(f"path={path!r}: no such session under the data root; "
                                     f"check the name (open_file takes paths relative to the "
                                     f"data root).")
        if not real.endswith(".mefd"):
            raise NotMefSessionError(f"path={path!r} is a directory but not a MEF3 session "
                                     f"(its name must end in '.mefd').")
        return real

    def acquire(self, path: object, password: str | None = None) -> Recording:
        """Open (or share) the session at ``path``; pair every call with :meth:`release`.

        The first caller for a path opens it; callers arriving meanwhile wait (without
        spinning) on that attempt's future and then share the session, or, if the attempt
        failed, make their own. Runs in the calling connection's thread.

        Raises
        ------
        WrongPasswordError
            The session is open with another password, or ``password`` does not open it.
        OutsideDataRootError
            The path, or a file of the session (a link), resolves outside the data root.
        SessionError
            The reader process could not open the session (its message names ``path``).
        """
        real = self.resolve(path)
        password = as_password("password", password)  # before pymef: it overflows on long ones
        digest = _digest(password)
        while True:
            with self._lock:
                entry = self._open.get(real)
                if entry is not None:
                    recording, known, users = entry
                    if recording.info.encrypted and not hmac.compare_digest(known, digest):
                        raise WrongPasswordError(
                            f"the password given does not open {path!r}: pass the level-2 "
                            f"(data) password of the session as password=...")
                    self._open[real] = (recording, known, users + 1)
                    return recording
                attempt = self._opening.get(real)
                if attempt is None:
                    attempt = self._opening[real] = Future()
                    break
            # another caller is opening it: wait for that attempt to end, then look again
            # (shared if it succeeded; our own attempt, with our password, if it failed)
            wait([attempt])
        try:
            recording = self._open_new(real, password, path)
            with self._lock:
                self._open[real] = (recording, digest, 1)
            logger.info("opened %s: %d channels", self.display_path(real),
                        len(recording.info.channels))
            return recording
        finally:  # whatever happened, the attempt is over: waiters look again
            with self._lock:
                self._opening.pop(real, None)
            attempt.set_result(None)

    def _open_new(self, real: str, password: str | None, path: object) -> Recording:
        """Read the metadata of ``real`` in a reader process and make its Recording.

        Raises
        ------
        OutsideDataRootError
            A file or directory inside the session links outside the data root.
        """
        link = escaping_link(real, self.data_root)
        if link is not None:
            raise OutsideDataRootError(
                f"path={path!r}: its entry {link!r} is a link that resolves outside the "
                f"server's data root; every file of a session must lie under the data "
                f"root. Copy the files into the session instead of linking them, or start "
                f"the server with --data-root set to a directory that contains them.")
        warm = self.warm.take(real, _digest(password))
        if warm is not None:
            return warm
        identity = session_identity(real) if self.warm.keep_seconds > 0 else None
        inspecting = self._pool.inspect(real, password)
        warming = self._pool.open_everywhere(real, password)
        try:
            info = inspecting.result(timeout=self._open_timeout)
        except SessionError as exc:
            if exc.args:  # name the path as the client wrote it, not the server's layout
                raise type(exc)(str(exc.args[0]).replace(real, str(path))) from None
            raise
        recording = Recording(real, password, info, self._pool, self._cache,
                              self._block_seconds)
        recording.identity = identity
        # the other readers opened it meanwhile, so that the first read does not wait for
        # that (up to ~50 ms per reader); their errors are the reads' to report
        wait(warming, timeout=self._open_timeout)
        return recording

    def release(self, recording: Recording) -> None:
        """Give back one use of ``recording``; the last release closes it."""
        with self._lock:
            entry = self._open.get(recording.path)
            if entry is None or entry[0] is not recording:
                return
            rec, digest, users = entry
            if users > 1:
                self._open[recording.path] = (rec, digest, users - 1)
                return
            del self._open[recording.path]
        self.warm.park(recording, digest)   # closes it unless kept warm

    def open_paths(self) -> tuple[str, ...]:
        """Display paths of every open session."""
        with self._lock:
            return tuple(sorted(self.display_path(p) for p in self._open))

    def close(self) -> None:
        """Close every session (idempotent)."""
        self.warm.close()
        with self._lock:
            entries = list(self._open.values())
            self._open.clear()
        for recording, _, _ in entries:
            recording.close()
