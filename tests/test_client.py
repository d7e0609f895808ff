"""The client side (issue 9): RemoteStream hands out writable arrays, binds each method once,
sends lists as tuples and closes its view; iterators follow a view whose rate changed and
tell the end from a timeout; the frame limit follows the server's; the shared-memory tag is
looked for only where an answer can be. Real servers on port 0, real reader processes.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import rpyc
from rpyc.utils.helpers import classpartial
from rpyc.utils.server import ThreadedServer

import settings
import software
from software import (
    MefStreamServer,
    StreamRowIterator,
    StreamSegmentIterator,
    decode_segment,
    get_connection,
)
from software.client.stream import RemoteStream
from software.client.values import plain_argument
from software.mef3.writer import write_session
from software.server.roots import RootService
from software.transport.connection import FastThreadedServer
from software.transport.framing import FastChannel
from software.transport.wire import SHARED_TAG
from tests.test_faults import MAIN_CHANNELS, Stopped, same
from tests.util import START, reference, wait_until

SLOW, FAST = ("slow1", "slow2"), ("fast1", "fast2")


@pytest.fixture(scope="module")
def main_ref(main_path):
    return reference(main_path, MAIN_CHANNELS)


@pytest.fixture(scope="module")
def mixed_ref(data_root):
    path = f"{data_root}/mixed.mefd"
    return {SLOW: reference(path, SLOW), FAST: reference(path, FAST)}


def cold(server):
    """Empty the shared cache so the next read goes to the reader processes."""
    server.cache.discard_where(lambda key: True)
    wait_until(lambda: dict(server.cache.stats())["in_flight"] == 0, timeout=30)


def owner(array: np.ndarray):
    """The object that owns an array's memory (not copied since it was received)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array.obj if isinstance(array, memoryview) else array


def requests_sent(conn) -> int:
    """How many requests the connection has sent so far (rpyc numbers each one)."""
    return next(conn._seqcounter)


# ---- arrays ---------------------------------------------------------------------------

@pytest.mark.parametrize("shared_memory", [True, False])
def test_remote_stream_gives_writable_arrays_without_a_copy(server, main_ref, shared_memory):
    with get_connection(server.port, host="127.0.0.1", shared_memory=shared_memory) as conn:
        assert (conn.shared_memory is not None) is shared_memory
        svc = conn.root.open_file("main.mefd")
        assert isinstance(svc, RemoteStream)
        info = svc.get_info()
        assert type(info) is dict and info["channels"] == MAIN_CHANNELS
        answers = [
            (svc.get_stream_segment(3000, 100), main_ref[:, 100:3100]),
            (svc.get_row_segment("index", 9000, 7), main_ref[5, 7:9007]),
            (svc.get_segment(2), main_ref[:, 2 * 1792:3 * 1792]),
            (svc.get_time_segment(START, START + 10_000_000), main_ref[:, :2560]),
        ]
        for data, expected in answers:
            assert type(data) is np.ndarray and same(data, expected)
            assert data.flags.writeable
            assert type(owner(data)) is bytearray     # the payload the transport received
            data[..., 0] = -1.0                      # writable in place
        row = svc.get_row_segment(0, 5, 0)
        assert row.ndim == 1 and row.flags.writeable  # small: copied once to be writable
        assert svc.get_stream_segment(10, info["n_samples"]) is False
        assert svc.set_active_channels(["Cz", "index"]) == ("Cz", "index")
        assert svc.set_active_channels(np.array(["index"])) == ("index",)
        assert svc.get_stream_segment(4, 0).shape == (1, 4)


def test_methods_are_bound_once_and_lists_go_as_tuples(conn):
    svc = conn.root.open_file("main.mefd")
    first = requests_sent(conn)
    svc.get_stream_segment(10, 0)                       # the attribute, then the call
    svc.set_active_channels(["Cz", "Fp1"])
    second = requests_sent(conn)
    assert second - first == 1 + 4
    for _ in range(5):
        svc.get_stream_segment(10, 0)
        svc.set_active_channels(["Cz", "Fp1"])          # one tuple: no proxy walked back
    assert requests_sent(conn) - second == 1 + 10
    assert plain_argument(["a", np.str_("b"), (np.int64(3), [1.5])]) == ("a", "b", (3, (1.5,)))
    assert [type(v) for v in plain_argument([np.str_("b"), np.int64(3)])] == [str, int]
    with pytest.raises(software.InvalidTypeError, match="_callback must be a function"):
        svc.get_stream_segment(10, 0, "not callable")


def test_callbacks_receive_arrays(conn, server, main_ref):
    svc = conn.root.open_file("main.mefd")
    cold(server)
    got, arrived = [], threading.Event()
    value = svc.get_stream_segment(2000, 30000, lambda data: (got.append(data), arrived.set()))
    if value is False:
        assert arrived.wait(30)
        value = got[0]
    assert type(value) is np.ndarray and value.flags.writeable
    assert same(value, main_ref[:, 30000:32000])


