"""TLS end to end (issue 3): ``start.py --tls-cert --tls-key --tls-ca`` and
``get_connection(keyfile=, certfile=, ca_certs=)``, with certificates made for the test
(the ``pki`` fixture: tests/pki.py).

The bare transport's TLS is tested in test_transport.py; here it is the product: a real
``start.py`` process (and an in-process ``MefStreamServer`` with rpyc's
``SSLAuthenticator``), real reader processes, values compared with ``MefReader``.
"""
from __future__ import annotations

import logging
import re
import signal
import ssl
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from rpyc.utils.authenticators import SSLAuthenticator

from software import (
    MefStreamServer,
    StreamSegmentIterator,
    decode_segment,
    get_connection,
)
from tests.test_faults import MAIN_CHANNELS, ROOT, Stopped, same, spawn_server
from tests.util import reference, wait_until


@pytest.fixture(scope="module")
def main_ref(main_path):
    return reference(main_path, MAIN_CHANNELS)


def tls_files(pki, client: str | None = "client", ca: str = "ca") -> dict:
    """get_connection's TLS arguments: ``client``'s key and certificate (None: none), and
    the CA the client trusts for the server's certificate."""
    files = {"ca_certs": str(pki / f"{ca}.pem")}
    if client is not None:
        files.update(keyfile=str(pki / f"{client}.key"), certfile=str(pki / f"{client}.pem"))
    return files


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM ``start.py`` and return its exit code (killing it if it hangs)."""
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tls_server(data_root, pki, tmp_path_factory):
    """``start.py`` on every interface (0.0.0.0), TLS, client certificates signed by
    ``ca`` required. Yields (port, log path)."""
    log = tmp_path_factory.mktemp("tls") / "server.log"
    proc, port = spawn_server(data_root, log, "--host", "0.0.0.0", "--workers", "2",
                              "--tls-cert", str(pki / "server.pem"),
                              "--tls-key", str(pki / "server.key"),
                              "--tls-ca", str(pki / "ca.pem"))
    try:
        yield port, log
    finally:
        assert stop(proc) == 0
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in text, text


def connect(port: int, pki, **kwargs):
    return get_connection(port, host="127.0.0.1", timeout=10, **{**tls_files(pki), **kwargs})


def test_start_py_streams_over_tls(tls_server, pki, main_ref):
    """A client with a certificate signed by the server's CA: sync calls, callbacks and a
    StreamSegmentIterator pass over TLS, every value equal to MefReader's."""
    port, log = tls_server
    conn = connect(port, pki)
    try:
        assert isinstance(conn._channel.stream.sock, ssl.SSLSocket)
        svc = conn.root.open_file("main.mefd")
        info = dict(svc.get_info())
        n = info["n_samples"]
        assert info["channels"] == MAIN_CHANNELS and n == main_ref.shape[1]
        # synchronous calls
        assert same(decode_segment(svc.get_stream_segment(3000, 1000)),
                    main_ref[:, 1000:4000])
        assert same(decode_segment(svc.get_row_segment("index", 700, 5000)),
                    main_ref[MAIN_CHANNELS.index("index"), 5000:5700])
        # callbacks: cold windows far apart, so the answers come through the callback
        starts = (20_000, 30_000, 40_000)
        answers, arrived = {}, threading.Event()

        def deliver(start, value) -> None:
            answers[start] = value
            if len(answers) == len(starts):
                arrived.set()

        direct = {}
        for start in starts:
            value = svc.get_stream_segment(1500, start, lambda v, s=start: deliver(s, v))
            if value is not False:                     # cached after all: no callback
                direct[start] = value
                deliver(start, value)
        assert len(direct) < len(starts)               # some went through a callback
        assert arrived.wait(30)
        for start in starts:
            assert same(decode_segment(answers[start]), main_ref[:, start:start + 1500])
        # the iterator (callback-driven next_or_wait) over the whole file
        chunks = list(StreamSegmentIterator(_range=4096).over(svc, timeout=30))
        assert same(np.concatenate(chunks, axis=1), main_ref)
    finally:
        conn.close()
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "ready on 0.0.0.0:" in text
    assert "without TLS" not in text and "without --tls-ca" not in text   # TLS, CA: quiet


