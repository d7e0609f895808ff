"""Live streams on a real server: pushes and pulls across the head, the ring's bounds,
clients at different paces, disconnects, row pushes, pushes over RPyC allowed and refused,
and pushes that do not fit."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import software
from software import MefStreamServer, decode_segment, errors, get_connection
from software.client.iterators import StreamRowIterator, StreamSegmentIterator
from software.live.source import LiveStream
from software.server.live_roots import LiveRootService, push_refusal
from software.stream.options import ServiceOptions
from software.stream.service import StreamService
from software.transport.wire import encode_segment
from tests.util import wait_until

FS = 1000.0


def ramp(c: int, start: int, n: int, dtype=np.float64) -> np.ndarray:
    """The test signal: channel r, index i holds i + 100000 * r (exact in float32 too)."""
    i = np.arange(start, start + n, dtype=np.float64)
    return (i[None, :] + 100000.0 * np.arange(c)[:, None]).astype(dtype)


@contextlib.contextmanager
def served(stream=None, **kwargs):
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream, **kwargs) as srv:
        yield srv


@contextlib.contextmanager
def client(port: int, **kwargs):
    conn = get_connection(port, host="127.0.0.1", timeout=10, **kwargs)
    try:
        yield conn
    finally:
        conn.close()


def test_a_request_across_the_head_calls_back_once_with_exactly_its_samples():
    stream = LiveStream("rig", ["a", "b", "c"], FS, history_seconds=5, start_uutc=10**15)
    with served(stream) as srv, client(srv.port) as conn:
        svc = conn.root
        info = dict(svc.get_info())
        assert info["growing"] is True and info["n_samples"] == 0
        assert (info["first_available"], info["fs"], info["dtype"]) == (0, FS, "float64")
        assert info["channels"] == ("a", "b", "c") and info["history_seconds"] == 5.0
        assert info["start_uutc"] == 10**15
        stream.append_stream_segment_data(ramp(3, 0, 100))
        # entirely before the head: at once
        assert decode_segment(svc.get_stream_segment(50, 20)).tolist() == \
            ramp(3, 20, 50).tolist()
        # past the head, no callback: not ready, nothing registered
        assert svc.get_stream_segment(50, 80) is False and stream.waiting == 0
        got: list = []
        arrived = threading.Event()
        assert svc.get_stream_segment(50, 80, lambda v: (got.append(v), arrived.set())) \
            is False
        wait_until(lambda: stream.waiting == 1)
        for start in range(100, 400, 7):               # pushes far past the request
            stream.append_stream_segment_data(ramp(3, start, 7))
        assert arrived.wait(10)
        assert len(got) == 1
        assert decode_segment(got[0]).tolist() == ramp(3, 80, 50).tolist()
        assert dict(svc.get_info())["n_samples"] == 401
        # one value per channel is one sample
        assert stream.append_stream_segment_data((1.0, 2.0, 3.0)) == 402
        assert decode_segment(svc.get_stream_segment(1, 401)).ravel().tolist() == [1, 2, 3]


def test_ring_overflow_is_a_clear_counted_error_and_the_producer_goes_on():
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=1)
    with served(stream) as srv, client(srv.port) as conn:
        svc = conn.root
        for start in range(0, 5000, 100):
            stream.append_stream_segment_data(ramp(2, start, 100))
        first = dict(svc.get_info())["first_available"]
        assert 5000 - 1250 <= first <= 4000
        with pytest.raises(errors.DroppedSamplesError) as caught:
            svc.get_stream_segment(10, 0)
        assert f"first_available={first}" in str(caught.value) and "head=5000" in str(caught.value)
        assert isinstance(caught.value, errors.InvalidRangeError)
        assert srv.options.counters.get("dropped_requests") == 1
        # longer than the history can never be held: refused, not left waiting
        with pytest.raises(errors.InvalidRangeError):
            svc.get_stream_segment(1001, 4500, lambda v: None)
        assert stream.append_stream_segment_data(ramp(2, 5000, 100)) == 5100
        assert decode_segment(svc.get_stream_segment(100, 5000)).tolist() == \
            ramp(2, 5000, 100).tolist()


def follow(port: int, start: int, stop: int, chunk: int, out: list, error: list) -> None:
    """A client following the stream with next_or_wait from ``start`` to ``stop``."""
    try:
        with client(port) as conn:
            it = StreamSegmentIterator(chunk, start=start)
            while it.position + chunk <= stop:
                data = it.next_or_wait(conn.root, timeout=30)
                if data is False:
                    raise AssertionError(f"nothing at {it.position} within 30 s")
                out.append(data)
    except Exception as exc:  # noqa: BLE001 - reported by the test
        error.append(exc)


def test_two_clients_at_different_positions_follow_sample_exactly_and_a_stalled_one_blocks_nobody():
    stream = LiveStream("rig", ["a", "b", "c", "d"], FS, history_seconds=20)
    with served(stream) as srv:
        stream.append_stream_segment_data(ramp(4, 0, 1000))
        results = ([], [], [], [])
        threads = [threading.Thread(target=follow, args=(srv.port, s, 6000, n, results[i],
                                                         results[i + 1]))
                   for i, (s, n) in zip((0, 2), ((0, 37), (900, 250)))]
        # a stalled client: its callback never returns
        stall = threading.Event()
        stalled = get_connection(srv.port, host="127.0.0.1")
        entered = threading.Event()
        try:
            for k in range(3):
                assert stalled.root.get_stream_segment(10, 1000 + k * 10,
                                                       lambda v: (entered.set(),
                                                                  stall.wait(60))) is False
            for t in threads:
                t.start()
            for start in range(1000, 6000, 10):          # the producer never waits
                stream.append_stream_segment_data(ramp(4, start, 10))
            assert entered.wait(10)
            for t in threads:
                t.join(60)
            for data, error, first in ((results[0], results[1], 0), (results[2], results[3], 900)):
                assert not error, error
                whole = np.concatenate(data, axis=1)
                assert whole.tolist() == ramp(4, first, whole.shape[1]).tolist()
                assert whole.shape[1] > 6000 - first - 250
        finally:
            stall.set()
            stalled.close()


def test_a_disconnect_with_callbacks_pending_leaves_nothing_behind():
    stream = LiveStream("rig", ["a"], FS, history_seconds=2)
    with served(stream) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        for k in range(20):
            assert conn.root.get_stream_segment(5, 100 + 5 * k, lambda v: None) is False
        wait_until(lambda: stream.waiting == 20)
        conn.close()
        wait_until(lambda: stream.waiting == 0)
        stream.append_stream_segment_data(ramp(1, 0, 500))
        assert len(stream._watchlist) == 0 and stream.waiting == 0
        with client(srv.port) as other:
            assert decode_segment(other.root.get_stream_segment(5, 100)).tolist() == \
                ramp(1, 100, 5).tolist()


def test_rows_pushed_at_different_paces_make_a_head_where_every_channel_has_samples():
    stream = LiveStream("rig", ["a", "b", "c"], FS, history_seconds=10)
    paces = {"a": 7, "b": 50, "c": 13}
    data = ramp(3, 0, 3000)
    with served(stream) as srv, client(srv.port) as conn:
        got: list = []
        error: list = []
        rows = StreamRowIterator("b", 64)
        reader = threading.Thread(target=lambda: got.extend(
            rows.next_or_wait(conn.root, timeout=30) for _ in range(40)))
        reader.start()
        seg_results: list = []
        follower = threading.Thread(target=follow, args=(srv.port, 0, 2900, 29, seg_results,
                                                         error))
        follower.start()
        positions = dict.fromkeys(paces, 0)
        while min(positions.values()) < 3000:       # round robin, each at its own pace
            for r, (name, step) in enumerate(paces.items()):
                at = positions[name]
                if at < 3000 and at + step - min(positions.values()) <= stream.ring.slack:
                    n = min(step, 3000 - at)
                    stream.append_stream_row_data(name if r != 1 else r, data[r, at:at + n])
                    positions[name] += n
            assert stream.head == min(positions.values())
        reader.join(60)
        follower.join(60)
        assert not error, error
        whole = np.concatenate(seg_results, axis=1)
        assert whole.tolist() == data[:, :whole.shape[1]].tolist()
        assert np.concatenate(got).tolist() == data[1, :2560].tolist()
        # a row too far ahead of the others is refused, and nothing is appended
        with pytest.raises(errors.InvalidArgumentError) as caught:
            stream.append_stream_row_data("a", np.zeros(stream.ring.slack + 1))
        assert "ahead of the slowest row" in str(caught.value)
        assert int(stream.ring.counts[0]) == 3000


PUSHER = textwrap.dedent("""
    import sys
    import numpy as np
    from software import get_connection
    from software.transport.wire import encode_segment
    conn = get_connection(int(sys.argv[1]), host=sys.argv[2])
    svc = conn.root
    for start in range(0, 2000, 25):
        i = np.arange(start, start + 25, dtype=np.float64)
        block = i[None, :] + 100000.0 * np.arange(2)[:, None]
        head = svc.append_stream_segment_data(encode_segment(block.astype(np.float32)))
    print("head", head, flush=True)
    try:
        svc.proxy.append_stream_segment_data(np.zeros((2, 3)))  # raw: a proxy, refused
    except Exception as exc:
        print("refused", type(exc).__name__, exc, flush=True)
    conn.close()
