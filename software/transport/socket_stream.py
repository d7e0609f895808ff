"""Bytes on a socket for the fast transport: TCP_NODELAY, ``sendall``, bounded receives.

:class:`FastSocketStream` is the bottom layer of :mod:`software.transport` (see the
sketch there): it moves bytes only, and knows nothing of frames or brine. What it reads
is sized by the frame layer (:class:`~software.transport.framing.FastChannel`), from numbers a
peer sends, so memory is committed as data arrives, never for what is merely announced.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from rpyc.core.stream import SocketStream
from rpyc.lib import Timeout
from rpyc.lib.compat import poll

__all__ = ["FastSocketStream", "keep_alive"]

logger = logging.getLogger(__name__)

_MSG_WAITALL = getattr(socket, "MSG_WAITALL", 0)


def format_address(peer: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a ``getpeername()`` value."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else peer[0]
        return f"{host}:{peer[1]}"
    return str(peer) or "a local peer"


def keep_alive(sock: socket.socket, idle: int = 1, interval: int = 1, count: int = 3) -> bool:
    """Switch on TCP keep-alive with short timers: a peer gone from the network (no FIN,
    no RST) is noticed after about ``idle + interval * count`` seconds of silence.

    Parameters
    ----------
    sock : socket.socket
        A TCP socket (anything else is left alone).
    idle, interval, count : int
        Seconds of silence before the first probe, seconds between probes, and unanswered
        probes after which the kernel ends the connection (Linux; elsewhere the system's
        timers apply).

    Returns
    -------
    bool
        Whether keep-alive is on.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                            ("TCP_KEEPCNT", count)):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, int(value))
    except OSError as exc:  # pragma: no cover - exotic platforms
        logger.debug("could not set TCP keep-alive: %s", exc)
        return False
    return True


