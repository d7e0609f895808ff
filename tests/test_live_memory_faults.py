"""Issue 16: nothing a same-host follower, producer or server does when it dies spoils the
shared ring for the others.

Followers and producers are real processes (``tests/live_actors.py``) killed with SIGKILL
in the states the tests build on purpose: a follower waiting and one reading, a producer
stopped with SIGSTOP while it holds the write position (samples reserved and half
written, or committed and not published). Servers are real ``start.py`` processes killed
while followers wait in memory. Mutants each test kills are named in its docstring.
"""
from __future__ import annotations

import signal

import pytest

from software import MefStreamServer, StreamSegmentIterator, errors, get_connection
from software.errors import ServerGoneError
from software.live.source import LiveStream
from software.shm.ring import SHAREABLE
from tests.live_actors import ramp
from tests.test_faults import spawn_server
from tests.test_live_memory import actors, served, stats
from tests.test_server_gone import FAR, Follower, StallingProxy, assert_told_gone, close_all
from tests.util import wait_until

FS = 1000.0

pytestmark = pytest.mark.skipif(not SHAREABLE, reason="no shared rings on this system")


def named_shm(pid: int) -> list[str]:
    """Files of /dev/shm that process ``pid`` maps and that still have a name (what its
    death would leave behind; the ring is a memfd and has none, answer areas are
    unlinked once attached). Other processes' files are not looked at: the machine may
    run other tests."""
    with open(f"/proc/{pid}/maps", encoding="utf-8") as maps:
        return sorted({line.split(None, 5)[5].strip() for line in maps
                       if "/dev/shm/" in line and not line.rstrip().endswith("(deleted)")})


def kill(actor) -> None:
    actor.proc.kill()
    actor.proc.wait(30)


def test_followers_killed_while_waiting_and_while_reading_leave_nothing_behind():
    """Kills: a view that keeps counting a follower after its connection ended (and a
    follower that would need the server to release anything)."""
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=1)
    with served(stream) as srv, actors(("follow", str(srv.port)), ("follow", str(srv.port)),
                                       ("follow", str(srv.port))) as (waiting, reading, last):
        stream.append_stream_segment_data(ramp(2, 0, 100))
        assert waiting.ask("from 10 500") == ["ok"]
        waiting.send("next")                               # waits at 500, in memory
        assert reading.ask("spin 50 20") == ["spinning"]   # copies [20, 70) in a loop
        assert last.ask("from 10 100") == ["ok"]
        wait_until(lambda: stats(srv.port)["ring_followers"] == 3)
        assert any("memfd:mefstream-ring" in line
                   for line in open(f"/proc/{reading.proc.pid}/maps", encoding="utf-8"))
        for actor in (waiting, reading):
            actor.proc.send_signal(signal.SIGSTOP)         # wherever it is in its loop
            assert named_shm(actor.proc.pid) == []
            kill(actor)
        wait_until(lambda: stats(srv.port)["ring_followers"] == 1)
        for k in range(10):                                # nobody is held up
            stream.append_stream_segment_data(ramp(2, 100 + 10 * k, 10))
            assert last.ask("next") == ["chunk", 100 + 10 * k, 10, True, "float64"]
        assert stats(srv.port)["connections"] == 2      # last, and the one asking


def test_a_producer_stopped_mid_push_then_killed_leaves_no_partial_samples():
    """The producer reserved 30 samples and wrote garbage over the slots of old ones, then
    stopped (SIGSTOP) holding the write position, and was killed. Nothing of it is ever
    visible, the old samples it overwrote are reported dropped (never returned), the
    server takes the lease back and the next producer goes on exactly. Kills: the head
    moved before the samples are written; the write position not announced before the
    samples; the lease kept after the producer's connection ended."""
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=0.1)   # capacity 125
    with served(stream) as srv, actors(("follow", str(srv.port)), ("follow", str(srv.port),
                                                                   "socket"),
                                       ("produce", str(srv.port))) as (ring, sock, producer):
        assert producer.ask("push 0 150") == ["head", 150]
        assert producer.ask("partial 30") == ["holding", 150]   # slots of [25, 55) hit
        producer.proc.send_signal(signal.SIGSTOP)
        assert stream.head == 150 and stream.first_available == 55
        for follower in (ring, sock):
            assert follower.ask("from 30 150") == ["ok"]
            assert follower.ask("next 0.2") == ["false", 150]    # nothing new
            assert follower.ask("seek 30") == ["ok"]
            assert follower.ask("next")[:2] == ["error", "DroppedSamplesError"]
        with pytest.raises(errors.PushRefusedError):
            stream.append_stream_segment_data(ramp(2, 150, 30))
        kill(producer)
        wait_until(lambda: stats(srv.port)["ring_producers"] == 0)
        assert stream.head == 150
        with actors(("produce", str(srv.port))) as (successor,):
            assert successor.ask("push 150 30") == ["head", 180]
        for follower in (ring, sock):
            assert follower.ask("seek 150") == ["ok"]
            assert follower.ask("next") == ["chunk", 150, 30, True, "float64"]