""")


def run_pusher(port: int, host: str) -> str:
    done = subprocess.run([sys.executable, "-c", PUSHER, str(port), host], capture_output=True,
                          text=True, timeout=120, cwd=software.__path__[0] + "/..")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_pusher_in_another_process_on_this_host_is_served_sample_exactly():
    stream = LiveStream("rig", ["a", "b"], FS, dtype="float32", history_seconds=10)
    with served(stream) as srv, client(srv.port) as conn:
        seen: list = []
        error: list = []
        follower = threading.Thread(target=follow, args=(srv.port, 0, 2000, 64, seen, error))
        follower.start()
        out = run_pusher(srv.port, "127.0.0.1")
        assert "head 2000" in out
        assert "refused InvalidTypeError" in out and "encode_segment" in out
        follower.join(60)
        assert not error, error
        whole = np.concatenate(seen, axis=1)
        assert whole.dtype == np.float32
        assert whole.shape[1] == 1984 and whole.tolist() == ramp(2, 0, 1984, np.float32).tolist()
        assert dict(conn.root.get_info())["n_samples"] == 2000


def _outside_address() -> str | None:
    """An address of this host that is not loopback (a peer there is not 'same host')."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))   # picks the outgoing interface; sends nothing
        addr = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def test_a_pusher_from_another_address_without_a_client_certificate_is_refused():
    assert push_refusal((("127.0.0.1", 1), ("127.0.0.1", 5)), None) is None
    assert push_refusal((("::1", 1, 0, 0), ("::ffff:127.0.0.1", 5, 0, 0)), {}) is None
    refusal = push_refusal((("10.0.0.1", 1), ("10.0.0.7", 5)), {})
    assert "10.0.0.7" in refusal and "--tls-ca" in refusal
    assert push_refusal((("10.0.0.1", 1), ("10.0.0.7", 5)),
                        {"subject": ((("commonName", "client"),),)}) is None
    outside = _outside_address()
    if outside is None:
        pytest.skip("this host has no non-loopback address to connect from")
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=10)
    with served(stream, host="0.0.0.0") as srv:
        with client(srv.port) as local:
            local.root.append_stream_segment_data((1.0, 2.0))   # loopback: allowed
        conn = get_connection(srv.port, host=outside, timeout=10)
        try:
            with pytest.raises(errors.PushRefusedError) as caught:
                conn.root.append_stream_segment_data((1.0, 2.0))
            assert isinstance(caught.value, PermissionError) and outside in str(caught.value)
            assert decode_segment(conn.root.get_stream_segment(1, 0)).ravel().tolist() == [1, 2]
        finally:
            conn.close()
        assert stream.head == 1


