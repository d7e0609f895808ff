"""A background thread that serves one connection promptly (callbacks within ~1 ms)."""
from __future__ import annotations

import logging
import threading

import rpyc

__all__ = ["ServingThread"]

logger = logging.getLogger(__name__)


class ServingThread:
    """Daemon thread that serves an RPyC connection without sleeping.

    Replaces ``rpyc.BgServingThread`` (0.1 s sleep per serve) so that
    server->client callbacks run within about a millisecond. Synchronous
    calls from other threads keep working: RPyC's receive lock and condition
    hand replies to whichever thread is waiting for them.

    Parameters
    ----------
    conn : rpyc.Connection
        The connection to serve; it is not closed by :meth:`close`.
    poll_timeout : float, optional
        Longest single ``conn.serve`` wait in seconds; bounds how long
        :meth:`close` may take. Data wakes the thread immediately.
    name : str, optional
        Thread name (default ``"rpyc-serving-<connid>"``).

    Examples
    --------
    >>> with ServingThread(conn):                        # doctest: +SKIP
    ...     conn.root.subscribe(on_block)
    """

    def __init__(self, conn: rpyc.Connection, poll_timeout: float = 0.05,
                 name: str | None = None) -> None:
        if poll_timeout <= 0:
            raise ValueError("poll_timeout must be > 0")
        self._conn = conn
        self._poll_timeout = poll_timeout
        self._stop = threading.Event()
        connid = getattr(conn, "_config", {}).get("connid", "conn")
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=name or f"rpyc-serving-{connid}")
        self._thread.start()

    def _run(self) -> None:
        conn = self._conn
        try:
            while not self._stop.is_set() and not conn.closed:
                conn.serve(self._poll_timeout)
        except EOFError:
            logger.debug("%s: connection closed", self._thread.name)
        except Exception:
            if self._stop.is_set() or conn.closed:
                logger.debug("%s: error after close", self._thread.name, exc_info=True)
            else:
                logger.exception("%s: serving failed", self._thread.name)
        logger.debug("%s: stopped", self._thread.name)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the serving loop ended."""
        return self._stop.is_set() or not self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Stop serving and join the thread (idempotent).

        Called from the serving thread itself (e.g. inside a callback) it only
        requests the stop.
        """
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> ServingThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._thread.is_alive():
            state = "stopping" if self._stop.is_set() else "serving"
        else:
            state = "closed"
        return f"<ServingThread {self._thread.name!r} {state}>"
