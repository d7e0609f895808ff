"""Discovery on loopback: an RPyC TCP registry, servers announcing, clients looking up."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from rpyc.utils.registry import TCPRegistryClient

from software import (
    InvalidArgumentError,
    MefStreamServer,
    decode_segment,
    get_connection,
)
from software.discovery import (
    RegistryServer,
    announce,
    format_address,
    list_services,
    lookup,
    parse_address,
)
from tests.util import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def registry():
    with RegistryServer("127.0.0.1", 0) as reg:
        yield reg


def test_two_servers_are_found_and_a_closed_one_disappears(registry, server, data_root):
    where = f"127.0.0.1:{registry.port}"
    with MefStreamServer(host="127.0.0.1", port=0, data_root=data_root, workers=1) as other:
        first = announce("MEF", server.port, where, host="127.0.0.1")
        second = announce("mef", other.port, registry.address)
        try:
            wait_until(lambda: len(lookup("MEF", where)) == 2)
            found = lookup("Mef", where)
            assert sorted(found) == sorted([("127.0.0.1", server.port),
                                            ("127.0.0.1", other.port)])
            assert list_services(where) == {"MEF": found}
            for host, port in found:                     # real servers behind them
                conn = get_connection(port, host=host)
                try:
                    seg = decode_segment(conn.root.open_file("main.mefd")
                                         .get_stream_segment(10, 0))
                    assert seg.shape == (6, 10) and np.isfinite(seg).all()
                finally:
                    conn.close()
            second.close()
            second.close()                               # idempotent
            wait_until(lambda: lookup("MEF", where) == [("127.0.0.1", server.port)])
            assert second.closed and "closed" in repr(second)
        finally:
            first.close()
            second.close()
    wait_until(lambda: lookup("MEF", where) == [])
    assert list_services(where) == {}


def test_announcer_keeps_a_server_registered_past_the_pruning_timeout():
    with RegistryServer("127.0.0.1", 0, pruning_timeout=0.5) as reg:
        with announce("MEF", 4321, reg.address, interval=0.05) as handle:
            assert handle.wait_registered(5)
            started = time.monotonic()
            wait_until(lambda: handle.registrations >= 3
                       and time.monotonic() - started > 0.6)
            assert lookup("MEF", reg.address) == [("127.0.0.1", 4321)]
        # stopped without unregistering (a killed server): pruned after the timeout
        with announce("GONE", 4322, reg.address, interval=60) as gone:
            assert gone.wait_registered(5)
        assert lookup("GONE", reg.address) == []         # close() unregistered it
        TCPRegistryClient("127.0.0.1", reg.port).register(("STALE",), 4323)
        assert lookup("STALE", reg.address) == [("127.0.0.1", 4323)]
        wait_until(lambda: lookup("STALE", reg.address) == [], timeout=5)


def test_a_silent_peer_does_not_block_the_registry(registry):
    """rpyc 6.0.2's TCP registry waits forever for a peer that connects and sends
    nothing; this one gives up on it after its 1 s timeout and goes on serving."""
    with announce("MEF", 5555, registry.address) as handle:
        assert handle.wait_registered(5)
        with socket.create_connection(registry.address):  # connects, never sends
            assert lookup("MEF", registry.address, timeout=4) == [("127.0.0.1", 5555)]


def test_an_announcer_retries_until_the_registry_comes(caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handle = announce("MEF", 6000, ("127.0.0.1", port), interval=0.05, timeout=0.5)
    try:
        wait_until(lambda: "cannot announce MEF" in caplog.text)
        assert not handle.wait_registered(0)
        with RegistryServer("127.0.0.1", port) as reg:
            assert handle.wait_registered(10)
            assert lookup("MEF", reg.address) == [("127.0.0.1", 6000)]
    finally:
        handle.close()
    assert caplog.text.count("cannot announce MEF") == 1   # once per outage


def test_close_is_prompt_and_idempotent_and_frees_the_port():
    reg = RegistryServer("127.0.0.1", 0)
    reg.close()
    reg.close()
    assert reg.closed
    with pytest.raises(ConnectionRefusedError, match="python -m software registry"):
        lookup("MEF", reg.address)
    with RegistryServer("127.0.0.1", reg.port):          # the port can be bound again
        pass


def test_listing_refused_and_bad_arguments(registry):
    with RegistryServer("127.0.0.1", 0, allow_listing=False) as closed:
        with pytest.raises(PermissionError, match="listing"):
            list_services(closed.address)
    with pytest.raises(InvalidArgumentError, match="port"):
        announce("MEF", 0, registry.address)
    with pytest.raises(InvalidArgumentError, match="name"):
        announce("", 1234, registry.address)
    with pytest.raises(InvalidArgumentError, match="registry"):
        announce("MEF", 1234, "127.0.0.1:http")


@pytest.mark.parametrize("value, default, expected", [
    ("10.0.0.5:18811", None, ("10.0.0.5", 18811)),
    ("10.0.0.5", 18811, ("10.0.0.5", 18811)),
    (("host", "42"), None, ("host", 42)),
    ("[::1]:99", None, ("::1", 99)),
    ("[::1]", 7, ("::1", 7)),
])
def test_parse_address(value, default, expected):
    assert parse_address(value, default) == expected
    assert parse_address(format_address(expected)) == expected


@pytest.mark.parametrize("value", ["host", "host:0", "host:70000", ":80", 42, ("h", 1.5)])
def test_parse_address_refuses(value):
    with pytest.raises((InvalidArgumentError, TypeError), match="address"):
        parse_address(value)


def _run_main(*args: str) -> subprocess.Popen:
    code = "import sys; from software.cli.registry import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_registry_command_serves_until_sigterm():
    proc = _run_main("--port", "0")
    try:
        line = proc.stdout.readline()
        match = re.match(r"RPyC registry listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line + proc.stderr.read()
        where = f"127.0.0.1:{match.group(1)}"
        with announce("MEF", 7000, where) as handle:
            assert handle.wait_registered(5)
            assert list_services(where) == {"MEF": [("127.0.0.1", 7000)]}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_registry_command_refuses_a_bad_port_and_a_taken_one(registry):
    bad = _run_main("--port", "70000")
    assert bad.wait(timeout=30) == 2 and "--port" in bad.stderr.read()
    taken = subprocess.run([sys.executable, "-m", "software", "registry", "--port",
                            str(registry.port)], cwd=ROOT, capture_output=True, text=True,
                           timeout=30)
    for stream in (bad.stdout, bad.stderr):
        stream.close()
    assert taken.returncode == 1 and "cannot listen" in taken.stderr


def test_example_runs(tmp_path):
    from software.mef3.demo import write_demo_recording
    write_demo_recording(str(tmp_path / "demo.mefd"), n_channels=4, minutes=1,
                         gap_seconds=None)
    result = subprocess.run([sys.executable, "examples/two_servers.py", "--data-root",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    ports = re.search(r"servers on ports (\d+) and (\d+)", out).groups()
    assert out.count("serves demo.mefd: 4 channels") == 2
    assert f"after one server stopped announcing: [('127.0.0.1', {ports[0]})]" in out


def test_start_py_announces_and_clients_find_it_by_name(data_root):
    """start.py --registry announces; get_connection(service=, registry=) and
    ls --registry find it; a clean stop unregisters at once."""
    from tests.test_quickstart import ROOT, free_port

    with RegistryServer("127.0.0.1", 0) as registry:
        where = f"127.0.0.1:{registry.port}"
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "start.py", "--data-root", data_root, "--port", str(port),
             "--workers", "1", "--registry", where, "--service-name", "mef-test"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: lookup("MEF-TEST", where) == [("127.0.0.1", port)],
                       timeout=60)
            conn = get_connection(service="mef-test", registry=where, timeout=30)
            try:
                svc = conn.root.open_file("main.mefd")
                assert svc.get_stream_segment(4, 0).shape == (6, 4)
            finally:
                conn.close()
            listed = subprocess.run([sys.executable, "-m", "software", "ls", "--registry",
                                     where], cwd=ROOT, capture_output=True, text=True,
                                    timeout=60)
            assert listed.returncode == 0, listed.stderr
            assert f"MEF-TEST  127.0.0.1:{port}" in listed.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert lookup("MEF-TEST", where) == []
        with pytest.raises(ConnectionRefusedError, match="no server is registered"):
            get_connection(service="mef-test", registry=where, timeout=2)


# ---- candidates in turn, a registry that serves everyone (issue 19) ----------------------

def dead_port() -> int:
    """A loopback port nothing listens on (a server killed without unregistering)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("dead_first", [True, False], ids=["dead-oldest", "dead-newest"])