def test_an_in_process_root_refuses_a_non_loopback_peer():
    stream = LiveStream("rig", ["a"], FS)

    class Peer:
        _config = {"endpoints": (("192.0.2.1", 40001), ("203.0.113.9", 40000)),
                   "credentials": None}

    root = LiveRootService(stream, ServiceOptions())
    root.on_connect(Peer())
    with pytest.raises(errors.PushRefusedError):
        root.exposed_append_stream_segment_data((1.0,))
    assert stream.head == 0


@pytest.mark.parametrize("dtype", ["int16", "int32", "float32", "float64"])
def test_pushes_that_do_not_fit_are_refused_and_nothing_is_appended(dtype):
    stream = LiveStream("rig", ["a", "b"], FS, dtype=dtype)
    stream.append_stream_segment_data(np.array([[1, 2], [3, 4]], dtype=np.int16))
    bad = [np.zeros((3, 4)), np.zeros((2, 2, 2)), np.array([["x", "y"], ["z", "w"]]),
           np.zeros((2, 2), dtype=complex), (b"\0" * 7, "<f8", (2, 1)), (1.0, 2.0, 3.0)]
    if dtype.startswith("int"):
        bad += [np.array([[1.0, np.nan], [2.0, 3.0]]), np.array([[1.5, 2], [2, 3]]),
                np.array([[1e12, 2], [2, 3]])]
    if dtype == "float32":       # beyond float32's range: it would be stored as inf
        bad += [np.array([[1.0, 2.0], [3.0, -1e39]]), encode_segment(np.full((2, 1), 4e38))]
    for data in bad:
        with pytest.raises((errors.InvalidArgumentError, errors.InvalidTypeError)):
            stream.append_stream_segment_data(data)
        assert stream.head == 2
    with pytest.raises(errors.UnknownChannelError):
        stream.append_stream_row_data("nope", (1,))
    # the wire form, and values of another type that fit
    assert stream.append_stream_segment_data(encode_segment(np.array([[5], [6]],
                                                                     dtype=np.int32))) == 3
    assert stream.append_stream_segment_data([[7.0, 8.0], [9.0, 10.0]]) == 5
    svc = StreamService(stream.view(), ServiceOptions(), "rig")
    got = decode_segment(svc.exposed_get_stream_segment(5, 0))
    assert got.dtype == np.dtype(dtype)
    assert got.tolist() == [[1, 2, 5, 7, 8], [3, 4, 6, 9, 10]]
    if dtype == "float32":       # what float32 holds goes in: its largest, inf, NaN
        big = float(np.finfo(np.float32).max)
        assert stream.append_stream_segment_data([[big, np.inf], [-big, np.nan]]) == 7
        last = decode_segment(svc.exposed_get_stream_segment(2, 5))
        assert last[0].tolist() == [big, np.inf] and last[1, 0] == -big and np.isnan(last[1, 1])


