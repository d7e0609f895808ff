"""Bounds on a TLS server's handshakes: in time, and in number under way at once.

A peer that connects to a TLS server and never finishes its handshake would hold the
server thread serving it, and its descriptor, forever (rpyc's ``SSLAuthenticator`` wraps
the socket with no time limit). :class:`BoundedHandshakes` is the mixin of
:class:`~software.transport.connection.FastThreadedServer` that gives each handshake
``handshake_timeout`` seconds (the server sets it on the socket before authenticating)
and closes a new connection at once while ``max_handshakes`` are under way.
"""
from __future__ import annotations

import socket
import threading

__all__ = ["BoundedHandshakes"]


class BoundedHandshakes:
    """Mixin of an rpyc ``Server`` with an authenticator: handshakes bounded in number.

    Call :meth:`_bound_handshakes` from ``__init__``; the serving thread calls
    :meth:`_handshake_done` once its handshake ended (either way) and applies
    :attr:`handshake_timeout` to the socket while it authenticates.

    Attributes
    ----------
    handshaking : int
        Connections whose handshake is under way.
    """

    #: Default of ``handshake_timeout`` (seconds).
    HANDSHAKE_TIMEOUT = 10.0
    #: Default of ``max_handshakes``.
    MAX_HANDSHAKES = 64

    def _bound_handshakes(self, handshake_timeout: float, max_handshakes: int) -> None:
        """Check and keep the bounds (``ValueError`` naming a bad one)."""
        if not float(handshake_timeout) > 0:
            raise ValueError(f"handshake_timeout must be > 0 seconds; {handshake_timeout!r} "
                             f"is invalid (default {self.HANDSHAKE_TIMEOUT:g}).")
        if int(max_handshakes) < 1:
            raise ValueError(f"max_handshakes must be >= 1; {max_handshakes!r} is invalid "
                             f"(default {self.MAX_HANDSHAKES}).")
        self.handshake_timeout = float(handshake_timeout)
        self.max_handshakes = int(max_handshakes)
        self.handshaking = 0
        self._handshake_lock = threading.Lock()
        self._turned_away = 0   # connections closed since the last WARNING

    def _accept_method(self, sock: socket.socket) -> None:
        """Runs in the accepting thread: serve ``sock`` in a thread of its own, unless too
        many handshakes are under way already (then it is closed at once)."""
        if self.authenticator:
            with self._handshake_lock:
                full = self.handshaking >= self.max_handshakes
                if not full:
                    self.handshaking += 1
                    self._turned_away = 0
                else:
                    self._turned_away += 1
                    first = self._turned_away == 1
            if full:
                if first:
                    self.logger.warning(
                        "%d connections are in their TLS handshake (max_handshakes); "
                        "closing new ones until some finish or time out after %g s",
                        self.max_handshakes, self.handshake_timeout)
                self.clients.discard(sock)
                try:
                    sock.close()
                except OSError:
                    pass
                return
        super()._accept_method(sock)

    def _handshake_done(self) -> None:
        """A handshake counted by :meth:`_accept_method` ended (any thread)."""
        with self._handshake_lock:
            self.handshaking -= 1
