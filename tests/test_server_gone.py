"""Issue 18 §3: a follower learns that the server is gone.

A real ``start.py`` (``--live``, or a session ``--replay``) is stopped with SIGTERM or
killed with SIGKILL while followers wait in every way a script waits (``next_or_wait()``
without timeout, ``for seg in it.over(conn)``, CREPE's own polling loop of sync calls),
through ``get_connection`` and through plain ``rpyc.connect``: each must raise a
connection error naming the server. The network dropping is played by a loopback TCP
proxy that stops forwarding without closing anything (the server and its kernel stay
up): the clients' pings go unanswered. The followers are known to wait when the server
counts their requests (``waiting_requests``), not after a sleep.
"""
from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
import rpyc

import settings
from software import MefStreamServer, StreamSegmentIterator, get_connection
from software.errors import ServerGoneError
from software.live.source import LiveStream
from tests.test_crepe_scripts import CrepeStreamSegmentIterator
from tests.test_faults import spawn_server
from tests.util import wait_until

FAR = 10**7    # a position no producer reaches during a test: followers wait there


class Follower(threading.Thread):
    """Runs ``wait()`` and keeps what ended it (an exception, or the value) and when."""

    def __init__(self, name: str, wait) -> None:
        super().__init__(name=f"test-follower-{name}", daemon=True)
        self.label, self._wait = name, wait
        self.outcome: object = None
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            self.outcome = self._wait()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.outcome = exc
        self.ended_at = time.monotonic()


def followers_of(port: int, server_timeout: float = 2.0, crepe: bool = True):
    """Connections and followers waiting at FAR in each way (with ``crepe``, a last one:
    CREPE's own loop of sync calls over a plain connection, which the server does not
    count)."""
    # the socket path (same-host followers of a shared ring: tests/test_live_memory_faults.py)
    fast = [get_connection(port, host="127.0.0.1", server_timeout=server_timeout,
                           shared_memory=False) for _ in range(2)]
    slow = [rpyc.connect("127.0.0.1", port, config=settings.RPYC_CONFIG)
            for _ in range(3 if crepe else 2)]

    iterators = []

    def iterator():
        it = StreamSegmentIterator(10, start=FAR)
        it.server_timeout = server_timeout
        iterators.append(it)
        return it

    def polling():
        it = CrepeStreamSegmentIterator(10)
        it.index = FAR
        return it.next_or_wait(slow[2], sleep=0.05)

    followers = [Follower("fast-next_or_wait", lambda: iterator().next_or_wait(fast[0])),
                 Follower("fast-over", lambda: list(iterator().over(fast[1]))),
                 Follower("plain-next_or_wait", lambda: iterator().next_or_wait(slow[0])),
                 Follower("plain-over", lambda: list(iterator().over(slow[1])))]
    if len(slow) == 3:
        followers.append(Follower("crepe-polling", polling))
    return fast + slow, followers, iterators


def in_their_wait(iterators, count: int) -> bool:
    """Whether ``count`` iterators got the answer of their registering call and wait for
    the callback (a reply still on its way when a proxy stalls would be lost: a call in
    flight is not what these tests are about)."""
    return sum(it._waiting is not None for it in list(iterators)) >= count


def close_all(conns) -> None:
    for conn in conns:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - the server is gone
            pass


def assert_told_gone(followers, port: int, why: str | None = None,
                     timeout: float = 30) -> None:
    """Every follower thread ended with a ServerGoneError naming ``127.0.0.1:port`` (and
    saying ``why``); ``timeout`` guards against a hang, it is not a timing goal."""
    for follower in followers:
        follower.join(timeout)
        assert not follower.is_alive(), f"{follower.label} still waits"
        assert isinstance(follower.outcome, ServerGoneError), (follower.label, follower.outcome)
        assert f"127.0.0.1:{port}" in str(follower.outcome), (follower.label, follower.outcome)
        if why is not None:
            assert why in str(follower.outcome), (follower.label, follower.outcome)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("kind", ["live", "replay"])
