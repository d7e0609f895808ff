"""Fast RPyC transport: uncompressed, copy-light framing over TCP_NODELAY sockets.

Stock RPyC 6 is tuned for small messages on slow links. For bulk MEF3 sample
blocks on loopback it is the bottleneck. Measured on a 2-core box (loopback
itself moves about 2.7 GB/s):

* every frame over 3 kB is zlib-compressed: 40-60 MB/s ceiling for 1-80 MiB;
* with compression off, Nagle's algorithm stalls small replies by 44 ms;
* ``SocketStream.write`` re-slices ``data = data[count:]`` after each 64 kB
  ``send`` (quadratic): 80 MiB takes 15 s;
* ``BgServingThread`` sleeps 0.1 s between serves: callbacks arrive at ~10/s.

What this module changes, always through RPyC's own extension points::

    stock:  Channel(zlib > 3 kB) -> SocketStream(send 64 kB, re-slice; Nagle)
    here:   FastChannel(no zlib; header | 4 MiB memoryview slices | b"\n")
              -> FastSocketStream(TCP_NODELAY, sendall, recv MSG_WAITALL /
                                  recv_into; TLS calls serialised)

The wire format is unchanged (``!LB`` header, payload, ``b"\n"``; compressed
flag 0), so stock clients and servers interoperate with ours, and frames that
a stock peer compresses are still decompressed. :class:`FastThreadedServer`
and :func:`fast_connect` build connections on these classes;
:class:`ServingThread` serves callbacks with no sleep between polls.

For frames of tens of MB the remaining cost is outside the transport: RPyC
and brine copy a payload about four times (``dump``, header concatenation,
``data[1:]``, ``load``), each into freshly ``mmap``-ed, page-faulting memory
(~2 GB/s here). glibc's ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``
(or ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) in the process environment
remove most of that; see ``benchmarks/transport_probe.py``.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import rpyc
from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream
from rpyc.lib import Timeout
from rpyc.lib.compat import poll
from rpyc.utils.server import ThreadedServer

__all__ = [
    "FastSocketStream",
    "FastChannel",
    "FastThreadedServer",
    "fast_connect",
    "ServingThread",
]

logger = logging.getLogger(__name__)

_MSG_WAITALL = getattr(socket, "MSG_WAITALL", 0)


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

    __slots__ = ("_tls_lock", "_tls_peeked")
    TLS_SEND_CHUNK = 1024 * 1024
    _TLS_WAIT = 0.5  # seconds; re-check period while TLS waits for the socket

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._tls_lock: threading.Lock | None = None
        self._tls_peeked = b""
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
        """
        try:
            if self._tls_lock is None:
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
        copies straight into the returned bytes object. Otherwise (TLS, socket
        timeouts, signals) the rest is read with ``recv_into`` into one
        preallocated bytearray. No chunk lists, no joins.
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
        buf = bytearray(count)
        view = memoryview(buf)
        view[:len(first)] = first
        self._fill(view[len(first):])
        return bytes(buf)

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