def test_live_streams_beside_the_file_service(data_root):
    one = LiveStream("one", ["x"], 100.0)
    two = LiveStream("two", ["y", "z"], 200.0, dtype="int16")
    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=8,
                         live_streams=[one, two]) as srv, client(srv.port) as conn:
        root = conn.root
        assert root.list_live_streams() == ("one", "two")
        svc = root.open_live("two")
        again = root.open_live("two")        # the same view (a proxy, or a wrapper of it)
        assert getattr(again, "proxy", again) == getattr(svc, "proxy", svc)
        assert svc.append_stream_segment_data(((1, 2), (3, 4))) == 2
        assert decode_segment(svc.get_stream_segment(2, 0)).tolist() == [[1, 2], [3, 4]]
        assert dict(svc.get_info())["dtype"] == "int16"
        with pytest.raises(errors.UnknownChannelError):
            root.open_live("three")
        assert decode_segment(root.open_file("main.mefd").get_stream_segment(3, 0)).shape \
            == (6, 3)
        got: list = []
        assert svc.get_stream_segment(1, 5, got.append) is False
        wait_until(lambda: two.waiting == 1)
    wait_until(lambda: two.waiting == 0)


def test_a_get_connection_producer_pushes_numpy_arrays_and_reads_arrays_at_the_root():
    """conn.root of a live stream answers as a RemoteStream: a numpy array pushed as is
    crosses in one message; reads come back as arrays, get_info as a dict."""
    stream = LiveStream("rig", ["a", "b", "c"], 1000.0, dtype="int16", history_seconds=5)
    with served(stream) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        try:
            root = conn.root
            block = np.arange(3 * 250, dtype=np.int16).reshape(3, 250)
            assert root.append_stream_segment_data(block) == 250
            assert root.append_stream_row_data(1, np.array([7], np.int16)) == 250  # ahead
            info = root.get_info()
            assert isinstance(info, dict) and info["growing"] and info["n_samples"] == 250
            got = root.get_stream_segment(250, 0)
            assert isinstance(got, np.ndarray) and got.dtype == np.int16
            assert got.tolist() == block.tolist() and got.flags.writeable
            assert dict(srv.stats())["connections"] == 1
        finally:
            conn.close()


