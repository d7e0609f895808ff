"""Issue 19, "Trust", client side: what a server (an impostor, a process that took the port
first) can make a client do, and what a silent peer can make a server or client hold.

- a server naming a module cannot make a client import it (get_connection and plain
  ``rpyc.connect`` with ``settings.RPYC_CONFIG``); mefstream's errors are still rebuilt,
  showing their own class in tracebacks;
- a client caps the frame limit a server tells, and takes memory as bytes arrive, not as a
  frame header announces (RSS measured in a client subprocess);
- TLS handshakes are bounded in time and in number (silent peers);
- ``get_connection(timeout=)`` bounds the whole connect (a peer that accepts and is silent);
- ``plain_argument(np.array(5))``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import traceback

import numpy as np
import pytest
import rpyc
from rpyc.core import brine, consts
from rpyc.utils.authenticators import SSLAuthenticator
from rpyc.utils.helpers import classpartial

import settings
from software import MefStreamServer, get_connection
from software.client.values import plain_argument
from software.errors import InvalidTypeError, NoFileOpenError, RemoteError
from software.server.roots import RootService
from software.transport.connection import FastThreadedServer, fast_connect
from software.transport.framing import FastChannel
from tests.test_faults import ROOT
from tests.util import wait_until


def serve_in_thread(server) -> threading.Thread:
    server._listen()                        # listening before any client connects
    thread = threading.Thread(target=server.start, name="test-trust-server", daemon=True)
    thread.start()
    return thread


# ---- (1) no import at a peer's request --------------------------------------------------

EVIL = """\
import pathlib
pathlib.Path({marker!r}).write_text("imported")

class Boom(Exception):
    pass
"""


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """A server whose method raises an exception of a module that exists on the client's
    path and would write a marker file when imported. Yields (port, marker path)."""
    module = f"mefstream_evil_{os.getpid()}_{id(tmp_path)}"
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{module}.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    boom = type("Boom", (Exception,), {"__module__": module})   # named, never imported

    class Hostile(rpyc.Service):
        def exposed_boom(self):
            raise boom("you were told to import me")

    srv = FastThreadedServer(Hostile, hostname="127.0.0.1", port=0,
                             protocol_config={"allow_pickle": False})
    thread = serve_in_thread(srv)
    try:
        yield srv.port, marker, module
    finally:
        srv.close()
        thread.join(10)
        sys.modules.pop(module, None)


def test_get_connection_never_imports_a_module_the_server_names(hostile):
    port, marker, module = hostile
    with get_connection(port, host="127.0.0.1") as conn:
        with pytest.raises(RemoteError) as caught:
            conn.root.boom()
    assert not marker.exists() and module not in sys.modules
    assert str(caught.value).startswith(f"{module}.Boom: you were told to import me")
    assert caught.value.remote_class == f"{module}.Boom"


def test_plain_rpyc_connect_never_imports_a_module_the_server_names(hostile):
    port, marker, module = hostile
    conn = rpyc.connect("127.0.0.1", port, config=settings.RPYC_CONFIG)
    try:
        with pytest.raises(Exception, match="you were told to import me") as caught:
            conn.root.boom()
    finally:
        conn.close()
    assert not marker.exists() and module not in sys.modules
    assert module in type(caught.value).__name__            # RPyC's generic error, named


@pytest.fixture(scope="module")
def root_server(data_root):
    with MefStreamServer(port=0, data_root=data_root, workers=1) as srv:
        yield srv


def test_errors_are_rebuilt_from_the_table_and_show_their_class(root_server):
    """(5): a traceback shows ``NoFileOpenError: ...``, not RPyC's
    ``_get_exception_class.<locals>.Derived``; the class is the very one (get_connection)
    or a subclass of it (plain rpyc.connect)."""
    with get_connection(root_server.port, host="127.0.0.1") as conn:
        with pytest.raises(NoFileOpenError) as fast:
            conn.root.get_stream_segment(10, 0)
        with pytest.raises(InvalidTypeError):
            conn.root.open_file(5)
        with pytest.raises(ValueError):                   # a builtin, rebuilt as itself
            conn.root.proxy.open_shared_memory(-1)
    assert type(fast.value) is NoFileOpenError
    plain = rpyc.connect("127.0.0.1", root_server.port, config=settings.RPYC_CONFIG)
    try:
        with pytest.raises(NoFileOpenError) as slow:
            plain.root.get_stream_segment(10, 0)
    finally:
        plain.close()
    for caught in (fast, slow):
        shown = "".join(traceback.format_exception_only(caught.type, caught.value))
        assert "NoFileOpenError: get_stream_segment is a method of an open file" in shown
        assert "<locals>" not in shown and "Derived" not in shown


# ---- (2) the frame limit a server tells, and memory as bytes arrive ---------------------

class _Boastful(RootService):
    """A root service telling a 5 GiB frame limit."""

    def exposed_get_limits(self):
        return (("max_request_bytes", 5 * 2**30), ("max_frame", 5 * 2**30 + 2**20))


def test_the_client_caps_the_frame_limit_a_server_tells(root_server):
    srv = FastThreadedServer(classpartial(_Boastful, root_server.registry,
                                          root_server.options),
                             hostname="127.0.0.1", port=0,
                             protocol_config={"allow_pickle": False})
    thread = serve_in_thread(srv)
    try:
        with get_connection(srv.port, host="127.0.0.1") as conn:
            assert conn.limits["max_frame"] == 5 * 2**30 + 2**20
            assert conn._channel.max_frame == FastChannel.MAX_FRAME      # capped
            assert conn.root.open_file("main.mefd").get_stream_segment(5, 0).shape == (6, 5)
        with get_connection(srv.port, host="127.0.0.1", max_frame=2**31) as conn:
            assert conn._channel.max_frame == 2**31                      # asked for
    finally:
        srv.close()
        thread.join(10)


def _lying_server(announce: int) -> tuple[socket.socket, threading.Thread]:
    """A raw server answering the first frame it gets with a frame header announcing
    ``announce`` bytes (an RPyC reply holding a byte string that large), 1 kB of it, then
    closing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def run():
        sock, _ = listener.accept()
        with sock:
            sock.recv(65536)                                   # the client's first request
            size = announce - 32
            head = (brine.I1.pack(consts.MSG_REPLY) + brine.TAG_TUP2 + brine.dump(1)
                    + brine.TAG_TUP2 + brine.dump(consts.LABEL_VALUE)
                    + brine.TAG_STR_L4 + brine.I4.pack(size))
            length = len(head) + size
            sock.sendall(FastChannel.FRAME_HEADER.pack(length, 0) + head + b"x" * 1024)
            sock.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=run, name="test-lying-server", daemon=True)
    thread.start()
    return listener, thread