def test_a_failed_read_reaches_the_callback_as_its_exception(data_root, main_ref):
    """Reads queued behind a stopped reader fail when the pool closes: the callback gets
    the rebuilt exception object, nothing is raised in the serving thread."""
    with MefStreamServer(port=0, data_root=data_root, workers=1, prefetch=0) as srv, \
            get_connection(srv.port, host="127.0.0.1") as conn:
        svc = conn.root.open_file("main.mefd")
        got, arrived = [], threading.Event()
        wait_until(lambda: len(srv.pool.pids()) == 1)
        with Stopped(srv.pool.pids()) as stopped:   # 3 runs of 60 s: one waits in the queue
            value = svc.get_stream_segment(main_ref.shape[1], 0,
                                           lambda data: (got.append(data), arrived.set()))
            assert value is False
            closer = threading.Thread(target=srv.pool.close, name="test-close", daemon=True)
            closer.start()
            wait_until(lambda: srv.pool.closed)     # the queued read fails at once
            stopped.resume()
            assert arrived.wait(30)
        closer.join(30)
        assert isinstance(got[0], software.ServiceClosedError), got
        assert not isinstance(got[0], np.ndarray) and conn.serving_thread.closed is False
        with pytest.raises(software.ServiceClosedError):
            decode_segment(got[0])                      # scripts that decode still raise


def test_close_closes_the_view_on_the_server(server):
    conn = get_connection(server.port, host="127.0.0.1")
    try:
        with conn.root.open_file("mixed.mefd") as svc:
            assert conn.root.list_open_files() == ("mixed.mefd",)
            assert svc.get_stream_segment(4, 0).shape == (2, 4)
        assert svc.closed and conn.root.list_open_files() == ()
        svc.close()                                     # idempotent
        with pytest.raises(software.ServiceClosedError, match="open it again"):
            svc.get_info()
        again = conn.root.open_file("mixed.mefd")
    finally:
        conn.close()
    again.close()                                       # connection gone: quiet
    assert again.closed


def test_plain_rpyc_gets_crepe_shape_or_asks_for_the_packed_form(server, main_ref):
    """Issue 18: a plain connection answers in CREPE's shape by default; one that asks for
    the packed form gets (bytes, dtype, shape); decode_segment takes both."""
    plain = rpyc.connect("127.0.0.1", server.port, config=settings.RPYC_CONFIG)
    try:
        svc = plain.root.open_file("main.mefd")
        value = svc.get_stream_segment(700, 9000)
        assert type(value) is tuple and len(value) == 6 and len(value[0]) == 700
        assert same(decode_segment(value), main_ref[:, 9000:9700])
        assert plain.root.set_answer_form("packed") == "packed"
        value = svc.get_stream_segment(700, 9000)
        assert type(value) is tuple and type(value[0]) is bytes
        data = decode_segment(value)
        assert same(data, main_ref[:, 9000:9700]) and not data.flags.writeable
        assert decode_segment(data) is data and decode_segment(False) is False
    finally:
        plain.close()


# ---- iterators ------------------------------------------------------------------------

def test_iterators_over_a_remote_stream_cost_one_round_trip_per_chunk(conn, main_ref):
    svc = conn.root.open_file("main.mefd")
    for it in (StreamSegmentIterator(256), StreamRowIterator("Cz", 256)):
        it.next_or_wait(svc)                            # resolves: get_info and the method
        before = requests_sent(conn)
        for _ in range(20):
            assert it.next_or_wait(svc) is not False
        assert requests_sent(conn) - before == 20 + 1   # 20 calls, and this counter read
    chunks = list(StreamSegmentIterator(4096, target=svc))
    assert same(np.concatenate(chunks, axis=1), main_ref)


@pytest.mark.parametrize("kind", ["RemoteStream", "proxy"])
def test_iterator_follows_a_rate_switch(conn, server, mixed_ref, kind):
    """Fault 6: an iterator started on the 256 Hz channels kept their length; after the
    view switched to the 512 Hz channels it stopped at 7,680 of 15,360 samples."""
    svc = conn.root.open_file("mixed.mefd")
    target = svc if kind == "RemoteStream" else svc.proxy
    svc.set_active_channels(list(SLOW))
    cold(server)
    it = StreamSegmentIterator(1000)
    first = [it.next_or_wait(target, timeout=30) for _ in range(3)]
    assert same(np.concatenate(first, axis=1), mixed_ref[SLOW][:, :3000])
    svc.set_active_channels(list(FAST))
    rest = list(it.over(target, timeout=30))
    assert it.position == mixed_ref[FAST].shape[1] == 15360 and it.exhausted
    assert same(np.concatenate(rest, axis=1), mixed_ref[FAST][:, 3000:])
    # and back: past the end of the shorter view is the end, not a wait for a callback
    it = StreamSegmentIterator(1000, start=10000)
    assert it.next_or_wait(target, timeout=30) is not False
    svc.set_active_channels(list(SLOW))
    assert it.next_or_wait(target, timeout=30) is False and it.exhausted