def test_a_session_at_the_root_answers_arrays_through_get_connection(data_root):
    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=8,
                         session=f"{data_root}/main.mefd") as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        try:
            info = conn.root.get_info()
            assert isinstance(info, dict) and info["path"] == "main.mefd"
            seg = conn.root.get_stream_segment(5, 100)
            assert isinstance(seg, np.ndarray) and seg.shape == (6, 5)
            row = info["channels"].index("index")                   # encodes k / 100
            assert seg[row].tolist() == [1.0, 1.01, 1.02, 1.03, 1.04]
            raw = decode_segment(conn.root.proxy.get_stream_segment(5, 100))
            assert raw.tolist() == seg.tolist()
        finally:
            conn.close()


def test_the_default_segment_of_a_short_history_follows_the_history():
    """A live default segment longer than the history always failed while get_info
    reported it; now it is cut to the history, and a longer one is refused at once."""
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=2)
    with served(stream, segment_seconds=60) as srv, client(srv.port) as conn:
        svc = conn.root.proxy
        info = dict(svc.get_info())
        assert info["segment_samples"] == 2000 and info["segment_seconds"] == 2.0
        got: list = []
        arrived = threading.Event()
        assert svc.get_segment(1, lambda v: (got.append(decode_segment(v).tolist()),
                                             arrived.set())) is False
        for start in range(0, 4000, 500):
            stream.append_stream_segment_data(ramp(2, start, 500))
        assert arrived.wait(10) and got == [ramp(2, 2000, 2000).tolist()]
        with pytest.raises(errors.InvalidRangeError) as caught:
            svc.set_segment_size(2.5)
        assert "seconds=2.5" in str(caught.value) and "at most 2 s" in str(caught.value)
        assert svc.set_segment_size(1.5) >= 1


@pytest.mark.parametrize("how", ["stream", "launcher"])
def test_a_pure_live_server_starts_no_reader_process(how):
    from software.live import launch
    from tests.test_replay import parse
    stream = LiveStream("rig", ["a"], FS)
    live = stream if how == "stream" else launch.server_live(
        parse(["--live", "rig", "--channels", "a", "--fs", "1000"]))
    with served(live) as srv, client(srv.port) as conn:
        assert conn.root.append_stream_segment_data(np.arange(10.0)[None, :]) == 10
        assert conn.root.get_stream_segment(10, 0).tolist() == [list(range(10))]
        assert srv.pool.pids() == [] and dict(srv.stats())["reads"] == 0
