"""Fast RPyC transport: connections, server and client ends over the fast framing.

Stock RPyC 6 is tuned for small messages on slow links. For bulk MEF3 sample
blocks on loopback it is the bottleneck. Measured on a 2-core box (loopback
itself moves about 2.7 GB/s):

* every frame over 3 kB is zlib-compressed: 40-60 MB/s ceiling for 1-80 MiB;
* with compression off, Nagle's algorithm stalls small replies by 44 ms;
* ``SocketStream.write`` re-slices ``data = data[count:]`` after each 64 kB
  ``send`` (quadratic): 80 MiB takes 15 s;
* ``BgServingThread`` sleeps 0.1 s between serves: callbacks arrive at ~10/s;
* brine and ``Connection`` copy a large payload four times, each into fresh,
  page-faulting memory (~2 GB/s): ``dump`` (tag concatenation, join), message
  type concatenation, ``data[1:]`` and ``load``.

What changes, always through RPyC's own extension points, one module per layer::

    stock:  Connection -> Channel(zlib > 3 kB) -> SocketStream(send 64 kB,
            re-slice; Nagle)
    here:   FastConnection (this module; dump_parts: large strings and
            Buffers stay parts)
              -> framing.FastChannel(no zlib; header | parts | b"\\n", joined
                             only when small; large frames received as a
                             SplitFrame: the large string recv-ed into its
                             own bytes object, found by peeking its header;
                             frames over max_frame refused)
              -> socket_stream.FastSocketStream(TCP_NODELAY, sendall, recv
                             MSG_WAITALL / recv_into; memory committed as
                             data arrives; TLS calls serialised)

A payload is thus copied only by the kernel (plain TCP; TLS cannot peek, so
its large frames are read whole and brine copies the string). The wire format
is unchanged (``!LB`` header, brine payload, ``b"\\n"``; compressed flag 0), so
stock clients and servers interoperate with ours, and frames that a stock peer
compresses are still decompressed. :class:`FastThreadedServer` and
:func:`fast_connect` build connections on these classes;
:class:`~software.transport.serving.ServingThread` serves callbacks with no sleep between
polls.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import rpyc
from rpyc.core import brine, consts
from rpyc.core.protocol import Connection
from rpyc.utils.authenticators import AuthenticationError
from rpyc.utils.server import ThreadedServer

from .framing import (
    Brined,
    Buffer,
    FastChannel,
    SplitFrame,
    check_max_frame,
    dump_parts,
)
from .handshakes import BoundedHandshakes
from .socket_stream import FastSocketStream, format_address, keep_alive

__all__ = ["FastConnection", "FastThreadedServer", "connect_service",
           "fast_connect"]

logger = logging.getLogger(__name__)


class FastConnection(Connection):
    """RPyC connection that sends frames without joining them and can carry buffers.

    Differences from :class:`rpyc.core.protocol.Connection` (same parameters):

    * messages are dumped by :func:`dump_parts` and handed to
      :meth:`FastChannel.send_parts`: a large payload goes from its own memory to the
      socket (stock RPyC copies it three times first);
    * a tuple whose first item is a :class:`Buffer` is sent by value, as bytes, and a
      :class:`~software.transport.framing.Brined` value (brine made ahead, e.g. a plain
      answer of nested tuples) as the value it encodes;
    * a :class:`SplitFrame` from :meth:`FastChannel.recv` is loaded without copying its
      large string (stock: ``data[1:]`` and brine's read copy it twice);
    * sends are serialised by a lock of this class. RPyC's ``_cleanup`` force-releases
      ``Connection._sendlock`` when a connection closes; if another thread was sending
      then, its own ``release()`` raised ``RuntimeError('release unlocked lock')``
      instead of the ``EOFError`` of the dead connection (and a third thread could
      interleave its frame with the one in progress). ``_sendlock`` is left to
      ``_cleanup``, which may release it as it likes;
    * :attr:`value_hook`, when set, is applied to every value received by copy
      (replies and the arguments of requests, before any handler sees them);
    * :attr:`last_received` is the ``time.monotonic()`` of the last message received (by
      any thread): how long the peer has been silent.

    With rpyc's experimental ``bind_threads`` everything is left to the base class.
    """

    def __init__(self, root: Any, channel: Any, config: Mapping[str, Any] = {}) -> None:
        super().__init__(root, channel, config)
        self._frame_lock = threading.Lock()
        if isinstance(channel, FastChannel) and not self._bind_threads:
            channel.split_large = True
        #: Called with each by-value value received (in the receiving thread); returns
        #: what the connection hands on. ``None``: values are handed on unchanged.
        self.value_hook: Callable[[Any], Any] | None = None
        #: ``time.monotonic()`` when the last message arrived (or the connection was made).
        self.last_received = time.monotonic()

    @property
    def sends_buffers(self) -> bool:
        """Whether values may carry :class:`Buffer` payloads on this connection."""
        return not self._bind_threads

    def _box(self, obj: Any) -> Any:
        if type(obj) is tuple and obj and type(obj[0]) is Buffer \
                and brine.dumpable(obj[1:]) and not self._bind_threads:
            return consts.LABEL_VALUE, obj
        if type(obj) is Brined and not self._bind_threads:
            return consts.LABEL_VALUE, obj
        return super()._box(obj)

    def _unbox(self, package: Any) -> Any:
        hook = self.value_hook
        if hook is not None and package[0] == consts.LABEL_VALUE:
            return hook(package[1])
        return super()._unbox(package)

    def _dispatch(self, data: bytes | SplitFrame) -> None:
        self.last_received = time.monotonic()
        if type(data) is not SplitFrame:
            super()._dispatch(data)
            return
        # rpyc 6's Connection._dispatch without bind_threads (the only case with split
        # frames), loading the value from the frame's parts instead of data[1:]
        msg = data.head[0]
        if msg == consts.MSG_REQUEST:
            self._recvlock.release()
            seq, args = data.load()
            self._dispatch_request(seq, args)
        elif msg == consts.MSG_REPLY:
            seq, args = data.load()
            obj = self._unbox(args)
            self._seq_request_callback(msg, seq, False, obj)
            self._recvlock.release()
        elif msg == consts.MSG_EXCEPTION:
            self._recvlock.release()
            seq, args = data.load()
            obj = self._unbox_exc(args)
            self._seq_request_callback(msg, seq, True, obj)
        else:
            raise ValueError(f"invalid message type: {msg!r}")

    def _send(self, msg: int, seq: int, args: Any) -> None:
        if self._bind_threads:
            super()._send(msg, seq, args)
            return
        parts = [brine.I1.pack(msg)]
        dump_parts((seq, args), parts)
        queue = self._send_queue
        queue.append(parts)
        lock = self._frame_lock
        # as rpyc: whoever holds the lock sends what others queued meanwhile (a netref's
        # __del__ may send from inside a send, so never block on the lock)
        while queue:
            if not lock.acquire(False):
                return
            try:
                if not queue:
                    continue
                parts = queue.pop(0)
                send_parts = getattr(self._channel, "send_parts", None)
                if send_parts is not None:
                    send_parts(parts)
                else:
                    self._channel.send(b"".join(parts))
            finally:
                lock.release()


def connect_service(service: Any, channel: Any, config: Mapping[str, Any]) -> Connection:
    """Like ``rpyc.Service._connect``, but on a :class:`FastConnection`.

    A service class that sets its own ``_protocol`` keeps it.
    """
    if isinstance(service, type):
        service = service()
    protocol = getattr(service, "_protocol", Connection)
    conn = (FastConnection if protocol is Connection else protocol)(service, channel, config)
    service.on_connect(conn)
    return conn


#: What some TLS handshake failures of a server mean, for its log.
_TLS_HINTS = {
    "WRONG_VERSION_NUMBER": ": the client does not use TLS",
    "HTTP_REQUEST": ": an HTTP client",
    "TLSV1_ALERT_UNKNOWN_CA": ": the client does not trust this server's certificate",
}


class FastThreadedServer(BoundedHandshakes, ThreadedServer):
    """:class:`rpyc.utils.server.ThreadedServer` on the fast transport.

    Parameters
    ----------
    *args, **kwargs
        As for ``ThreadedServer`` (service, hostname, port, authenticators such as
        ``SSLAuthenticator``, protocol_config, logger, ...).
    max_frame : int, optional
        Largest frame a client may send, in bytes (default
        :attr:`FastChannel.MAX_FRAME <software.transport.framing.FastChannel.MAX_FRAME>`); a client
        announcing more is refused and disconnected.
    handshake_timeout : float
        With an authenticator (TLS): seconds a client has to finish its handshake; one
        that connects and stays silent is dropped after that.
    max_handshakes : int
        With an authenticator: connections whose handshake is not finished at most; a
        connection beyond is closed at once (a WARNING, once per burst, says so), so that
        silent peers cannot take every thread and descriptor of the server.

    Notes
    -----
    Each client connection is a :class:`FastConnection` over
    ``FastChannel(FastSocketStream(sock))``. Each runs in its own thread, which also
    logs the outcome once, on the server's logger: a client that fails to authenticate
    at WARNING with the TLS reason and its address; one that goes away before being
    served or during the handshake (a port scan) at INFO, without a traceback.
    """

    def __init__(self, *args: Any, max_frame: int | None = None,
                 handshake_timeout: float = BoundedHandshakes.HANDSHAKE_TIMEOUT,
                 max_handshakes: int = BoundedHandshakes.MAX_HANDSHAKES,
                 **kwargs: Any) -> None:
        self.max_frame = FastChannel.MAX_FRAME if max_frame is None \
            else check_max_frame(max_frame)
        self._bound_handshakes(handshake_timeout, max_handshakes)
        super().__init__(*args, **kwargs)

    def _authenticate_and_serve_client(self, sock: socket.socket) -> None:
        """Runs in the client's thread: authenticate, serve, close the socket."""
        peer, served = "a client", sock
        handshaking = bool(self.authenticator)  # counted by _accept_method
        try:
            try:
                peer = format_address(sock.getpeername())
            except OSError as exc:  # reset before this thread ran: a port scan, say
                self.logger.info("a client (fd %d) went away before it was served (%s)",
                                 sock.fileno(), exc)
                return
            credentials = None
            if self.authenticator:
                try:
                    sock.settimeout(self.handshake_timeout)  # a silent peer is dropped
                    served, credentials = self.authenticator(sock)
                except AuthenticationError as exc:
                    self._refused(peer, exc)
                    return
                except OSError as exc:  # reset or timed out during the handshake
                    self.logger.info("%s went away during the TLS handshake (%s)", peer, exc)
                    return
                self._handshake_done()
                handshaking = False
                served.settimeout(None)
                # a TLS socket took over the (now detached) accepted one: close() must
                # reach it (rpyc's ThreadedServer left TLS clients connected)
                self.clients.add(served)
                self.logger.info("%s authenticated", peer)
            self._serve_client(served, credentials)
        except Exception:  # logged here, once: not again by threading's excepthook
            self.logger.exception("serving %s failed", peer)
        finally:
            if handshaking:
                self._handshake_done()
            for each in {sock, served}:
                try:
                    each.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                each.close()
                self.clients.discard(each)

    def _refused(self, peer: str, exc: AuthenticationError) -> None:
        """Log a failed authentication once, with the TLS reason."""
        cause = exc.__context__  # rpyc's SSLAuthenticator re-raises the SSLError's text
        if isinstance(cause, ssl.SSLEOFError):  # closed mid-handshake: nothing refused
            self.logger.info("%s went away during the TLS handshake (%s)", peer, cause)
            return
        reason = getattr(cause, "reason", None)
        hint = _TLS_HINTS.get(reason, "") if isinstance(reason, str) else ""
        self.logger.warning("refused %s: failed to authenticate (%s)%s", peer, exc, hint)

    def _serve_client(self, sock: socket.socket, credentials: Any) -> None:
        try:
            addrinfo, sockname = sock.getpeername(), sock.getsockname()
        except OSError as exc:  # closed by Server.close() before we got here
            self.logger.info("client gone before serving: %s", exc)
            return
        peer = format_address(addrinfo)
        if credentials:
            self.logger.info("welcome %s (%r)", peer, credentials)
        else:
            self.logger.info("welcome %s", peer)
        try:
            config = dict(self.protocol_config, credentials=credentials,
                          endpoints=(sockname, addrinfo), logger=self.logger)
            channel = FastChannel(FastSocketStream(sock), max_frame=self.max_frame)
            conn = connect_service(self.service, channel, config)
            self._handle_connection(conn)
        finally:
            self.logger.info("goodbye %s", peer)


def fast_connect(host: str, port: int, service: Any = rpyc.VoidService,
                 config: Mapping[str, Any] | None = None, *,
                 keyfile: str | None = None, certfile: str | None = None,
                 ca_certs: str | None = None, timeout: float = 3.0,
                 check_hostname: bool = False,
                 max_frame: int | None = None, keepalive: bool = False) -> rpyc.Connection:
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
    max_frame : int, optional
        Largest frame accepted from the server, in bytes (default
        ``FastChannel.MAX_FRAME``: enough for any answer of a server with the default
        ``max_request_mb``).
    keepalive : bool, optional
        Switch on TCP keep-alive with short timers
        (:func:`~software.transport.socket_stream.keep_alive`): a server that vanished
        from the network is noticed in seconds.

    Returns
    -------
    FastConnection
        Works against stock RPyC servers and :class:`FastThreadedServer`.
    """
    if keyfile is not None and certfile is None:
        raise ValueError("keyfile given without certfile")
    if check_hostname and ca_certs is None:
        raise ValueError("check_hostname requires ca_certs")
    sock = FastSocketStream._connect(host, port, timeout=timeout, nodelay=True)
    try:
        if keepalive:
            keep_alive(sock)
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
        channel = FastChannel(FastSocketStream(sock), max_frame=max_frame)
    except BaseException:
        sock.close()
        raise
    try:
        return connect_service(service, channel, dict(config or {}))
    except BaseException:
        channel.close()
        raise