def test_samples_a_killed_producer_committed_are_published_when_its_lease_ends():
    """Killed between its commit and its publish: the samples are whole, the server
    publishes them when it takes the lease back. Kills: a release without the repair."""
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=1)
    with served(stream) as srv, actors(("follow", str(srv.port)),
                                       ("produce", str(srv.port))) as (ring, producer):
        assert producer.ask("push 0 20") == ["head", 20]
        assert producer.ask("committed 15") == ["holding", 20]
        producer.proc.send_signal(signal.SIGSTOP)
        assert ring.ask("from 35 0") == ["ok"]
        assert ring.ask("next 0.2") == ["false", 0]
        kill(producer)
        wait_until(lambda: stats(srv.port)["ring_producers"] == 0)
        assert stream.head == 35                              # published, no push since
        assert ring.ask("next") == ["chunk", 0, 35, True, "float64"]
        assert stream.append_stream_segment_data(ramp(2, 35, 5)) == 40


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_followers_waiting_in_memory_learn_the_server_is_gone(how, data_root, tmp_path):
    """Followers sleeping on the ring's futex (``next_or_wait()`` without timeout, and
    ``over()``) raise ServerGoneError naming the server when it is stopped or killed; the
    ring has no name in /dev/shm to leave behind. Kills: a ring wait that never looks at
    its connection."""
    proc, port = spawn_server(data_root, tmp_path / "server.log", "--live", "rig",
                              "--channels", "a,b", "--fs", "1000")
    conns = [get_connection(port, host="127.0.0.1") for _ in range(2)]
    try:
        followers = [Follower("ring-next_or_wait", lambda: StreamSegmentIterator(
                         10, start=FAR).next_or_wait(conns[0])),
                     Follower("ring-over", lambda: list(StreamSegmentIterator(
                         10, start=FAR).over(conns[1])))]
        for follower in followers:
            follower.start()
        def waiting() -> bool:
            assert not any(f.ended_at for f in followers), [f.outcome for f in followers]
            return all(c.root.ring_follower().waiting == 1 for c in conns)

        wait_until(waiting, timeout=30)
        with open(f"/proc/{proc.pid}/maps", encoding="utf-8") as maps:
            ring = [line for line in maps if "mefstream-ring" in line]
        assert ring and all(line.rstrip().endswith("/memfd:mefstream-ring (deleted)")
                            for line in ring)     # no name its death could leave behind
        proc.send_signal(how)
        assert_told_gone(followers, port)
    finally:
        close_all(conns)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_followers_in_memory_learn_that_the_network_dropped():
    """The server's process is up (its ring still mapped), but its connection stops
    answering: the followers' pings go unanswered and they raise ServerGoneError; a wait
    with a timeout says "no data yet" only while the server answers. Kills: a ring wait
    that times out without asking whether the server is there."""
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=10)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        proxy = StallingProxy(srv.port)
        conns = [get_connection(proxy.port, host="127.0.0.1", server_timeout=1.0),
                 get_connection(proxy.port, host="127.0.0.1", server_timeout=30)]
        try:
            timed = StreamSegmentIterator(10, start=FAR)
            timed.server_timeout = 0.5
            with pytest.raises(TimeoutError, match="no data yet") as late:
                next(timed.over(conns[1], timeout=0.05))
            assert not isinstance(late.value, ServerGoneError)
            followers = [Follower("ring-wait", lambda: StreamSegmentIterator(
                             10, start=FAR).next_or_wait(conns[0])),
                         Follower("ring-timeout", lambda: next(timed.over(conns[1],
                                                                          timeout=20)))]
            for follower in followers:
                follower.start()

            def waiting() -> bool:
                assert not any(f.ended_at for f in followers), [f.outcome for f in followers]
                return all(c.root.ring_follower().waiting == 1 for c in conns)

            wait_until(waiting, timeout=30)
            proxy.stall()
            assert_told_gone(followers, proxy.port, "no answer", timeout=60)
        finally:
            proxy.close()
            close_all(conns)


def test_a_closed_stream_ends_memory_followers_with_the_servers_error():
    """The stream closes while the server goes on: a follower in memory wakes (the ring's
    closed flag) and gets the server's own error through the socket."""
    stream = LiveStream("rig", ["a"], FS, history_seconds=1)
    with served(stream) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        stream.append_stream_segment_data(ramp(1, 0, 10))
        it = StreamSegmentIterator(10, start=20)
        follower = Follower("closed", lambda: it.next_or_wait(conn))
        follower.start()
        wait_until(lambda: conn.root.ring_follower().waiting == 1)
        stream.close()
        follower.join(30)                         # a guard against a hang
        assert isinstance(follower.outcome, errors.ServiceClosedError), follower.outcome
        assert conn.root.get_stream_segment(10, 0).tolist() == ramp(1, 0, 10).tolist()
