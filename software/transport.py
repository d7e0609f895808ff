"""Fast RPyC transport: uncompressed, copy-light framing over TCP_NODELAY sockets.

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

What this module changes, always through RPyC's own extension points::

    stock:  Connection -> Channel(zlib > 3 kB) -> SocketStream(send 64 kB,
            re-slice; Nagle)
    here:   FastConnection(dump_parts: large strings and Buffers stay parts)
              -> FastChannel(no zlib; header | parts | b"\n", joined only
                             when small; large frames received as a
                             SplitFrame: the large string recv-ed into its
                             own bytes object, found by peeking its header)
              -> FastSocketStream(TCP_NODELAY, sendall, recv MSG_WAITALL /
                                  recv_into; TLS calls serialised)

A payload is thus copied only by the kernel (plain TCP; TLS cannot peek, so
its large frames are read whole and brine copies the string). The wire format
is unchanged (``!LB`` header, brine payload, ``b"\n"``; compressed flag 0), so
stock clients and servers interoperate with ours, and frames that a stock peer
compresses are still decompressed. :class:`FastThreadedServer` and
:func:`fast_connect` build connections on these classes; :class:`ServingThread`
serves callbacks with no sleep between polls.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

import rpyc
from rpyc.core import brine, consts
from rpyc.core.channel import Channel
from rpyc.core.protocol import Connection
from rpyc.core.stream import SocketStream
from rpyc.lib import Timeout
from rpyc.lib.compat import poll
from rpyc.utils.server import ThreadedServer

__all__ = [
    "Buffer",
    "FastSocketStream",
    "FastChannel",
    "FastConnection",
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

    __slots__ = ("split_large",)
    MAX_SEND_CHUNK = 4 * 1024 * 1024
    SMALL_FRAME = 64 * 1024
    _PEEK = 512  # bytes of a large frame looked at to find its large byte string

    def __init__(self, stream: Any, compress: bool = False) -> None:
        super().__init__(stream, compress=False)
        #: Set by :class:`FastConnection`: :meth:`recv` may return a :class:`SplitFrame`.
        self.split_large = False

    def recv(self) -> bytes | SplitFrame:
        """Receive the next frame's payload (decompressed if flagged).

        With :attr:`split_large`, a large frame holding a large byte string (a segment)
        comes as a :class:`SplitFrame` whose string was received straight into its own
        bytes object: no copy of it is made after the kernel's.
        """
        read = self.stream.read
        length, compressed = self.FRAME_HEADER.unpack(read(self.FRAME_HEADER.size))
        flush_size = len(self.FLUSHER)
        if length <= self.SMALL_FRAME:  # one read; slicing a small frame is cheap
            data = read(length + flush_size)[:length]
        else:
            found = None
            if self.split_large and not compressed:
                peek = getattr(self.stream, "peek", _no_peek)
                found = find_large_bytes(peek(min(length, self._PEEK)), length)
            if found is not None:  # head, the string into its own object, the rest
                start, size = found
                head = read(start)
                data = SplitFrame(head, read(size), read(length - start - size))
                read(flush_size)
                return data
            data = read(length)  # no full-size slice copy: payload, then the flusher
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

    def send_parts(self, parts: list[bytes | memoryview]) -> None:
        """Send the concatenation of ``parts`` as one frame without concatenating them.

        Parameters
        ----------
        parts : list of bytes or 1-D byte memoryviews
            Runs of small parts are joined into one write; each part of at least
            ``SMALL_FRAME`` bytes is written from its own memory.
        """
        size = sum(map(len, parts))
        header = self.FRAME_HEADER.pack(size, 0)
        write = self.stream.write
        if size <= self.SMALL_FRAME:
            write(b"".join((header, *parts, self.FLUSHER)))
            return
        pending: list = [header]
        step = self.MAX_SEND_CHUNK
        for part in parts:
            if len(part) < self.SMALL_FRAME:
                pending.append(part)
                continue
            write(b"".join(pending))
            pending = []
            view = memoryview(part)
            for start in range(0, len(view), step):
                write(view[start:start + step])
        pending.append(self.FLUSHER)
        write(b"".join(pending))


class Buffer:
    """A payload that :class:`FastConnection` sends as brine ``bytes`` without copying.

    Put it first in a tuple of brine values, e.g. ``(Buffer(array), "<f8", (64, 256))``,
    and return that tuple from an exposed method or pass it to a callback: the peer
    receives ``(bytes, "<f8", (64, 256))``, so stock RPyC peers are served too. The
    memory is read when the message is sent (possibly later, by another thread), so it
    must not change after the buffer is made.

    Parameters
    ----------
    data : bytes-like
        Any C-contiguous buffer (a numpy array, bytes, a memoryview).
    """

    __slots__ = ("view",)

    def __init__(self, data: Any) -> None:
        view = memoryview(data)
        self.view = view if view.format == "B" and view.ndim == 1 else view.cast("B")

    def __len__(self) -> int:
        return self.view.nbytes

    def __repr__(self) -> str:
        return f"<Buffer {self.view.nbytes} bytes>"


#: Byte strings from this size up are sent from their own memory, not copied into the frame.
_LARGE = 64 * 1024
_TUPLE_TAGS = (brine.TAG_EMPTY_TUPLE, brine.TAG_TUP1, brine.TAG_TUP2, brine.TAG_TUP3,
               brine.TAG_TUP4)


def dump_parts(obj: Any, out: list) -> None:
    """Append brine's encoding of ``obj`` to ``out`` as parts, large byte strings uncopied.

    ``b"".join(out)`` equals ``brine.dump(obj)`` (with each :class:`Buffer` as the bytes
    it holds); brine itself copies every byte string twice (tag concatenation, join).
    Raises ``TypeError`` for what brine cannot dump.
    """
    kind = type(obj)
    if kind is tuple:
        n = len(obj)
        if n < len(_TUPLE_TAGS):
            out.append(_TUPLE_TAGS[n])
        elif n < 256:
            out.append(brine.TAG_TUP_L1 + brine.I1.pack(n))
        else:
            out.append(brine.TAG_TUP_L4 + brine.I4.pack(n))
        for item in obj:
            dump_parts(item, out)
    elif kind is Buffer:
        view = obj.view
        if view.nbytes < _LARGE:
            brine._dump(view.tobytes(), out)
        else:
            out.append(brine.TAG_STR_L4 + brine.I4.pack(view.nbytes))
            out.append(view)
    elif kind is bytes and len(obj) >= _LARGE:
        out.append(brine.TAG_STR_L4 + brine.I4.pack(len(obj)))
        out.append(obj)
    else:
        brine._dump(obj, out)


class FastConnection(Connection):
    """RPyC connection that sends frames without joining them and can carry buffers.

    Differences from :class:`rpyc.core.protocol.Connection` (same parameters):

    * messages are dumped by :func:`dump_parts` and handed to
      :meth:`FastChannel.send_parts`: a large payload goes from its own memory to the
      socket (stock RPyC copies it three times first);
    * a tuple whose first item is a :class:`Buffer` is sent by value, as bytes;
    * a :class:`SplitFrame` from :meth:`FastChannel.recv` is loaded without copying its
      large string (stock: ``data[1:]`` and brine's read copy it twice);
    * sends are serialised by a lock of this class. RPyC's ``_cleanup`` force-releases
      ``Connection._sendlock`` when a connection closes; if another thread was sending
      then, its own ``release()`` raised ``RuntimeError('release unlocked lock')``
      instead of the ``EOFError`` of the dead connection (and a third thread could
      interleave its frame with the one in progress). ``_sendlock`` is left to
      ``_cleanup``, which may release it as it likes;
    * :attr:`value_hook`, when set, is applied to every value received by copy
      (replies and the arguments of requests, before any handler sees them).

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

    @property
    def sends_buffers(self) -> bool:
        """Whether values may carry :class:`Buffer` payloads on this connection."""
        return not self._bind_threads

    def _box(self, obj: Any) -> Any:
        if type(obj) is tuple and obj and type(obj[0]) is Buffer \
                and brine.dumpable(obj[1:]) and not self._bind_threads:
            return consts.LABEL_VALUE, obj
        return super()._box(obj)

    def _unbox(self, package: Any) -> Any:
        hook = self.value_hook
        if hook is not None and package[0] == consts.LABEL_VALUE:
            return hook(package[1])
        return super()._unbox(package)

    def _dispatch(self, data: bytes | SplitFrame) -> None:
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


def _no_peek(count: int) -> bytes:
    return b""


_SKIP = {tag: 0 for tag in (brine.TAG_NONE, brine.TAG_EMPTY_STR, brine.TAG_EMPTY_TUPLE,
                            brine.TAG_TRUE, brine.TAG_FALSE, brine.TAG_NOT_IMPLEMENTED,
                            brine.TAG_ELLIPSIS, brine.TAG_UNICODE, brine.TAG_TUP1,
                            brine.TAG_TUP2, brine.TAG_TUP3, brine.TAG_TUP4, brine.TAG_SLICE,
                            brine.TAG_FSET)}
_SKIP.update({brine.TAG_STR1: 1, brine.TAG_STR2: 2, brine.TAG_STR3: 3, brine.TAG_STR4: 4,
              brine.TAG_TUP_L1: 1, brine.TAG_TUP_L4: 4, brine.TAG_FLOAT: 8,
              brine.TAG_COMPLEX: 16})
_SKIP.update({tag: 0 for tag in brine.IMM_INTS_LOADER})
_SIZED = {brine.TAG_STR_L1: brine.I1, brine.TAG_INT_L1: brine.I1,
          brine.TAG_STR_L4: brine.I4, brine.TAG_INT_L4: brine.I4}


def find_large_bytes(head: bytes, length: int) -> tuple[int, int] | None:
    """Where the first large byte string of an RPyC message starts, from its first bytes.

    Parameters
    ----------
    head : bytes
        The beginning of a message (message type byte, then brine).
    length : int
        The message's full length.

    Returns
    -------
    (start, size) or None
        Offset and length of the first byte string of at least 64 KiB, or None when
        ``head`` ends before one (or holds something unexpected).
    """
    pos, end = 1, len(head)
    while pos < end:
        tag = head[pos:pos + 1]
        pos += 1
        skip = _SKIP.get(tag)
        if skip is not None:
            pos += skip
            continue
        sizer = _SIZED.get(tag)
        if sizer is None or pos + sizer.size > end:
            return None
        size, = sizer.unpack_from(head, pos)
        pos += sizer.size
        if tag == brine.TAG_STR_L4 and size >= _LARGE:
            return (pos, size) if pos + size <= length else None
        pos += size
    return None


class SplitFrame:
    """A received message in three parts: the bytes before its large byte string, that
    string (its own bytes object) and the rest. :class:`FastConnection` loads it."""

    __slots__ = ("head", "payload", "tail")

    def __init__(self, head: bytes, payload: bytes, tail: bytes) -> None:
        self.head, self.payload, self.tail = head, payload, tail

    def __len__(self) -> int:
        return len(self.head) + len(self.payload) + len(self.tail)

    def join(self) -> bytes:
        """The message as one bytes object (a copy)."""
        return b"".join((self.head, self.payload, self.tail))

    def load(self) -> Any:
        """Load the brine value after the message type byte; the string is not copied."""
        return brine._load(_SplitReader(self))


class _SplitReader:
    """File-like reader of a :class:`SplitFrame` for ``brine._load``: the read that asks
    for exactly the large string gets the payload object itself."""

    __slots__ = ("_head", "_payload", "_tail")

    def __init__(self, frame: SplitFrame) -> None:
        self._head = BytesIO(frame.head)
        self._head.seek(1)
        self._payload: bytes | None = frame.payload
        self._tail = BytesIO(frame.tail)

    def read(self, count: int) -> bytes:
        if self._payload is None:          # past the payload
            return self._tail.read(count)
        data = self._head.read(count)
        if data:
            if len(data) != count:
                raise ValueError("brine read across the start of a split frame's payload")
            return data
        payload, self._payload = self._payload, None
        if count != len(payload):
            raise ValueError("brine read across the end of a split frame's payload")
        return payload


class FastThreadedServer(ThreadedServer):
    """:class:`rpyc.utils.server.ThreadedServer` on the fast transport.

    Identical to ``ThreadedServer`` (same parameters, authenticators such as
    ``SSLAuthenticator``, credentials and logging) except that each client
    connection is a :class:`FastConnection` over ``FastChannel(FastSocketStream(sock))``.
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
            conn = connect_service(self.service, FastChannel(FastSocketStream(sock)), config)
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
    FastConnection
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
        return connect_service(service, channel, dict(config or {}))
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