def test_next_or_wait_tells_the_end_from_a_timeout(conn, server, main_ref):
    svc = conn.root.open_file("main.mefd")
    it = StreamSegmentIterator(2000, start=20000)
    cold(server)
    with Stopped(server.pool.pids()):
        assert it.next_or_wait(svc, timeout=0.3) is False   # the readers cannot answer
        assert not it.exhausted and it.position == 20000
        with pytest.raises(TimeoutError, match="position 20000"):
            next(iter(it.over(svc, timeout=0.3)))
    assert same(it.next_or_wait(svc, timeout=30), main_ref[:, 20000:22000])
    assert not it.exhausted
    it = StreamSegmentIterator(2000, start=main_ref.shape[1] - 10)
    assert it.next_or_wait(svc, timeout=30).shape == (6, 10)
    assert it.next_or_wait(svc, timeout=30) is False and it.exhausted
    assert it.next(svc) is False and it.exhausted


# ---- limits (fault 1, client part) ----------------------------------------------------

class _TellingRoot(RootService):
    """The real root service, telling limits as the server's get_limits does."""

    told = 3 * 2**20

    def exposed_get_limits(self):
        return (("max_request_bytes", self.told - 2**20), ("max_frame", self.told))


def test_the_frame_limit_follows_the_server(server):
    srv = FastThreadedServer(classpartial(_TellingRoot, server.registry, server.options),
                             hostname="127.0.0.1", port=0,
                             protocol_config={"allow_pickle": False})
    thread = threading.Thread(target=srv.start, name="test-telling-server", daemon=True)
    thread.start()
    try:
        with get_connection(srv.port, host="127.0.0.1") as conn:
            assert conn._channel.max_frame == _TellingRoot.told
            assert conn.limits == {"max_request_bytes": 2**21, "max_frame": 3 * 2**20}
            svc = conn.root.open_file("main.mefd")    # and it works as ever
            assert svc.get_stream_segment(100, 0).shape == (6, 100)
        with get_connection(srv.port, host="127.0.0.1", max_frame=5 * 2**20) as conn:
            assert conn._channel.max_frame == 5 * 2**20   # the caller's choice wins
    finally:
        srv.close()
        thread.join(10)


def test_a_server_without_limits_keeps_the_default():
    srv = ThreadedServer(rpyc.Service, hostname="127.0.0.1", port=0,
                         protocol_config={"allow_pickle": False})
    thread = threading.Thread(target=srv.start, name="test-stock-server", daemon=True)
    thread.start()
    try:
        with get_connection(srv.port, host="127.0.0.1") as conn:
            assert conn._channel.max_frame == FastChannel.MAX_FRAME and conn.limits == {}
    finally:
        srv.close()
        thread.join(10)


def test_the_real_server_tells_its_limit(data_root):
    """The server tells 300 MiB (+1 framing); the client follows it only up to its default
    limit unless the caller asks for more (issue 19: a hostile server could tell 4 GiB)."""
    told = 301 * 2**20
    with MefStreamServer(port=0, data_root=data_root, workers=1, max_request_mb=300) as srv:
        with get_connection(srv.port, host="127.0.0.1") as conn:
            assert conn.limits["max_frame"] == told
            assert conn._channel.max_frame == FastChannel.MAX_FRAME
        with get_connection(srv.port, host="127.0.0.1", max_frame=told) as conn:
            assert conn._channel.max_frame == told


# ---- the shared-memory tag (fault 8) --------------------------------------------------

def test_the_shared_memory_tag_is_looked_for_only_where_an_answer_can_be(tmp_path):
    """A reply of seven channel names, the first one named like the tag, was taken for an
    answer in the area: set_active_channels returned an error tuple instead."""
    names = (SHARED_TAG, "b", "c", "d", "e", "f", "g")
    rng = np.random.default_rng(5)
    write_session(tmp_path / "tagged.mefd", {n: rng.normal(0, 10, 2560) for n in names},
                  256.0, START, precision=2)
    with MefStreamServer(port=0, data_root=str(tmp_path), workers=1) as srv, \
            get_connection(srv.port, host="127.0.0.1") as conn:
        area = conn.shared_memory
        assert area is not None
        svc = conn.root.open_file("tagged.mefd")
        assert svc.set_active_channels(list(names)) == names
        assert svc.get_info()["channels"] == names
        assert svc.get_stream_segment(100, 0).shape == (7, 100)
        assert area.adopted == 1
        pairs = (("channels", names), ("path", SHARED_TAG))
        for value in (names, pairs, (names,), ((SHARED_TAG, "<f8", (1,), 0, 1, 0, 8), 1),
                      (SHARED_TAG, "<f8", (1,), "0", 1, 0, 8)):
            assert area.adopt(value) is value
        assert area.adopted == 1