def test_a_dead_registration_does_not_hide_a_live_server(registry, server, dead_first):
    """A server killed without unregistering (or a port registered by anyone) stays in
    the registry's answers; get_connection(service=) tries the candidates in turn and
    connects to one that answers, whichever order the registry gives them in."""
    where = registry.address
    raw = TCPRegistryClient("127.0.0.1", registry.port)
    dead = dead_port()
    order = [dead, server.port] if dead_first else [server.port, dead]
    for port in order:
        assert raw.register(("MEF",), port)
        wait_until(lambda p=port: ("127.0.0.1", p) in lookup("MEF", where))
    conn = get_connection(service="MEF", registry=f"127.0.0.1:{registry.port}", timeout=10)
    try:
        assert conn.root.open_file("main.mefd").get_stream_segment(4, 0).shape == (6, 4)
    finally:
        conn.close()
    raw.unregister(server.port)
    with pytest.raises(ConnectionRefusedError, match="none accepts connections") as caught:
        get_connection(service="MEF", registry=f"127.0.0.1:{registry.port}", timeout=5)
    assert f"127.0.0.1:{dead}" in str(caught.value)


def test_silent_peers_do_not_make_lookups_fail(registry):
    """rpyc's registry served one peer at a time, up to 1 s each: four peers that connect
    and send nothing made every lookup time out (reported as "nothing registered").
    Here 60 silent peers and one that sent half a request are served alongside."""
    from rpyc.core import brine
    with announce("MEF", 5555, registry.address) as handle:
        assert handle.wait_registered(5)
        silent = [socket.create_connection(registry.address) for _ in range(60)]
        half = socket.create_connection(registry.address)
        half.sendall(brine.dump(("RPYC", "QUERY", ("MEF",)))[:5])
        try:
            for _ in range(5):
                assert lookup("MEF", registry.address, timeout=0.5) == [("127.0.0.1", 5555)]
        finally:
            for sock in silent + [half]:
                sock.close()


