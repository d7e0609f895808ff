"""Tests for the fast transport (socket_stream, framing, transport): framing, server, client,
serving thread, frame limits and what peers may make the server allocate or log."""
from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rpyc
from rpyc.core import brine, consts
from rpyc.core.channel import Channel
from rpyc.core.protocol import Connection
from rpyc.core.stream import SocketStream
from rpyc.utils.authenticators import SSLAuthenticator
from rpyc.utils.server import ThreadedServer

from software.transport.connection import (
    FastConnection,
    FastThreadedServer,
    connect_service,
    fast_connect,
)
from software.transport.framing import (
    Buffer,
    FastChannel,
    SplitFrame,
    dump_parts,
    find_large_bytes,
)
from software.transport.serving import ServingThread
from software.transport.socket_stream import FastSocketStream
from tests.util import wait_until

MiB = 1024 * 1024
SIZES = [0, 1, 3001, 64 * 1024, 5 * MiB, 20 * MiB]


def pattern(n: int) -> bytes:
    """Deterministic, incompressible bytes (so stock zlib really kicks in)."""
    return random.Random(n).randbytes(n)


class EchoService(rpyc.Service):
    def on_connect(self, conn: rpyc.Connection) -> None:
        self._conn = conn

    def exposed_echo(self, data: bytes) -> bytes:
        return data

    def exposed_blob(self, n: int) -> bytes:
        return pattern(n)

    def exposed_transport(self) -> tuple[str, str, bool]:
        channel = self._conn._channel
        sock = channel.stream.sock
        nodelay = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return type(channel).__name__, type(channel.stream).__name__, nodelay

    def exposed_call_me(self, cb, times: int = 1) -> None:
        """Call the client's ``cb(i)`` asynchronously from a server thread."""
        conn = self._conn

        def run() -> None:
            acb = rpyc.async_(cb)
            try:
                for i in range(times):
                    acb(i)
            except Exception:  # the client may hang up right after the last call
                if not conn.closed:
                    raise
        threading.Thread(target=run, daemon=True).start()


@contextlib.contextmanager
def running(server_cls: type[ThreadedServer], **kwargs) -> Iterator[ThreadedServer]:
    server = server_cls(EchoService, hostname="127.0.0.1", port=0,
                        protocol_config={"sync_request_timeout": 20}, **kwargs)
    server._listen()  # listening before the thread starts: no connect race
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(5)
        assert not thread.is_alive()


@pytest.fixture
def server() -> Iterator[FastThreadedServer]:
    with running(FastThreadedServer) as srv:
        yield srv


@pytest.fixture
def conn(server: FastThreadedServer) -> Iterator[rpyc.Connection]:
    c = fast_connect("127.0.0.1", server.port, config={"sync_request_timeout": 20})
    try:
        yield c
    finally:
        c.close()


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_byte_exact(conn: rpyc.Connection, size: int) -> None:
    payload = pattern(size)
    echoed = conn.root.echo(payload)
    assert type(echoed) is bytes and echoed == payload
    blob = conn.root.blob(size)
    assert type(blob) is bytes and blob == payload


def test_fast_connect_uses_fast_transport(conn: rpyc.Connection) -> None:
    channel = conn._channel
    assert isinstance(channel, FastChannel)
    assert isinstance(channel.stream, FastSocketStream)
    sock = channel.stream.sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert sock.gettimeout() is None


def test_fast_server_uses_fast_transport(conn: rpyc.Connection) -> None:
    assert tuple(conn.root.transport()) == ("FastChannel", "FastSocketStream", True)


def test_config_is_copied(server: FastThreadedServer) -> None:
    from rpyc.core.protocol import DEFAULT_CONFIG
    defaults = dict(DEFAULT_CONFIG)
    config = {"sync_request_timeout": 7}
    with fast_connect("127.0.0.1", server.port, config=config) as c:
        assert c.root.echo(b"x") == b"x"
        assert c._config["sync_request_timeout"] == 7
    assert config == {"sync_request_timeout": 7}
    assert DEFAULT_CONFIG == defaults


def test_stock_client_against_fast_server(server: FastThreadedServer) -> None:
    payload = pattern(5 * MiB)
    with rpyc.connect("127.0.0.1", server.port) as c:
        assert c.root.blob(5 * MiB) == payload
        assert c.root.echo(payload) == payload  # stock client sends compressed frames
        assert c.root.echo(b"small") == b"small"


