"""Sessions kept warm after their last client left: blocks cached, readers still open.

Tools run one after another (a plot, an export, an analysis) each open the same session,
read it and close it. With ``keep_seconds`` > 0 the registry hands a session whose last
user released it to :class:`WarmSessions` instead of closing it: its blocks stay in the
shared cache (evicted by LRU within the budget like any other) and the reader processes
keep it open. An ``acquire`` within that time takes it back, after checking that no file
of the session changed on disk since it was opened (:func:`session_identity`); a changed
one is closed and opened anew, so nothing stale is served. When the time is up the
session is closed (its blocks dropped, the readers told)::

    release (last user) --> park(recording) --- keep_seconds ---> recording.close()
    acquire ------------> take(path) --same files--> the same Recording, cache warm
                                     --changed----> close it; open anew
"""
from __future__ import annotations

import logging
import threading
import time

from ..mef3.identity import session_identity
from .recording import Recording

__all__ = ["WarmSessions", "session_identity"]

logger = logging.getLogger(__name__)


class WarmSessions:
    """Recordings whose last user left, each closed ``keep_seconds`` after it was parked.

    Parameters
    ----------
    keep_seconds : float
        How long a released session stays open; 0 closes it at once (no thread).

    Notes
    -----
    Thread-safe. One thread (``keep-warm``, started with the first parked session) closes
    the sessions whose time is up.
    """

    def __init__(self, keep_seconds: float = 0.0) -> None:
        self.keep_seconds = float(keep_seconds)
        self.reused = 0          # sessions taken back warm
        self.expired = 0         # ... closed because their time was up
        self.stale = 0           # ... closed because a file changed
        self._parked: dict[str, tuple[Recording, bytes, float]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def paths(self) -> tuple[str, ...]:
        """Paths of the sessions kept warm now."""
        with self._cond:
            return tuple(sorted(self._parked))

    def park(self, recording: Recording, digest: bytes) -> None:
        """Keep ``recording`` (opened with the password of ``digest``) for ``keep_seconds``,
        or close it now when keeping is off or this object is closed."""
        old = None
        with self._cond:
            keep = self.keep_seconds > 0 and not self._closed \
                and getattr(recording, "identity", None) is not None
            if keep:
                old = self._parked.pop(recording.path, (None,))[0]
                self._parked[recording.path] = (recording, digest,
                                                time.monotonic() + self.keep_seconds)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._expire, name="keep-warm",
                                                    daemon=True)
                    self._thread.start()
                self._cond.notify_all()
        if not keep:
            recording.close()
        elif old is not None and old is not recording:
            old.close()
        else:
            logger.debug("keeping %s warm for %g s", recording.path, self.keep_seconds)

    def take(self, path: str, digest: bytes) -> Recording | None:
        """The recording of ``path`` kept warm, if it was opened with the same password and
        none of its files changed since; otherwise None (a stale one is closed)."""
        with self._cond:
            entry = self._parked.pop(path, None)
        if entry is None:
            return None
        recording, known, _ = entry
        if known != digest:
            recording.close()   # opened with another password: open it again to check
            return None
        if session_identity(path) != recording.identity:
            with self._cond:
                self.stale += 1
            logger.info("%s changed on disk while kept warm: opening it anew", path)
            recording.close()
            return None
        with self._cond:
            self.reused += 1
        logger.debug("%s taken back warm", path)
        return recording

    def _expire(self) -> None:
        """Runs in the ``keep-warm`` thread: close the sessions whose time is up."""
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                due = [p for p, (_, _, t) in self._parked.items() if t <= now]
                doomed = [self._parked.pop(p)[0] for p in due]
                self.expired += len(doomed)
                if not doomed:
                    nxt = min((t for _, _, t in self._parked.values()), default=None)
                    self._cond.wait(None if nxt is None else max(nxt - now, 0.001))
                    continue
            for recording in doomed:
                try:
                    recording.close()
                except Exception:  # noqa: BLE001 - keep expiring the others
                    logger.exception("closing %s after keeping it warm", recording.path)

    def close(self) -> None:
        """Close every session kept warm and stop the thread (idempotent)."""
        with self._cond:
            self._closed = True
            doomed = [r for r, _, _ in self._parked.values()]
            self._parked.clear()
            self._cond.notify_all()
            thread = self._thread
        for recording in doomed:
            recording.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def __enter__(self) -> WarmSessions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<WarmSessions {state} keep={self.keep_seconds:g}s "
                f"{len(self._parked)} kept, {self.reused} reused>")
