"""Issue 16: followers and producers on the server's host share a live stream's ring.

Real processes (``tests/live_actors.py``) follow and push, moved step by step, so every
hard state is built on purpose: reads across the wrap point for many ring lengths, a
follower that fell behind, a writer stopped between its steps. Mutants each test kills
are named in its docstring.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np
import pytest
import rpyc

import settings
import software
from software import MefStreamServer, decode_segment, errors, get_connection
from software.live.source import LiveStream
from software.live.view import LiveView
from software.shm.ring import SHAREABLE, Ring
from tests.live_actors import BAD, Actor, ramp

ROOT = os.path.dirname(software.__path__[0])
FS = 1000.0

pytestmark = pytest.mark.skipif(not SHAREABLE, reason="no shared rings on this system")


@contextlib.contextmanager
def served(stream, **kwargs):
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream, **kwargs) as srv:
        yield srv


@contextlib.contextmanager
def actors(*specs: tuple[str, ...]):
    made = []
    try:
        for spec in specs:
            made.append(Actor(ROOT, *spec))
        yield made
    finally:
        for actor in made:
            actor.close()


def stats(port: int) -> dict:
    with get_connection(port, host="127.0.0.1", shared_memory=False) as conn:
        return dict(conn.root.get_stats())


def test_a_reader_never_returns_samples_a_writer_is_overwriting():
    """The seqlock, step by step, through a second mapping of the file (read-only). Kills:
    the copy checked against the head instead of the write position, or not checked
    after the copy; the head moved at reserve or at commit instead of at publish."""
    ring = Ring(2, 8, shared=True)                       # capacity 10
    reader = Ring.attach(*ring.share())
    ring.write(ramp(2, 0, 10))
    out = np.empty((2, 4))
    assert reader.copy(slice(None), 2, 6, out) and out.tolist() == ramp(2, 2, 4).tolist()
    at = ring.reserve(slice(None), 4)                    # samples 10..13 take slots of 0..3
    ring.fill(np.full((2, 4), -7.0), slice(None), at)
    assert (at, reader.head, reader.first_available) == (10, 10, 4)
    assert not reader.copy(slice(None), 2, 6, out)      # overwritten under it: refused
    assert reader.take(slice(None), 2, 6) is None and reader.take(1, 3, 4) is None
    assert reader.take(1, 4, 10).tolist() == ramp(2, 4, 6)[1].tolist()
    assert reader.copy(slice(None), 4, 10, np.empty((2, 6)))
    ring.commit(slice(None), 4)
    assert reader.head == 10                             # committed, not published yet
    seq = reader.seq
    ring.publish()
    assert reader.head == 14 and reader.seq == seq + 1
    with pytest.raises(ValueError, match="read-only"):
        reader._data[0, 0] = 1.0                         # followers map it read-only


@pytest.mark.parametrize("pusher", ["server", "producer"])
def test_a_follower_process_follows_exactly_across_many_wraps(pusher):
    """A follower process reads 17-sample chunks of a 62-sample ring (history 50) fed in
    13-sample pushes, for 16 ring lengths: every chunk exact. Kills: the wrap-around copy
    off by one; a chunk read before the head covers it."""
    stream = LiveStream("rig", ["a", "b", "c"], FS, history_seconds=0.05)
    with served(stream) as srv, actors(("follow", str(srv.port)),
                                       ("produce", str(srv.port))) as (follower, producer):
        assert follower.first == ["ready", "ring"] and producer.first == ["ready", True]
        if pusher == "server":
            producer.ask("close")

        def push(start: int, n: int) -> None:
            if pusher == "server":
                stream.append_stream_segment_data(ramp(3, start, n))
            else:
                assert producer.ask(f"push {start} {n}") == ["head", start + n]

        assert follower.ask("from 17 0") == ["ok"]
        pushed = read = 0
        while read < 16 * stream.ring.capacity:
            while pushed < read + 17:                    # never more than the history ahead
                push(pushed, 13)
                pushed += 13
            assert follower.ask("next") == ["chunk", read, 17, True, "float64"]
            read += 17


def test_a_follower_that_fell_behind_is_told_and_resumes_at_the_head():
    """Kills: a ring read that skips the first_available check or the copy's overwrite
    check (it returned overwritten samples as data)."""
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=0.05)
    with served(stream) as srv, actors(("follow", str(srv.port))) as (follower,):
        assert follower.ask("from 10 0") == ["ok"]
        stream.append_stream_segment_data(ramp(2, 0, 200))   # 4 histories past it
        answer = follower.ask("next")
        assert answer[:2] == ["error", "DroppedSamplesError"] and "first_available" in answer[2]
        assert stats(srv.port)["dropped_requests"] == 1      # the server counted it
        assert follower.ask(f"seek {stream.head}") == ["ok"]
        stream.append_stream_segment_data(ramp(2, 200, 10))
        assert follower.ask("next") == ["chunk", 200, 10, True, "float64"]


def test_same_host_and_socket_followers_see_the_same_samples():
    """A producer process pushes float32 through its handle; followers in memory, on the
    socket, by callback and over plain RPyC (CREPE's form) see the same samples, whole
    segments and rows. Kills: rows of a channel selection taken in ring order."""
    stream = LiveStream("rig", ["a", "b", "c"], FS, "float32", history_seconds=10)
    with served(stream) as srv, actors(("follow", str(srv.port)),
                                       ("follow", str(srv.port), "socket"),
                                       ("produce", str(srv.port))) as (ring, sock, producer):
        assert (ring.first[1], sock.first[1]) == ("ring", "socket")
        got: list = []
        arrived = threading.Event()
        with get_connection(srv.port, host="127.0.0.1") as conn:
            conn.root.get_stream_segment(40, 10, lambda v: (got.append(v), arrived.set()))
            for actor, rows in ((ring, ""), (sock, ""), (ring, " b"), (sock, " c")):
                assert actor.ask(f"from 25 0{rows}") == ["ok"]
            for k in range(4):
                assert producer.ask(f"push {25 * k} 25") == ["head", 25 * (k + 1)]
                for actor in (ring, sock):
                    assert actor.ask("next") == ["chunk", 25 * k, 25, True, "float32"]
            assert arrived.wait(20)
            assert got[0].dtype == np.float32 and got[0].tolist() == \
                ramp(3, 10, 40, np.float32).tolist()
            svc = conn.root
            assert svc.ring_follower() is not None
            assert svc.set_active_channels(["c", "a"]) == ("c", "a")
            memory = svc.get_stream_segment(30, 50)
            assert memory.tolist() == ramp(3, 50, 30, np.float32)[[2, 0]].tolist()
            assert svc.get_row_segment(1, 5, 60).tolist() == \
                ramp(3, 60, 5, np.float32)[0].tolist()
            plain = rpyc.connect("127.0.0.1", srv.port, config=settings.RPYC_CONFIG)
            try:
                assert plain.root.set_active_channels(["c", "a"]) == ("c", "a")
                assert np.asarray(plain.root.get_stream_segment(30, 50)).tolist() == \
                    memory.tolist()
            finally:
                plain.close()
            assert svc.get_stream_segment(30, 90) is False        # not pushed yet


def _twin_error(stream: LiveStream, name: str):
    try:
        BAD[name](stream, stream.dtype)
    except errors.StreamError as exc:
        return [type(exc).__name__, str(exc)]
    return None


def test_a_refused_push_through_the_handle_appends_nothing():
    """Every bad push gets the error (class and message) the stream itself gives, and
    appends nothing. Kills: a handle without the level check, the cast checks, or the
    rows-ahead check."""
    stream = LiveStream("rig", ["a", "b"], FS, "int32", history_seconds=1)
    twin = LiveStream("rig", ["a", "b"], FS, "int32", history_seconds=1, shared_memory=False)
    with served(stream) as srv, actors(("follow", str(srv.port)),
                                       ("produce", str(srv.port))) as (follower, producer):
        assert producer.ask("push 0 10") == ["head", 10]
        twin.append_stream_segment_data(ramp(2, 0, 10, np.int32))
        for name in BAD:
            answer = producer.ask(f"bad {name}")
            assert answer[0] == "error", (name, answer)
            assert answer[1:] == _twin_error(twin, name), name
            assert stream.head == 10 and stream.ring.counts.tolist() == [10, 10], name
        assert producer.ask("row 0 10 1") == ["head", 10]   # row a runs one ahead
        twin.append_stream_row_data(0, ramp(2, 10, 1, np.int32)[0])
        answer = producer.ask("push 11 5")
        assert answer[:2] == ["error", "InvalidArgumentError"] and "not level" in answer[2]
        assert stream.ring.counts.tolist() == [11, 10]
        assert producer.ask("row 1 10 1") == ["head", 11]
        assert producer.ask("push 11 5") == ["head", 16]
        assert follower.ask("from 16 0") == ["ok"]
        assert follower.ask("next") == ["chunk", 0, 16, True, "int32"]


def test_one_producer_at_a_time_and_every_other_push_refused_meanwhile():
    """Kills: pushes of the server (in-process, over the socket) accepted while a handle
    holds the lease; a second lease granted; the lease kept after the handle closed."""
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=10)
    with served(stream) as srv, actors(("produce", str(srv.port)),
                                       ("produce", str(srv.port))) as (first, second):
        assert first.first == ["ready", True]
        assert second.first[:2] == ["error", "PushRefusedError"]
        assert "producer handle of the client at 127.0.0.1:" in second.first[2]
        with pytest.raises(errors.PushRefusedError, match="push through that handle"):
            stream.append_stream_segment_data(ramp(2, 0, 5))
        with get_connection(srv.port, host="127.0.0.1", shared_memory=False) as conn:
            with pytest.raises(errors.PushRefusedError, match="producer handle"):
                conn.root.append_stream_segment_data(ramp(2, 0, 5))
            handle = conn.root.producer()                 # no memory: through the socket
            assert not handle.shared
            with pytest.raises(errors.PushRefusedError):
                handle.append_stream_segment_data(ramp(2, 0, 5))
        assert first.ask("push 0 5") == ["head", 5]
        assert stats(srv.port)["ring_producers"] == 1
        assert first.ask("close") == ["closed"]
        assert stats(srv.port)["ring_producers"] == 0
        assert stream.append_stream_segment_data(ramp(2, 5, 5)) == 10
        assert first.ask("push 10 5")[:2] == ["error", "ServiceClosedError"]
    with pytest.raises(errors.PushRefusedError, match="not allowed"):
        LiveView(LiveStream("x", ["a"], FS), None, may_push=False).lease_producer("me")


def test_a_replay_refuses_a_producer_handle(data_root, main_path):
    from software.live.replay import Replay

    def make(registry):
        return Replay(registry.acquire(main_path), release=registry.release).stream

    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=8,
                         live=make) as srv:
        with get_connection(srv.port, host="127.0.0.1") as conn:
            assert conn.root.ring_follower() is not None      # followers read it in memory
            with pytest.raises(errors.PushRefusedError, match="replays a recording"):
                conn.root.producer()


def test_a_stream_kept_in_process_memory_is_followed_through_the_socket():
    stream = LiveStream("rig", ["a"], FS, history_seconds=1, shared_memory=False)
    stream.append_stream_segment_data(ramp(1, 0, 20))
    with served(stream) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        assert conn.root.ring_follower() is None
        assert decode_segment(conn.root.get_stream_segment(5, 3)).tolist() == \
            ramp(1, 3, 5).tolist()
        assert not conn.root.producer().shared