def test_fast_client_against_stock_server() -> None:
    payload = pattern(5 * MiB)
    with running(ThreadedServer) as srv:
        with fast_connect("127.0.0.1", srv.port) as c:
            assert c.root.blob(5 * MiB) == payload  # stock server compresses
            assert c.root.echo(payload) == payload
            assert c.root.echo(b"") == b""


# -------------------------------------------------------------------- framing
def _read_raw_frame(sock: socket.socket) -> tuple[int, int, bytes, bytes]:
    stream = SocketStream(sock)
    length, flag = struct.unpack("!LB", stream.read(5))
    return length, flag, stream.read(length), stream.read(1)


@pytest.mark.parametrize("size", [0, 3001, 100_000, 9 * MiB])
def test_frames_are_not_compressed(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FastChannel, "MAX_SEND_CHUNK", 4 * MiB)
    payload = b"a" * size  # highly compressible: stock would zlib it
    a, b = socket.socketpair()
    with a, b:
        sender = threading.Thread(target=FastChannel(FastSocketStream(a)).send, args=(payload,))
        sender.start()
        length, flag, data, flusher = _read_raw_frame(b)
        sender.join(5)
    assert (length, flag, flusher) == (size, 0, b"\n")
    assert data == payload


@pytest.mark.parametrize("size", [10, 10_000, 3 * MiB])
def test_stock_and_fast_channels_interoperate(size: int) -> None:
    payload = b"z" * size
    a, b = socket.socketpair()
    with a, b:
        fast, stock = FastChannel(FastSocketStream(a)), Channel(SocketStream(b))
        t = threading.Thread(target=stock.send, args=(payload,))  # compressed if > 3000
        t.start()
        assert fast.recv() == payload
        t.join(5)
        t = threading.Thread(target=fast.send, args=(memoryview(payload),))
        t.start()
        assert stock.recv() == payload
        t.join(5)


def test_read_falls_back_to_recv_into_on_partial_reads() -> None:
    payload = pattern(8 * MiB)  # larger than the socket buffer
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(5)  # non-blocking fd: MSG_WAITALL returns partial data
        t = threading.Thread(target=a.sendall, args=(payload,))
        t.start()
        assert FastSocketStream(b).read(len(payload)) == payload
        t.join(5)


def test_eof_on_closed_peer() -> None:
    a, b = socket.socketpair()
    stream = FastSocketStream(a)
    b.sendall(b"abc")
    b.close()
    with pytest.raises(EOFError):
        stream.read(10)
    assert stream.closed
    with pytest.raises(EOFError):
        stream.write(b"x")
    with pytest.raises(EOFError):
        stream.fileno()
    stream.close()  # idempotent


def test_poll_on_socket_closed_underneath_raises_eof() -> None:
    a, b = socket.socketpair()
    with b:
        stream = FastSocketStream(a)
        a.close()  # what Server.close() does to its client sockets
        with pytest.raises(EOFError):
            stream.poll(0)
        assert stream.closed


def test_write_to_closed_peer_raises_eof() -> None:
    a, b = socket.socketpair()
    stream = FastSocketStream(a)
    b.close()
    with pytest.raises(EOFError):
        stream.write(b"x" * MiB)
    assert stream.closed


# ------------------------------------------------------ copies and framing
BRINE_VALUES = [
    None, True, 0, -1, 2**70, 1.5, complex(1, 2), "ünï", b"", b"abc", b"x" * 300,
    pattern(70_000), (), (1,), (1, 2, 3, 4, 5), tuple(range(300)), slice(1, None, 2),
    frozenset({1, 2}), (pattern(100_000), "<f8", (64, 1562)), ((pattern(65_536),), ()),
    (1, (2, (3, (pattern(200_000), b"tail", pattern(80_000))))),
]


@pytest.mark.parametrize("value", BRINE_VALUES, ids=range(len(BRINE_VALUES)))
def test_dump_parts_is_brine(value: object) -> None:
    parts: list = []
    dump_parts(value, parts)
    data = b"".join(parts)
    assert data == brine.dump(value) and brine.load(data) == value
    found = find_large_bytes(b"\x01" + data[:512], 1 + len(data))
    big = [p for p in parts if len(p) >= 64 * 1024]
    assert (found is None) == (not big)
    if big:   # where the split receive will put the first large string
        start, size = found
        assert size == len(big[0]) and (b"\x01" + data)[start:start + size] == big[0]