class FastSocketStream(SocketStream):
    """RPyC socket stream with TCP_NODELAY, ``sendall`` and ``recv_into``.

    Parameters
    ----------
    sock : socket.socket
        A connected socket (plain TCP, ``ssl.SSLSocket`` or AF_UNIX). On TCP
        sockets TCP_NODELAY is switched on.

    Notes
    -----
    Like :class:`rpyc.core.stream.SocketStream`, I/O errors and a peer that
    closes the connection close the stream and raise ``EOFError``.
    ``close``, ``closed`` and ``fileno`` are inherited; ``poll`` also reports
    data that TLS has already decrypted and buffered.

    OpenSSL forbids ``SSL_read`` and ``SSL_write`` on one connection from two
    threads at once, which is exactly what a serving thread plus synchronous
    calls do (measured: ~3 % of first requests silently lost with TLS 1.3).
    TLS sockets are therefore switched to non-blocking mode, every TLS call
    runs under a per-stream lock and waiting for the socket happens outside
    the lock.
    """

    __slots__ = ("_tls_lock", "_tls_peeked", "peer")
    TLS_SEND_CHUNK = 1024 * 1024
    #: Largest buffer allocated ahead of the data that will fill it (see :meth:`read`).
    READ_CHUNK = 4 * 1024 * 1024
    _TLS_WAIT = 0.5  # seconds; re-check period while TLS waits for the socket

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._tls_lock: threading.Lock | None = None
        self._tls_peeked = b""
        try:
            #: The peer's address for log messages (``host:port``), kept after closing.
            self.peer = format_address(sock.getpeername())
        except OSError:  # not connected (any more)
            self.peer = "an unknown peer"
        if isinstance(sock, ssl.SSLSocket):
            self._tls_lock = threading.Lock()
            sock.settimeout(0.0)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:  # pragma: no cover - exotic platforms
                logger.debug("could not set TCP_NODELAY: %s", exc)

    def _tls_call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run one non-blocking TLS operation under the stream lock."""
        assert self._tls_lock is not None
        while True:
            with self._tls_lock:
                try:
                    return func(*args)
                except ssl.SSLWantReadError:
                    mode = "r"
                except ssl.SSLWantWriteError:
                    mode = "w"
            poller = poll()  # rpyc's portable poll/select wrapper (seconds)
            poller.register(self.sock.fileno(), mode)
            poller.poll(self._TLS_WAIT)

    def poll(self, timeout: float | Timeout | None) -> bool:
        """Return whether data is readable within ``timeout`` seconds.

        On TLS only application data counts: a readable socket that carries
        just TLS records such as TLS 1.3 session tickets is not reported
        (otherwise the next ``read`` would block until real data arrives).

        Without a time limit (``None``, or an infinite ``Timeout``: a server's
        ``serve_all``) a plain socket answers True at once: the read that follows
        blocks until data arrives just as the poll would have, one system call (and one
        release of the GIL) fewer per message. An end of connection shows up as that
        read's ``EOFError``.
        """
        try:
            if self._tls_lock is None:
                if timeout is None or (type(timeout) is Timeout and not timeout.finite):
                    return True
                return super().poll(timeout)
            timeout = Timeout(timeout)
            while not self._tls_peeked:
                with self._tls_lock:
                    if self.sock.pending() > 0:
                        return True
                if not super().poll(timeout):
                    return False
                with self._tls_lock:  # peek one byte without blocking
                    try:
                        self._tls_peeked = self.sock.recv(1)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        continue  # no application data (yet)
                if not self._tls_peeked:
                    self.close()
                    raise EOFError("connection closed by peer")
            return True
        except (OSError, ValueError) as exc:
            # e.g. Server.close() closed the socket under us (fileno -1):
            # report end of connection, not an error
            if self.closed or self.sock.fileno() < 0 or self._tls_lock is not None:
                self.close()
                raise EOFError(exc) from exc
            raise

    def _fill(self, view: memoryview) -> None:
        """Fill ``view`` completely with ``recv_into``, or raise ``EOFError``."""
        sock = self.sock
        tls = self._tls_lock is not None
        got, total = 0, len(view)
        while got < total:
            try:
                if tls:
                    n = self._tls_call(sock.recv_into, view[got:])
                else:
                    n = sock.recv_into(view[got:])
            except socket.timeout:
                continue
            except (OSError, ValueError) as exc:  # ValueError: closed TLS socket
                self.close()
                raise EOFError(exc) from exc
            if not n:
                self.close()
                raise EOFError("connection closed by peer")
            got += n

    def read(self, count: int) -> bytes:
        """Read exactly ``count`` bytes, or raise ``EOFError``.

        Plain sockets first try one ``recv(count, MSG_WAITALL)``: the kernel
        copies straight into the returned bytes object, whose pages are committed
        only as the kernel writes them. Otherwise (TLS, socket timeouts, signals, a
        peer that sends part and stops) the rest is read with ``recv_into`` into
        chunks of at most :attr:`READ_CHUNK` bytes, joined at the end (the one copy
        that the TLS path always made).

        Either way memory follows the data received, not ``count``, which a peer
        chooses: one that announces 200 MiB, sends 1 kB and closes costs about 1 kB
        (at most ``READ_CHUNK`` more). Bounding ``count`` itself is the frame layer's
        job (``FastChannel.max_frame``).
        """
        if count <= 0:
            return b""
        first = b""
        if _MSG_WAITALL and self._tls_lock is None:
            try:
                first = self.sock.recv(count, _MSG_WAITALL)
            except socket.timeout:
                pass
            except OSError as exc:
                self.close()
                raise EOFError(exc) from exc
            else:
                if len(first) == count:
                    return first
                if not first:
                    self.close()
                    raise EOFError("connection closed by peer")
        elif self._tls_peeked:  # the byte poll() took to check for data
            first, self._tls_peeked = self._tls_peeked, b""
            if count == 1:
                return first
        parts, got = [first], len(first)
        while got < count:  # the rest in chunks: memory grows as data arrives
            chunk = bytearray(min(count - got, self.READ_CHUNK))
            self._fill(memoryview(chunk))
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def peek(self, count: int) -> bytes:
        """Up to ``count`` bytes already received, left in the socket; b"" if unsupported.

        Waits for at least one byte. TLS sockets cannot peek (b"").
        """
        if self._tls_lock is not None:
            return b""
        try:
            return self.sock.recv(count, socket.MSG_PEEK)
        except (OSError, ValueError):
            return b""  # the next read reports the problem

    def drain(self, seconds: float) -> None:
        """Read and drop what the peer sends until it closes or ``seconds`` pass; close.

        Leaves a peer that waits for an answer (a TLS client's handshake) waiting until
        it gives up by itself; memory stays at one 64 KiB read.
        """
        deadline = time.monotonic() + seconds
        try:
            while self._tls_lock is None:
                left = deadline - time.monotonic()
                if left <= 0 or not super().poll(left) or not self.sock.recv(65536):
                    break
        except (OSError, ValueError):
            pass  # reset or closed: done either way
        self.close()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` (no copies), or raise ``EOFError``."""
        sock = self.sock
        try:
            if self._tls_lock is None:
                sock.sendall(data)
                return
            octets = memoryview(data).cast("B")
            step = self.TLS_SEND_CHUNK
            sent, total = 0, len(octets)
            while sent < total:
                sent += self._tls_call(sock.send, octets[sent:sent + step])
        except (OSError, ValueError) as exc:
            self.close()
            raise EOFError(exc) from exc