class FastChannel(Channel):
    """RPyC channel that never compresses and avoids large-frame copies.

    Parameters
    ----------
    stream : rpyc.core.stream.Stream
        Usually a :class:`FastSocketStream`.
    compress : bool, optional
        Ignored (accepted for signature compatibility); frames are always sent
        uncompressed. Compressed frames from a stock peer are decompressed.

    Notes
    -----
    Frames stay ``!LB`` header (length, compressed flag 0), payload, ``b"\\n"``.
    Frames up to ``SMALL_FRAME`` bytes go out in one write; larger ones as the
    header, ``MAX_SEND_CHUNK``-sized memoryview slices of the payload and the
    flusher, without concatenation.
    """

    __slots__ = ()
    MAX_SEND_CHUNK = 4 * 1024 * 1024
    SMALL_FRAME = 64 * 1024

    def __init__(self, stream: Any, compress: bool = False) -> None:
        super().__init__(stream, compress=False)

    def recv(self) -> bytes:
        """Receive the next frame's payload (decompressed if flagged)."""
        read = self.stream.read
        length, compressed = self.FRAME_HEADER.unpack(read(self.FRAME_HEADER.size))
        flush_size = len(self.FLUSHER)
        if length <= self.SMALL_FRAME:  # one read; slicing a small frame is cheap
            data = read(length + flush_size)[:length]
        else:  # no full-size slice copy: payload, then the flusher
            data = read(length)
            read(flush_size)
        if compressed:
            data = zlib.decompress(data)
        return data

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one uncompressed frame. Blocks until written."""
        view = data if isinstance(data, memoryview) else memoryview(data)
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        size = view.nbytes
        header = self.FRAME_HEADER.pack(size, 0)
        write = self.stream.write
        if size <= self.SMALL_FRAME:
            write(b"".join((header, view, self.FLUSHER)))
            return
        write(header)
        step = self.MAX_SEND_CHUNK
        for start in range(0, size, step):
            write(view[start:start + step])
        write(self.FLUSHER)


class FastThreadedServer(ThreadedServer):
    """:class:`rpyc.utils.server.ThreadedServer` on the fast transport.

    Identical to ``ThreadedServer`` (same parameters, authenticators such as
    ``SSLAuthenticator``, credentials and logging) except that each client
    connection runs over ``FastChannel(FastSocketStream(sock))``.
    """

    def _serve_client(self, sock: socket.socket, credentials: Any) -> None:
        try:
            addrinfo, sockname = sock.getpeername(), sock.getsockname()
        except OSError as exc:  # closed by Server.close() before we got here
            self.logger.info(f"client gone before serving: {exc}")
            return
        if credentials:
            self.logger.info(f"welcome {addrinfo} ({credentials!r})")
        else:
            self.logger.info(f"welcome {addrinfo}")
        try:
            config = dict(self.protocol_config, credentials=credentials,
                          endpoints=(sockname, addrinfo), logger=self.logger)
            conn = self.service._connect(FastChannel(FastSocketStream(sock)), config)
            self._handle_connection(conn)
        finally:
            self.logger.info(f"goodbye {addrinfo}")


def fast_connect(host: str, port: int, service: Any = rpyc.VoidService,
                 config: Mapping[str, Any] | None = None, *,
                 keyfile: str | None = None, certfile: str | None = None,
                 ca_certs: str | None = None, timeout: float = 3.0,
                 check_hostname: bool = False) -> rpyc.Connection:
    """Connect to an RPyC server over the fast transport (optionally TLS).

    Parameters
    ----------
    host, port : str, int
        Server address.
    service : rpyc.Service class or instance, optional
        Local service exposed to the server (default ``rpyc.VoidService``).
    config : mapping, optional
        RPyC protocol config; copied, never mutated.
    keyfile, certfile : str, optional
        Client key and certificate for TLS (``keyfile`` needs ``certfile``).
    ca_certs : str, optional
        CA bundle; when given the server certificate must verify against it.
    timeout : float, optional
        Connect (and TLS handshake) timeout in seconds; the socket is blocking
        afterwards (call timeouts are RPyC's ``sync_request_timeout``).
    check_hostname : bool, optional
        Also match the server certificate against ``host`` (needs
        ``ca_certs``). Off by default, like ``rpyc.ssl_connect``.

    Returns
    -------
    rpyc.Connection
        Works against stock RPyC servers and :class:`FastThreadedServer`.
    """
    if keyfile is not None and certfile is None:
        raise ValueError("keyfile given without certfile")
    if check_hostname and ca_certs is None:
        raise ValueError("check_hostname requires ca_certs")
    sock = FastSocketStream._connect(host, port, timeout=timeout, nodelay=True)
    try:
        if certfile is not None or ca_certs is not None:
            # like ssl.create_default_context() minus loading the system CA
            # store (~20 ms), which is never used: no ca_certs -> CERT_NONE
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            if certfile is not None:
                context.load_cert_chain(certfile, keyfile=keyfile)
            if ca_certs is not None:
                context.load_verify_locations(ca_certs)
                context.verify_mode = ssl.CERT_REQUIRED
                context.check_hostname = check_hostname
            else:
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=host)
        sock.settimeout(None)
        channel = FastChannel(FastSocketStream(sock))
    except BaseException:
        sock.close()
        raise
    try:
        return service._connect(channel, dict(config or {}))
    except BaseException:
        channel.close()
        raise


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