def test_a_slow_registry_is_not_nothing_registered():
    """A registry that accepts and never answers: a TimeoutError that says so, for
    lookup and for get_connection(service=), never "no server is registered"."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        where = f"127.0.0.1:{mute.getsockname()[1]}"
        with pytest.raises(TimeoutError, match="did not answer within"):
            lookup("MEF", where, timeout=0.3)
        with pytest.raises(TimeoutError, match="did not answer within"):
            list_services(where, timeout=0.3)
        with pytest.raises(TimeoutError, match="did not answer within"):
            get_connection(service="MEF", registry=where, timeout=0.3)
    with pytest.raises(ConnectionRefusedError, match="no RPyC registry answered"):
        lookup("MEF", where, timeout=0.3)              # nothing there any more


@pytest.mark.parametrize("names, port", [
    (tuple(f"N{i}" for i in range(17)), 5000),          # more names than one may carry
    (("X" * 65,), 5000),                                 # a name too long
    ((), 5000), (("MEF",), 0), ((42,), 5000), ("MEF", 5000)])
def test_a_registration_beyond_the_bounds_is_refused(registry, names, port):
    from rpyc.core import brine
    with socket.create_connection(registry.address, timeout=5) as sock:
        sock.sendall(brine.dump(("RPYC", "REGISTER", (names, port))))
        reply = brine.load(sock.recv(4096))
    assert isinstance(reply, str) and reply.startswith("REFUSED"), reply
    assert registry.services() == {}
    with pytest.raises(InvalidArgumentError, match="64 characters"):
        announce("X" * 65, 5000, registry.address)          # refused before it is sent
    with announce("MEF", 5001, registry.address) as handle:   # and it goes on serving
        assert handle.wait_registered(5)
