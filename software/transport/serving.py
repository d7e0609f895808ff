"""Serving a client's connection: promptly (callbacks within ~1 ms), and noticing a dead peer.

:class:`ServingThread` serves a connection in the background without sleeping;
:class:`Heartbeat` pings a connection that has been silent and tells when its peer stopped
answering (a server gone from the network sends no FIN: without pings a client would wait
for it forever); :func:`end_connection` then shuts the socket so every waiter wakes.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import rpyc
from rpyc.core import consts

__all__ = ["Heartbeat", "ServingThread", "end_connection"]

logger = logging.getLogger(__name__)


def end_connection(conn: Any, why: str) -> None:
    """Shut the socket of a connection whose peer is gone (any thread).

    Every thread reading or waiting on the connection wakes with an ``EOFError``; a
    :class:`~software.client.protocol.ClientConnection` also keeps ``why`` for its errors.
    A peer that is gone cannot take part in a polite close.
    """
    declare = getattr(conn, "declare_gone", None)
    if declare is not None:
        declare(why)
        return
    logger.warning("the peer of %r is gone: %s", conn, why)
    try:
        conn._channel.stream.sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError, EOFError):
        pass  # closed already (RPyC's closed stream raises EOFError)


class Heartbeat:
    """Pings a connection that has been silent, and tells when its peer stopped answering.

    Call :meth:`check` now and then from the thread that serves the connection. After
    ``timeout / 4`` seconds without any message from the peer, and no call of this end in
    progress, it sends a ping (RPyC's ``HANDLE_PING``, answered by any RPyC peer); the
    peer is gone when nothing at all came
    for ``timeout`` seconds while that ping waited and no other call of this end was
    outstanding. A call in progress may legitimately keep the peer's connection thread
    busy for longer (a long read): then it is not judged (TCP keep-alive still notices a
    peer gone from the network).

    Parameters
    ----------
    conn : rpyc.Connection
        The connection. A :class:`~software.transport.connection.FastConnection` tells when
        it last received a message; for another, call :meth:`note` when one arrived.
    timeout : float
        Seconds of silence after which the peer is gone.
    """

    def __init__(self, conn: Any, timeout: float) -> None:
        if not float(timeout) > 0:
            raise ValueError(f"the liveness timeout must be > 0 seconds; {timeout!r} is "
                             f"invalid.")
        self._conn = conn
        self.timeout = float(timeout)
        self._ping: Any = None
        self._sent = 0.0
        self._heard = time.monotonic()

    def note(self) -> None:
        """A message arrived (for connections that do not track it themselves)."""
        self._heard = time.monotonic()

    def _last_heard(self) -> float:
        return max(self._heard, getattr(self._conn, "last_received", 0.0))

    def check(self) -> str | None:
        """Ping if the peer has been silent; return why it is gone, or None.

        Raises
        ------
        EOFError
            The connection is closed already.
        """
        now = time.monotonic()
        heard = self._last_heard()
        ping = self._ping
        if ping is not None and ping.ready:
            self._ping = ping = None
        calls = len(getattr(self._conn, "_request_callbacks", ()))
        if ping is None:
            # a call of ours in progress: its answer says more than a ping queued behind it
            if calls == 0 and now - heard >= self.timeout / 4:
                self._ping = self._conn.async_request(consts.HANDLE_PING, "")
                self._sent = now
            return None
        if now - heard < self.timeout or now - self._sent < self.timeout / 2:
            return None
        if calls > 1:
            return None  # a call of ours is outstanding: the peer may be busy with it
        return f"no answer for {now - heard:.1f} s (not even to a ping)"


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
    server_timeout : float, optional
        Seconds of silence after which the peer is deemed gone (see :class:`Heartbeat`):
        the thread then ends the connection (:func:`end_connection`), so that every call
        waiting on it fails at once. None: never.

    Examples
    --------
    >>> with ServingThread(conn):                        # doctest: +SKIP
    ...     conn.root.subscribe(on_block)
    """

    def __init__(self, conn: rpyc.Connection, poll_timeout: float = 0.05,
                 name: str | None = None, server_timeout: float | None = None) -> None:
        if poll_timeout <= 0:
            raise ValueError("poll_timeout must be > 0")
        self._conn = conn
        self._poll_timeout = poll_timeout
        self._beat = None if server_timeout is None else Heartbeat(conn, server_timeout)
        self._stop = threading.Event()
        connid = getattr(conn, "_config", {}).get("connid", "conn")
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=name or f"rpyc-serving-{connid}")
        self._thread.start()

    def _run(self) -> None:
        conn = self._conn
        beat = self._beat
        try:
            while not self._stop.is_set() and not conn.closed:
                conn.serve(self._poll_timeout)
                if beat is not None:
                    why = beat.check()
                    if why is not None:
                        end_connection(conn, why)
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