REFUSED = {
    # case: (client certificate, CA the client trusts, error, words of its message)
    "no client certificate": (None, "ca", PermissionError, "no client certificate"),
    "client certificate of another CA": ("rogue", "ca", PermissionError, "certfile="),
    "plain connection": ("plain", None, ConnectionError, "pass ca_certs="),
    "server certificate not trusted": ("client", "otherca", PermissionError,
                                       "not signed by ca_certs"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_clients_and_the_good_one_goes_on(tls_server, pki, main_ref, case):
    """Clients without a valid certificate (or without TLS) are refused by get_connection
    with an error saying what to pass; a good client streaming meanwhile is unaffected,
    and new good clients still get in."""
    port, log = tls_server
    client, ca, error, words = REFUSED[case]
    refusal = re.compile(r"WARNING software\.rpyc: refused 127\.0\.0\.1:\d+: failed to "
                         r"authenticate \(\[SSL: \w+\]")

    def refusals() -> int:
        return len(refusal.findall(log.read_text(encoding="utf-8", errors="replace")))

    before = refusals()
    good = connect(port, pki)
    try:
        svc = good.root.open_file("main.mefd")
        assert same(decode_segment(svc.get_stream_segment(2000, 10_000)),
                    main_ref[:, 10_000:12_000])
        files = {} if client == "plain" else tls_files(pki, client, ca)
        started = time.monotonic()
        with pytest.raises(error) as refused:
            get_connection(port, host="127.0.0.1", timeout=10, **files)
        message = str(refused.value)
        assert time.monotonic() - started < 5                     # no retrying until timeout
        assert f"127.0.0.1:{port}" in message and words in message, message
        if client in (None, "rogue"):       # the TLS alert names what was wrong
            assert "refused the TLS connection" in message and "keyfile=" in message
        # the good client is still served, and a new one gets in
        assert same(decode_segment(svc.get_stream_segment(2000, 12_000)),
                    main_ref[:, 12_000:14_000])
        again = connect(port, pki)
        try:
            assert same(decode_segment(again.root.open_file("main.mefd")
                                       .get_stream_segment(500, 44_000)),
                        main_ref[:, 44_000:44_500])
        finally:
            again.close()
    finally:
        good.close()
    # the server noted it once, at WARNING, with the TLS reason and the client's address
    wait_until(lambda: refusals() > before, timeout=10)
    assert refusals() == before + 1
    assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace")


def test_tls_client_of_a_plain_server_fails_fast(server, pki):
    """TLS towards a server without TLS: a clear error after the handshake timeout, not
    "no mefstream server" after retrying for the whole timeout."""
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="did not answer the TLS handshake") as caught:
        get_connection(server.port, host="127.0.0.1", timeout=0.5, **tls_files(pki))
    assert not isinstance(caught.value, ConnectionRefusedError)
    assert "without TLS" in str(caught.value) and time.monotonic() - started < 5


def test_in_process_server_with_ssl_authenticator(data_root, pki, main_ref, caplog):
    """MefStreamServer(authenticator=SSLAuthenticator(...)) on 0.0.0.0: no "without TLS"
    warning; answers that wait for (stopped) readers reach the client's callbacks over
    TLS, exact."""
    caplog.set_level(logging.WARNING)
    auth = SSLAuthenticator(pki / "server.key", pki / "server.pem", ca_certs=pki / "ca.pem",
                            cert_reqs=ssl.CERT_REQUIRED)
    with MefStreamServer(host="0.0.0.0", port=0, data_root=data_root, workers=1,
                         prefetch=0, authenticator=auth) as srv:
        assert not [r for r in caplog.records if "without TLS" in r.getMessage()]
        srv.pool.warm_up()
        conn = connect(srv.port, pki)
        try:
            svc = conn.root.open_file("main.mefd")
            starts = range(0, 40_000, 5000)
            answers, arrived = {}, threading.Event()

            def deliver(start, value) -> None:
                answers[start] = value
                if len(answers) == len(starts):
                    arrived.set()

            with Stopped(srv.pool.pids()):          # every answer through a callback
                for start in starts:
                    assert svc.get_stream_segment(
                        3000, start, lambda v, s=start: deliver(s, v)) is False
            assert arrived.wait(30)
            for start in starts:
                assert same(decode_segment(answers[start]), main_ref[:, start:start + 3000])
        finally:
            conn.close()
        # a client of another CA is refused here too; the server goes on
        with pytest.raises(PermissionError):
            connect(srv.port, pki, **tls_files(pki, "rogue"))
        conn = connect(srv.port, pki)
        try:
            assert same(decode_segment(conn.root.open_file("main.mefd")
                                       .get_stream_segment(100, 0)), main_ref[:, :100])
        finally:
            conn.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_start_py_tls_without_ca_warns_on_other_interfaces(data_root, pki, tmp_path,
                                                           main_ref):
    """--tls-cert/--tls-key without --tls-ca: encrypted, but any client gets in (only the
    server's certificate is checked), so binding 0.0.0.0 logs a warning naming --tls-ca."""
    log = tmp_path / "server.log"
    proc, port = spawn_server(data_root, log, "--host", "0.0.0.0", "--workers", "1",
                              "--tls-cert", str(pki / "server.pem"),
                              "--tls-key", str(pki / "server.key"))
    try:
        conn = get_connection(port, host="127.0.0.1", **tls_files(pki, None))  # no cert
        try:
            assert isinstance(conn._channel.stream.sock, ssl.SSLSocket)
            assert same(decode_segment(conn.root.open_file("main.mefd")
                                       .get_stream_segment(256, 256)), main_ref[:, 256:512])
        finally:
            conn.close()
    finally:
        assert stop(proc) == 0
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "WARNING" in text and "without --tls-ca" in text, text
    assert "without TLS" not in text


@pytest.mark.parametrize("key", ["client.key", "missing.key"])
def test_start_py_refuses_tls_files_that_do_not_load(data_root, pki, key):
    """A key that does not match the certificate, or a missing file: start.py exits 2 at
    once naming the files (rpyc's SSLAuthenticator would load them only at each
    connection, and refuse every client of a server that looks healthy)."""
    done = subprocess.run(
        [sys.executable, "start.py", "--port", "0", "--data-root", data_root,
         "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / key),
         "--tls-ca", str(pki / "ca.pem")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "cannot start" in done.stderr and key in done.stderr, done.stderr
    assert "ready on" not in done.stderr