CLIENT = """\
import resource, sys
from software.client.receive import install
from software.transport.connection import fast_connect
port, announce = int(sys.argv[1]), int(sys.argv[2])
conn = fast_connect("127.0.0.1", port, max_frame=announce + 2**20)
install(conn._channel)                 # get_connection's receive path
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    conn.root
except EOFError:
    pass
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)        # peak RSS growth, MiB
"""


def test_memory_follows_the_bytes_that_arrive_not_the_announced_size():
    """A server announcing 1 GiB (under the client's limit: the limit alone is no defence)
    and sending 1 kB: the client must not allocate 1 GiB. Measured in a subprocess (its
    own peak RSS)."""
    announce = 2**30
    listener, thread = _lying_server(announce)
    try:
        out = subprocess.run([sys.executable, "-c", CLIENT, str(listener.getsockname()[1]),
                              str(announce)], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        grew_mib = int(out.stdout.strip().splitlines()[-1])
        assert grew_mib < 64, f"the client's RSS grew by {grew_mib} MiB"
    finally:
        listener.close()
        thread.join(10)


# ---- (3) TLS handshakes bounded in time and number ---------------------------------------

class Echo(rpyc.Service):
    def exposed_echo(self, value):
        return value


class _Counting(FastThreadedServer):
    """Notes the most handshakes under way at once, and the threads serving clients."""

    peak = 0

    def _accept_method(self, sock):
        super()._accept_method(sock)
        self.peak = max(self.peak, self.handshaking)


def test_silent_tls_peers_hold_no_thread_or_descriptor(pki):
    """40 peers connect to a TLS server and say nothing. Failed before: 40 threads and
    descriptors held forever (now: at most 8 at once, each for 1 s)."""
    srv = _Counting(
        Echo, hostname="127.0.0.1", port=0, protocol_config={"allow_pickle": False},
        authenticator=SSLAuthenticator(str(pki / "server.key"), str(pki / "server.pem")),
        handshake_timeout=1.0, max_handshakes=8)
    thread = serve_in_thread(srv)
    threads_before = threading.active_count()
    silent = []
    try:
        for _ in range(40):                                       # connect, say nothing
            silent.append(socket.create_connection(("127.0.0.1", srv.port)))
        for sock in silent:                                       # each is closed
            sock.settimeout(30)
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
        assert srv.peak == 8                                      # the rest at once
        wait_until(lambda: srv.handshaking == 0 and not srv.clients, timeout=30)
        wait_until(lambda: threading.active_count() <= threads_before, timeout=30)
        with fast_connect("127.0.0.1", srv.port, ca_certs=str(pki / "ca.pem")) as conn:
            assert conn.root.echo("still serving") == "still serving"
    finally:
        for sock in silent:
            sock.close()
        srv.close()
        thread.join(10)


def test_handshake_options_are_checked():
    with pytest.raises(ValueError, match="handshake_timeout must be > 0"):
        FastThreadedServer(Echo, hostname="127.0.0.1", port=0, handshake_timeout=0)
    with pytest.raises(ValueError, match="max_handshakes must be >= 1"):
        FastThreadedServer(Echo, hostname="127.0.0.1", port=0, max_handshakes=0)


# ---- (4) get_connection(timeout=) bounds the whole connect --------------------------------

@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_get_connection_to_a_silent_listener_gives_up_within_its_timeout(tls, pki):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)                # the kernel accepts; nobody ever answers
    port = listener.getsockname()[1]
    outcome: list = []
    files = {"ca_certs": str(pki / "ca.pem")} if tls else {}

    def connect():
        try:
            get_connection(port, host="127.0.0.1", timeout=1, **files).close()
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    worker = threading.Thread(target=connect, name="test-silent-connect", daemon=True)
    try:
        worker.start()
        worker.join(60)               # a guard against a hang, not a timing goal
        assert not worker.is_alive(), "get_connection(timeout=1) was still blocked"
    finally:
        listener.close()
    error = outcome[0]
    assert isinstance(error, (TimeoutError, ConnectionError)), repr(error)
    assert f"127.0.0.1:{port}" in str(error)


# ---- (6) 0-d arrays ---------------------------------------------------------------------

def test_plain_argument_takes_0d_arrays_as_scalars():
    assert plain_argument(np.array(5)) == 5 and type(plain_argument(np.array(5))) is int
    assert plain_argument(np.array(2.5)) == 2.5 and type(plain_argument(np.float32(2))) is float
    assert plain_argument(np.array([[1, 2], [3, 4]])) == ((1, 2), (3, 4))
    assert plain_argument([np.array(1), (np.int16(2),)]) == (1, (2,))