def test_buffer_is_sent_as_bytes() -> None:
    array = np.arange(300_000, dtype="<f8").reshape(3, -1)
    value = (Buffer(array), array.dtype.str, array.shape)
    parts: list = []
    dump_parts(value, parts)
    assert any(isinstance(p, memoryview) for p in parts)      # not copied into the frame
    assert brine.load(b"".join(parts)) == (array.tobytes(), "<f8", (3, 100_000))
    small = (Buffer(b"abc"), "|u1", (3,))
    parts = []
    dump_parts(small, parts)
    assert b"".join(parts) == brine.dump((b"abc", "|u1", (3,)))


class BufferService(rpyc.Service):
    def exposed_segment(self, n: int, cb=None):
        array = np.frombuffer(pattern(n), dtype=np.uint8)
        value = (Buffer(array), "|u1", (n,))
        if cb is not None:
            rpyc.async_(cb)(value)
            return None
        return value


@pytest.mark.parametrize("client", ["fast", "stock"])
@pytest.mark.parametrize("size", [10, 70_000, 5 * MiB])
def test_buffer_answers_reach_fast_and_stock_clients(client: str, size: int) -> None:
    srv = FastThreadedServer(BufferService, hostname="127.0.0.1", port=0)
    srv._listen()
    thread = threading.Thread(target=srv.start, daemon=True)
    thread.start()
    try:
        connect = fast_connect if client == "fast" else rpyc.connect
        with connect("127.0.0.1", srv.port) as c:
            assert c.root.segment(size) == (pattern(size), "|u1", (size,))
            got: list = []
            c.root.segment(size, got.append)
            wait_until(lambda: c.poll_all(0.01) or got, timeout=10)
            assert got == [(pattern(size), "|u1", (size,))]
    finally:
        srv.close()
        thread.join(5)


