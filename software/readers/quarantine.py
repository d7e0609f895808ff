"""Sessions that crash reader processes: counted, then refused until their files change.

pymef has no defence against some damage (a block whose header claims 2 GiB makes its
CRC check read past the end of the buffer: SIGSEGV, in plain ``MefReader`` too). Every
crash the reader pool can pin on a task is charged to that task's session; after
``limit`` crashes the session is quarantined: its reads fail at once with an error that
names it, instead of crashing a reader (and delaying every other client) again. Opening
it again lifts the quarantine only if its files changed on disk since (repaired, copied
again)::

    crash pinned on a task of S --> charge(S) --> limit reached: fingerprint(S) kept
    read of S                   --> refused(S) -> CorruptSessionError naming S
    open of S                   --> refused(S, reopening=True): lifted if the
                                    fingerprint differs, else refused

Runs in the server process (thread-safe).
"""
from __future__ import annotations

import logging
import threading

from ..errors import CorruptSessionError
from ..mef3.identity import session_identity

__all__ = ["Quarantine", "fingerprint"]

logger = logging.getLogger(__name__)


def fingerprint(path: str) -> tuple:
    """What identifies every file of the session at ``path`` (name, inode, size, mtime)."""
    return session_identity(path)


class Quarantine:
    """Crash counts per session, and the sessions refused because of them.

    Parameters
    ----------
    limit : int
        Crashes after which a session is quarantined (0: never).
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self._lock = threading.Lock()
        self._crashes: dict[str, int] = {}
        self._held: dict[str, str] = {}   # session -> fingerprint when quarantined

    def crashes(self, session: str) -> int:
        """Crashes charged to ``session`` since it was last let out (or ever)."""
        with self._lock:
            return self._crashes.get(session, 0)

    def sessions(self) -> tuple[str, ...]:
        """The sessions quarantined now."""
        with self._lock:
            return tuple(sorted(self._held))

    def charge(self, session: str) -> bool:
        """Count one crash of ``session``; returns whether it is quarantined now."""
        with self._lock:
            count = self._crashes[session] = self._crashes.get(session, 0) + 1
            if session in self._held or not self.limit or count < self.limit:
                return session in self._held
        mark = fingerprint(session)   # no I/O under the lock
        with self._lock:
            self._held.setdefault(session, mark)
        logger.error("session %s crashed a reader process %d times: quarantined until its "
                     "files change and it is opened again", session, count)
        return True

    def refused(self, session: str, reopening: bool = False) -> CorruptSessionError | None:
        """The error for a task of ``session``, or None when it may run.

        Parameters
        ----------
        session : str
            The session's path.
        reopening : bool
            The task opens the session: a quarantine is lifted if its files changed.
        """
        with self._lock:
            held = self._held.get(session)
            if held is None:
                return None
            count = self._crashes.get(session, 0)
        if reopening and fingerprint(session) != held:
            with self._lock:
                self._held.pop(session, None)
                self._crashes.pop(session, None)
            logger.info("session %s changed on disk: out of quarantine", session)
            return None
        return CorruptSessionError(
            f"session {session!r} made a reader process crash {count} times (pymef cannot "
            f"decode it: the files are damaged), so it is quarantined and not read again. "
            f"Repair it or copy it again, then close it and open it again.")

    def __repr__(self) -> str:
        return f"<Quarantine limit={self.limit} held={len(self._held)}>"