def test_every_waiting_follower_learns_the_server_is_gone(kind, how, data_root, main_path,
                                                          tmp_path):
    """Failed before: with SIGTERM (and SIGKILL) the get_connection followers waited
    forever (the iterator never looked at its connection), plain ones ended with a bare
    EOFError."""
    extra = ("--live", "rig", "--channels", "a,b", "--fs", "1000") if kind == "live" \
        else (main_path, "--replay", "--speed", "1")
    proc, port = spawn_server(data_root, tmp_path / "server.log", *extra)
    conns = []
    try:
        monitor = get_connection(port, host="127.0.0.1")
        conns, followers, _ = followers_of(port)
        conns.append(monitor)
        for follower in followers:
            follower.start()
        wait_until(lambda: dict(monitor.root.get_stats())["waiting_requests"] >= 4,
                   timeout=30)
        sent = time.monotonic()
        proc.send_signal(how)
        for follower in followers:
            follower.join(30)                 # a guard against a hang, not a timing goal
            assert not follower.is_alive(), f"{follower.label} still waits"
        where = f"127.0.0.1:{port}"
        for follower in followers[:4]:
            assert isinstance(follower.outcome, ServerGoneError), \
                (follower.label, follower.outcome)
            assert where in str(follower.outcome), (follower.label, follower.outcome)
        assert isinstance(followers[4].outcome, EOFError)     # stock RPyC's own error
        with pytest.raises(ServerGoneError, match=where):
            monitor.root.get_info()                           # a sync call: at once
        print({f.label: round(f.ended_at - sent, 3) for f in followers})
    finally:
        close_all(conns)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


class StallingProxy:
    """A loopback TCP proxy to ``port`` that can stop forwarding without closing anything:
    what a client sees when the network drops (its requests are acknowledged by the
    proxy's kernel, nothing comes back)."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._stalled = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), name="test-proxy-pump",
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self._stalled.is_set():
                    break
                dst.sendall(data)
        except OSError:
            return
        self._closed.wait()          # stalled: hold everything open, forward nothing

    def stall(self) -> None:
        self._stalled.set()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()


def test_followers_learn_that_the_network_dropped():
    """Failed before: the followers behind a proxy that stopped forwarding waited forever
    (nothing closes, so only an unanswered ping tells)."""
    stream = LiveStream("rig", ["a", "b"], 1000.0, history_seconds=10)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        proxy = StallingProxy(srv.port)
        conns = []
        try:
            monitor = get_connection(srv.port, host="127.0.0.1")
            # CREPE's own loop is left out: a sync call in flight cannot tell a stalled
            # network from a busy server (TCP keep-alive ends it when the network is gone)
            conns, followers, iterators = followers_of(proxy.port, server_timeout=1.0,
                                                       crepe=False)
            conns.append(monitor)
            for follower in followers:
                follower.start()
            wait_until(lambda: dict(monitor.root.get_stats())["waiting_requests"] >= 4
                       and in_their_wait(iterators, 4), timeout=30)
            proxy.stall()
            assert_told_gone(followers, proxy.port, "no answer")
        finally:
            proxy.close()
            close_all(conns)


def test_a_timeout_says_no_data_yet_only_while_the_server_is_there():
    """A wait that times out asks the server to withdraw its request: a server that is
    there answers (TimeoutError, "no data yet"); one that is not makes it a
    ServerGoneError (here before the pings, slowed to 30 s, could tell)."""
    stream = LiveStream("rig", ["a"], 1000.0, history_seconds=10)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        proxy = StallingProxy(srv.port)
        conn = get_connection(proxy.port, host="127.0.0.1", server_timeout=30,
                              shared_memory=False)   # the ring's case: test_live_memory*
        try:
            it = StreamSegmentIterator(10, start=FAR)
            it.server_timeout = 0.5
            with pytest.raises(TimeoutError, match="no data yet") as late:
                next(it.over(conn, timeout=0.05))
            assert not isinstance(late.value, ServerGoneError)
            follower = Follower("over-timeout", lambda: next(it.over(conn, timeout=3)))
            follower.start()
            wait_until(lambda: it._waiting is not None, timeout=30)
            proxy.stall()                         # while it waits
            follower.join(60)
            assert not follower.is_alive()
            assert isinstance(follower.outcome, ServerGoneError), follower.outcome
            assert f"127.0.0.1:{proxy.port}" in str(follower.outcome)
        finally:
            proxy.close()
            close_all([conn])