def test_split_frames_need_no_copy_and_fall_back(conn: rpyc.Connection,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A large reply arrives as a SplitFrame whose payload is the received bytes object;
    a frame without a large string (or a TLS stream that cannot peek) is read whole."""
    frames: list = []
    load = SplitFrame.load
    monkeypatch.setattr(SplitFrame, "load",
                        lambda self: frames.append(self.payload) or load(self))
    payload = pattern(3 * MiB)
    echoed = conn.root.echo(payload)          # split twice: request (server), reply (here)
    assert echoed == payload and len(frames) == 2 and frames[1] is echoed
    many = tuple(pattern(1000 + i) for i in range(100))       # large frame, small strings
    assert conn.root.echo(many) == many and len(frames) == 2
    monkeypatch.setattr(FastSocketStream, "peek", lambda self, n: b"")
    assert conn.root.echo(payload) == payload and len(frames) == 2


class GatedStream(FastSocketStream):
    """A stream whose writes, once ``gate`` is set, wait for ``go`` and then fail as a
    dropped connection does mid-send."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.gate, self.entered, self.go = False, threading.Event(), threading.Event()

    def write(self, data) -> None:
        if self.gate:
            self.entered.set()
            self.go.wait(10)
            raise EOFError("connection dropped mid-send")
        super().write(data)


@pytest.mark.parametrize("kind", ["stock", "fast"])
def test_close_while_another_thread_sends(kind: str) -> None:
    """rpyc's close force-releases the send lock a sending thread holds; that thread's
    own release then raised RuntimeError('release unlocked lock') instead of EOFError."""
    a, b = socket.socketpair()
    stream = GatedStream(a)
    channel = FastChannel(stream)
    if kind == "stock":
        conn = Connection(rpyc.VoidService(), channel, {})
    else:
        conn = connect_service(rpyc.VoidService, channel, {})
        assert isinstance(conn, FastConnection)
    errors: list = []

    def send() -> None:
        try:
            conn.async_request(consts.HANDLE_PING, "x" * 100)
        except BaseException as exc:  # noqa: BLE001 - what the sender sees is the point
            errors.append(exc)

    stream.gate = True
    sender = threading.Thread(target=send)
    sender.start()
    assert stream.entered.wait(10)         # the sender holds the send lock, mid-write
    b.close()                              # the peer goes away
    conn.close()                           # EOF -> _cleanup, while the sender still sends
    stream.go.set()
    sender.join(10)
    assert len(errors) == 1
    if kind == "stock":                    # the bug, provoked deterministically
        assert isinstance(errors[0], RuntimeError), repr(errors[0])
        assert "release unlocked lock" in str(errors[0])
    else:
        assert isinstance(errors[0], EOFError), repr(errors[0])


# ------------------------------------------------------------ serving thread
def test_serving_thread_runs_callbacks_promptly(conn: rpyc.Connection) -> None:
    n = 20
    seen: list[tuple[int, str]] = []
    done = threading.Event()

    def cb(i: int) -> None:
        seen.append((i, threading.current_thread().name))
        if len(seen) == n:
            done.set()

    with ServingThread(conn, name="st-test") as st:
        assert "serving" in repr(st) and not st.closed
        acall = rpyc.async_(conn.root.call_me)  # main thread never serves below
        t0 = time.perf_counter()
        acall(cb, n)
        assert done.wait(5), f"only {len(seen)} callbacks arrived"
        elapsed = time.perf_counter() - t0
    assert sorted(i for i, _ in seen) == list(range(n))
    assert {name for _, name in seen} == {"st-test"}
    assert elapsed < 1.0  # stock BgServingThread: ~0.1 s per callback
    assert st.closed and "closed" in repr(st)
    st.close()  # twice is fine
    assert conn.root.echo(b"after") == b"after"
    conn.close()


def test_sync_calls_from_main_thread_while_serving(conn: rpyc.Connection) -> None:
    echo = conn.root.echo
    with ServingThread(conn):
        t0 = time.perf_counter()
        for i in range(300):
            assert echo(i.to_bytes(2, "big")) == i.to_bytes(2, "big")
        elapsed = time.perf_counter() - t0
        big = pattern(5 * MiB)
        assert echo(big) == big
    assert elapsed < 3.0, f"{elapsed / 300 * 1e3:.2f} ms per call"  # no 0.1 s stalls


def test_serving_thread_ends_quietly_when_connection_closes(
        conn: rpyc.Connection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="software.transport.connection")
    st = ServingThread(conn, poll_timeout=0.02)
    conn.close()
    st.close()
    assert st.closed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_serving_thread_ends_when_server_goes_away() -> None:
    with running(FastThreadedServer) as srv:
        c = fast_connect("127.0.0.1", srv.port)
        assert c.root.echo(b"up") == b"up"
        st = ServingThread(c)
    st._thread.join(5)  # the server closed our socket: EOF ends the loop
    assert st.closed and "closed" in repr(st)
    st.close()
    c.close()


def test_serving_thread_close_from_callback(conn: rpyc.Connection) -> None:
    done = threading.Event()
    holder: list[ServingThread] = []

    def cb(i: int) -> None:
        holder[0].close()  # from inside the serving thread: must not self-join
        done.set()

    st = ServingThread(conn)
    holder.append(st)
    acall = rpyc.async_(conn.root.call_me)
    acall(cb)
    assert done.wait(5)
    st.close()
    assert st.closed


def test_serving_thread_rejects_bad_timeout(conn: rpyc.Connection) -> None:
    with pytest.raises(ValueError):
        ServingThread(conn, poll_timeout=0)


# ------------------------------------------------------------------------ TLS
# certificates: the session fixture ``pki`` (tests/conftest.py, tests/pki.py)
@pytest.fixture
def tls_server(pki: Path) -> Iterator[FastThreadedServer]:
    auth = SSLAuthenticator(pki / "server.key", pki / "server.pem", ca_certs=pki / "ca.pem",
                            cert_reqs=ssl.CERT_REQUIRED)
    with running(FastThreadedServer, authenticator=auth) as srv:
        yield srv


def _tls_connect(port: int, pki: Path, client: str | None = "client", ca: str = "ca",
                 **kwargs) -> rpyc.Connection:
    certs = {} if client is None else {"keyfile": str(pki / f"{client}.key"),
                                       "certfile": str(pki / f"{client}.pem")}
    return fast_connect("127.0.0.1", port, ca_certs=str(pki / f"{ca}.pem"), **certs, **kwargs)


def test_tls_round_trip(tls_server: FastThreadedServer, pki: Path) -> None:
    payload = pattern(5 * MiB)
    with _tls_connect(tls_server.port, pki) as c:
        assert isinstance(c._channel.stream.sock, ssl.SSLSocket)
        assert c.root.blob(5 * MiB) == payload
        assert c.root.echo(payload) == payload
        assert c.root.echo(b"x") == b"x"


def test_tls_hostname_check(tls_server: FastThreadedServer, pki: Path) -> None:
    with _tls_connect(tls_server.port, pki, check_hostname=True) as c:
        assert c.root.echo(b"ok") == b"ok"


def test_tls_serving_thread_with_sync_calls_and_callbacks(tls_server: FastThreadedServer,
                                                         pki: Path) -> None:
    # OpenSSL forbids concurrent SSL_read/SSL_write: the serving thread reads
    # while this thread writes requests; a lost TLS 1.3 write would hang here.
    n = 50
    seen: list[int] = []
    done = threading.Event()

    def cb(i: int) -> None:
        seen.append(i)
        if len(seen) == n:
            done.set()

    with _tls_connect(tls_server.port, pki) as c, ServingThread(c):
        echo = c.root.echo
        acall = rpyc.async_(c.root.call_me)
        acall(cb, n)
        for i in range(200):
            assert echo(i.to_bytes(2, "big")) == i.to_bytes(2, "big")
        big = pattern(3 * MiB)
        assert echo(big) == big
        assert done.wait(5)
    assert sorted(seen) == list(range(n))


def test_tls_first_request_with_serving_thread(tls_server: FastThreadedServer,
                                               pki: Path) -> None:
    # Regression: OpenSSL forbids SSL_read and SSL_write on one connection from
    # two threads at once. Unserialised, a request written while the serving
    # thread reads the TLS 1.3 session tickets was lost in ~3% of connections.
    for _ in range(40):
        c = _tls_connect(tls_server.port, pki, config={"sync_request_timeout": 2})
        st = ServingThread(c, poll_timeout=0.01)
        try:
            assert c.root.echo(b"ping") == b"ping"
        finally:
            st.close(timeout=5)
            c.close()
        assert st.closed


def test_tls_idle_serving_thread_stops(tls_server: FastThreadedServer, pki: Path) -> None:
    # TLS 1.3 session tickets make the socket readable without any RPyC data:
    # poll must not report that as data, or the serving thread blocks in a
    # read until the server happens to send something (and close() hangs).
    import select

    with _tls_connect(tls_server.port, pki) as c:
        assert select.select([c._channel.stream.sock], [], [], 5)[0], "no session tickets"
        assert not c._channel.poll(0)  # tickets alone are not data
        assert c.root.echo(b"still fine") == b"still fine"
    with _tls_connect(tls_server.port, pki) as c:
        assert select.select([c._channel.stream.sock], [], [], 5)[0], "no session tickets"
        st = ServingThread(c, poll_timeout=0.01)
        st.close(timeout=3)
        assert not st._thread.is_alive()
        assert c.root.echo(b"still fine") == b"still fine"


@pytest.mark.parametrize("client", [None, "rogue"])
def test_tls_client_without_valid_cert_is_refused(
        tls_server: FastThreadedServer, pki: Path, client: str | None) -> None:
    c = None
    with pytest.raises((EOFError, OSError)):  # ssl.SSLError is an OSError
        c = _tls_connect(tls_server.port, pki, client=client)
        c.root.echo(b"x")
    if c is not None:
        c.close()


def test_tls_server_cert_is_verified(tls_server: FastThreadedServer, pki: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_connect(tls_server.port, pki, ca="otherca")


def test_keyfile_without_certfile_is_rejected() -> None:
    with pytest.raises(ValueError):
        fast_connect("127.0.0.1", 1, keyfile="k.pem")


def test_stock_ssl_client_against_fast_tls_server(tls_server: FastThreadedServer,
                                                 pki: Path) -> None:
    payload = pattern(64 * 1024)
    with rpyc.ssl_connect("127.0.0.1", tls_server.port, keyfile=str(pki / "client.key"),
                          certfile=str(pki / "client.pem"),
                          ca_certs=str(pki / "ca.pem")) as c:
        assert c.root.echo(payload) == payload


# ---------------------------------------------------- what a peer may make us allocate
class PeakRss:
    """This process's peak RSS while the block runs: Linux's VmHWM, reset on entry (a
    sampling thread misses a buffer that is zeroed and freed while it waits for the GIL)."""

    @staticmethod
    def _kib(field: str) -> int:
        with open("/proc/self/status", encoding="ascii") as status:
            return int(next(line.split()[1] for line in status if line.startswith(field)))

    def __enter__(self) -> PeakRss:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
                refs.write("5")                   # peak RSS := current RSS
        except OSError as exc:
            pytest.skip(f"cannot reset the peak RSS: {exc}")
        self.start = self._kib("VmRSS:") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = self._kib("VmHWM:") * 1024 - self.start


def _raw_tls_context(pki: Path, client: str | None) -> ssl.SSLContext:
    """A client context that trusts any server, with ``client``'s certificate (or none)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if client is not None:
        context.load_cert_chain(pki / f"{client}.pem", pki / f"{client}.key")
    return context


@contextlib.contextmanager
def running_kind(kind: str, pki: Path) -> Iterator[tuple[FastThreadedServer, Callable]]:
    """A server with TLS (any client accepted) or without, and how to connect to it."""
    if kind == "tls":
        auth = SSLAuthenticator(pki / "server.key", pki / "server.pem")
        with running(FastThreadedServer, authenticator=auth) as srv:
            yield srv, lambda: _tls_connect(srv.port, pki)
    else:
        with running(FastThreadedServer) as srv:
            yield srv, lambda: fast_connect("127.0.0.1", srv.port)


def _raw_frame_then_close(port: int, announced: int, sent: bytes,
                          context: ssl.SSLContext | None = None) -> str:
    """Connect (TLS with ``context``), send a frame header announcing ``announced``
    bytes and ``sent``, close; return the client's address as the server names it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    with sock:
        address = "%s:%d" % sock.getsockname()[:2]
        with contextlib.suppress(OSError):  # refused: the server may close first
            sock.sendall(struct.pack("!LB", announced, 0) + sent)
    return address


@pytest.mark.parametrize("announced", [200 * MiB, 2**31], ids=["under-max", "over-max"])
@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_announced_frames_cost_only_what_arrives(announced: int, kind: str, pki: Path) -> None:
    """Peers announce 200 MiB (under the default max_frame: it waits for data that never
    comes) or 2 GiB (refused at once), send 1 MiB and close: the server (in this process)
    grows by no more than a few MiB, and goes on serving. Before: +200 MiB per peer."""
    context = _raw_tls_context(pki, "client") if kind == "tls" else None
    with running_kind(kind, pki) as (srv, connect):
        with PeakRss() as rss:
            for _ in range(3):
                _raw_frame_then_close(srv.port, announced, b"\x01" * MiB, context)
            wait_until(lambda: not srv.clients, timeout=20)
        assert rss.growth < 24 * MiB, f"RSS grew by {rss.growth / MiB:.0f} MiB"
        with connect() as c:
            assert c.root.echo(b"still serving") == b"still serving"


def test_frame_over_max_frame_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """A frame over the server's max_frame: a WARNING names the peer, the connection is
    closed at once; frames up to the limit pass; the server goes on serving."""
    caplog.set_level(logging.INFO)
    with running(FastThreadedServer, max_frame=2 * MiB) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        with sock:
            address = "%s:%d" % sock.getsockname()[:2]
            sock.sendall(struct.pack("!LB", 2 * MiB + 1, 0))
            try:
                assert sock.recv(1) == b""                  # closed by the server
            except ConnectionResetError:
                pass
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1 and refused[0].levelno == logging.WARNING
        assert address in refused[0].getMessage()
        assert "max_frame=2097152" in refused[0].getMessage()
        with fast_connect("127.0.0.1", srv.port) as c:
            payload = pattern(2 * MiB - 100)                 # with brine: just under 2 MiB
            assert c.root.echo(payload) == payload
        with fast_connect("127.0.0.1", srv.port) as c, pytest.raises(EOFError):
            c.root.echo(pattern(2 * MiB))
        with fast_connect("127.0.0.1", srv.port) as c:
            assert c.root.echo(b"x") == b"x"
    with pytest.raises(ValueError, match="max_frame must be a positive number"):
        FastThreadedServer(EchoService, hostname="127.0.0.1", port=0, max_frame=0)


def test_client_refuses_answers_over_its_max_frame(server: FastThreadedServer) -> None:
    with fast_connect("127.0.0.1", server.port, max_frame=MiB) as c:
        assert c.root.blob(MiB - 100) == pattern(MiB - 100)
        with pytest.raises(EOFError):
            c.root.blob(MiB + 1)
        assert c.closed


def test_compressed_frame_inflating_over_max_frame_is_refused() -> None:
    """A stock client's zlib frame (2 kB on the wire) that inflates beyond max_frame."""
    with running(FastThreadedServer, max_frame=MiB) as srv:
        with rpyc.connect("127.0.0.1", srv.port) as c:
            assert c.root.echo(b"\0" * (MiB - 100)) == b"\0" * (MiB - 100)
        with rpyc.connect("127.0.0.1", srv.port) as c, pytest.raises(EOFError):
            c.root.echo(b"\0" * (2 * MiB))
        with fast_connect("127.0.0.1", srv.port) as c:
            assert c.root.echo(b"x") == b"x"


def test_tls_client_of_plain_server_is_named_and_left_to_give_up(
        server: FastThreadedServer, pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A TLS ClientHello reads as a ~369 MB frame: refused with a WARNING that says TLS,
    but left unanswered until the client gives up (its handshake times out, so it can
    tell the server runs without TLS); then the server lets go of the connection."""
    caplog.set_level(logging.WARNING)
    with pytest.raises((TimeoutError, socket.timeout)):
        _tls_connect(server.port, pki, timeout=0.5)
    wait_until(lambda: not server.clients, timeout=10)
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert "speaks TLS" in record.getMessage()


# ------------------------------------------------------------ refused and vanished clients
@pytest.mark.parametrize("client", [None, "rogue", "plain"])
def test_refused_tls_client_is_logged_once_with_its_reason(
        tls_server: FastThreadedServer, pki: Path, client: str | None,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sock = socket.create_connection(("127.0.0.1", tls_server.port), timeout=10)
    address = "%s:%d" % sock.getsockname()[:2]
    with contextlib.suppress(OSError), sock:
        if client == "plain":
            sock.sendall(b"\0\0\0\x10\0" + b"\0" * 16)          # an RPyC frame, no TLS
        else:
            context = _raw_tls_context(pki, client)
            with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                tls.recv(1)                                    # the server's alert
        sock.recv(1)

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records if address in r.getMessage()
                and "refused" in r.getMessage()]

    wait_until(lambda: refusals(), timeout=10)
    wait_until(lambda: not tls_server.clients, timeout=10)
    (record,) = refusals()
    reason = {None: "PEER_DID_NOT_RETURN_A_CERTIFICATE", "rogue": "CERTIFICATE_VERIFY_FAILED",
              "plain": "WRONG_VERSION_NUMBER"}[client]
    assert record.levelno == logging.WARNING and reason in record.getMessage()
    assert "failed to authenticate" in record.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_connect_and_reset_is_logged_quietly(kind: str, pki: Path,
                                             caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A port scan (connect, then RST): INFO at most, no traceback, server unaffected."""
    caplog.set_level(logging.DEBUG)
    crashed: list = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    with running_kind(kind, pki) as (srv, connect):
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        wait_until(lambda: not srv.clients, timeout=10)
        with connect() as c:
            assert c.root.echo(b"ok") == b"ok"
    assert not crashed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def test_closing_a_tls_server_drops_its_clients(pki: Path) -> None:
    """rpyc's ThreadedServer.close() missed TLS clients (it held the detached plain socket)."""
    auth = SSLAuthenticator(pki / "server.key", pki / "server.pem")
    with running(FastThreadedServer, authenticator=auth) as srv:
        c = _tls_connect(srv.port, pki, config={"sync_request_timeout": 5})
        assert c.root.echo(b"x") == b"x"
    try:
        with pytest.raises(EOFError):
            c.root.echo(b"after close")
    finally:
        c.close()


def test_mef_stream_server_limits_frames_to_its_largest_answer(
        data_root: str, caplog: pytest.LogCaptureFixture) -> None:
    """MefStreamServer passes max_request_mb (+1 MiB) to its listener as max_frame."""
    from software import MefStreamServer, get_connection
    caplog.set_level(logging.WARNING, logger="software.transport.framing")
    with MefStreamServer(port=0, data_root=data_root, workers=1, max_request_mb=1) as srv:
        address = _raw_frame_then_close(srv.port, 2 * MiB + 1, b"\0" * 1024)
        wait_until(lambda: any(address in r.getMessage() for r in caplog.records))
        assert f"max_frame={2 * MiB}" in caplog.records[-1].getMessage()
        conn = get_connection(srv.port, timeout=10)
        try:
            assert conn.root.open_file("main.mefd").get_info()
        finally:
            conn.close()
