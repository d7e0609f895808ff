"""Issue 18 §1-2, client side: CREPE's own scripts, unmodified, against every kind of root.

CREPE's iterators are written out below as CREPE's README documents them and its published
``stream_service.py`` implements them (``self.index += len(stream_segment[0])``, rows by
``len(row_segment)``, ``next_or_wait(conn, sleep, timeout)`` polling sync calls), and run
over a plain ``rpyc.connect(host, port, config=RPYC_CONFIG)`` against: a session served at
the root (``start.py PATH.mefd``), the file service's opened sessions, a live stream with a
producer pushing over RPyC, and a replay. Values are compared with ``MefReader`` / what was
pushed, value for value.

Then: the plain form's per-answer cap, the answer form on every kind of root, and
callbacks in the plain form (errors too). The withdrawal of a timed-out wait is in
test_withdrawal.py.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rpyc

import settings
from software import MefStreamServer, StreamSegmentIterator, decode_segment, get_connection
from software.errors import DroppedSamplesError, InvalidArgumentError, InvalidRangeError
from software.live.replay import Replay
from software.live.source import LiveStream
from software.stream.answers import PLAIN_MAX_VALUES
from tests.util import reference, wait_until

#: The default-rate channels of main.mefd, in the order the file lists them.
NAMES = ("Cz", "Fp1", "Fp2", "O1", "O2", "index")


# ---- CREPE's code, as CREPE documents and publishes it (not ours: left as it is) ---------

class CrepeStreamSegmentIterator():
    # @param _range is the number of elements to return on each iteration
    def __init__(self, _range=100):
        self.index = 0
        self.range = _range

    # gets the next set of data from the stream
    def next(self, _conn):
        stream_segment = _conn.root.get_stream_segment(self.range, self.index)
        if stream_segment is False:
            return False
        self.index += len(stream_segment[0])
        return stream_segment

    # timeout is the amount of x * sleep seconds with no data before returning False
    def next_or_wait(self, conn, sleep=0.1, timeout=None):
        i = 0
        while True:
            i += 1
            seg = self.next(conn)
            if seg is not False:
                return seg
            else:
                time.sleep(sleep)  # CREPE's own polling: the code under test, not a sync
                if timeout is not None and i > timeout:
                    break
        return False


class CrepeStreamRowIterator():
    def __init__(self, _channel=0, _range=100):
        self.index = 0
        self.channel = _channel
        self.range = _range

    def next(self, _conn):
        row_segment = _conn.root.get_row_segment(self.channel, self.range, self.index)
        if row_segment is False:
            return False
        self.index += len(row_segment)
        return row_segment

    def next_or_wait(self, conn, sleep=0.1, timeout=None):
        i = 0
        while True:
            i += 1
            row = self.next(conn)
            if row is not False:
                return row
            else:
                time.sleep(sleep)  # CREPE's own polling
                if timeout is not None and i > timeout:
                    break
        return False


# ---- helpers -------------------------------------------------------------------------------

class Opened:
    """What CREPE's iterators take as ``_conn``: an object whose ``.root`` is the service
    (here a session opened on the file service)."""

    def __init__(self, root):
        self.root = root


def _waiting(srv) -> int:
    """Callback requests the server holds (all connections)."""
    return dict(srv.stats())["waiting_requests"]


def plain(port: int) -> rpyc.Connection:
    return rpyc.connect("127.0.0.1", port, config=settings.RPYC_CONFIG)


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def crepe_read_all(conn, n: int, rng: int = 100) -> np.ndarray:
    """Every segment CREPE's iterator gives with ``next`` until False, joined; checks the
    shape contract on each: len(seg) channels, len(seg[0]) samples, Python floats."""
    it = CrepeStreamSegmentIterator(_range=rng)
    parts = []
    while (seg := it.next(conn)) is not False:
        assert type(seg) is tuple and all(len(row) == len(seg[0]) for row in seg)
        assert type(seg[0][0]) is float
        parts.append(np.asarray(seg))
    assert it.index == n
    return np.concatenate(parts, axis=1)


@pytest.fixture(scope="module")
def ref(main_path):
    return reference(main_path, NAMES)


@pytest.fixture(scope="module")
def root_session(data_root, main_path):
    """``start.py PATH.mefd``: the session served at the connection root."""
    with MefStreamServer(port=0, data_root=data_root, session=main_path, workers=1,
                         cache_mb=32) as srv:
        yield srv


# ---- §1: CREPE's iterators against every kind of root --------------------------------------

def test_crepe_iterators_on_a_session_served_at_the_root(root_session, ref):
    """Failed before: the index advanced by the payload's byte count (52,000 after five
    segments), seg[0][3] was one byte."""
    conn = plain(root_session.port)
    try:
        n = ref.shape[1]
        assert same(crepe_read_all(conn, n), ref)                 # NaN in the gap too
        it = CrepeStreamSegmentIterator(_range=100)
        seg = it.next_or_wait(conn, sleep=0.01, timeout=3)
        assert it.index == 100 and seg[0][3] == ref[0, 3] and type(seg[5][99]) is float
        rows = CrepeStreamRowIterator(_channel=5, _range=1000)
        rows.index = n - 2500
        got = []
        while (row := rows.next_or_wait(conn, sleep=0.01, timeout=2)) is not False:
            assert type(row) is tuple and type(row[0]) is float
            got.extend(row)
        assert rows.index == n and same(got, ref[5, n - 2500:])
    finally:
        conn.close()


def test_crepe_iterators_on_sessions_opened_on_the_file_service(server, ref):
    conn = plain(server.port)
    try:
        opened = Opened(conn.root.open_file("main.mefd"))
        assert same(crepe_read_all(opened, ref.shape[1], rng=2560), ref)
        rows = CrepeStreamRowIterator(_channel="index", _range=333)
        got = []
        while (row := rows.next(opened)) is not False:
            got.extend(row)
        assert same(got, ref[5])
    finally:
        conn.close()


def ramp(c: int, start: int, n: int, dtype=np.float64) -> np.ndarray:
    i = np.arange(start, start + n, dtype=np.float64)
    return (i[None, :] + 1000.0 * np.arange(c)[:, None] + 0.25).astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "int32"])
def test_crepe_iterator_follows_a_live_stream_a_producer_pushes(dtype):
    """A CREPE MEA chunk (60 ch x 100) followed while a producer pushes over RPyC; an
    integer stream answers Python ints."""
    chunks, width = 30, 100
    stream = LiveStream("mea", [f"ch{i}" for i in range(60)], 10000.0, dtype,
                        history_seconds=60)
    pushed = ramp(60, 0, chunks * width).astype(dtype)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        follower = plain(srv.port)
        producer = get_connection(srv.port, host="127.0.0.1")
        try:
            it = CrepeStreamSegmentIterator(_range=width)
            assert it.next(follower) is False                     # nothing pushed yet

            def produce():
                for k in range(chunks):
                    producer.root.append_stream_segment_data(
                        pushed[:, k * width:(k + 1) * width])

            pusher = threading.Thread(target=produce, name="test-producer", daemon=True)
            pusher.start()
            got = []
            while it.index < chunks * width:
                seg = it.next_or_wait(follower, sleep=0.005, timeout=2000)
                assert seg is not False, f"nothing at {it.index}"
                assert len(seg) == 60 and len(seg[0]) == width
                assert type(seg[59][width - 1]) is (int if dtype == "int32" else float)
                got.append(np.asarray(seg))
            pusher.join(30)
            assert same(np.concatenate(got, axis=1), pushed)
            assert it.next(follower) is False                     # not ready: False
        finally:
            producer.close()
            follower.close()


def test_crepe_iterator_follows_a_replay(data_root, main_path, ref):
    def make(registry):
        return Replay(registry.acquire(main_path), release=registry.release, speed=50.0,
                      history_seconds=400).start().stream

    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=32,
                         live=make) as srv:
        conn = plain(srv.port)
        try:
            it = CrepeStreamSegmentIterator(_range=256)
            got = []
            while it.index < 20 * 256:
                seg = it.next_or_wait(conn, sleep=0.01, timeout=3000)
                assert seg is not False
                got.append(np.asarray(seg))
            assert same(np.concatenate(got, axis=1), ref[:, :20 * 256])
            rows = CrepeStreamRowIterator(_channel="index", _range=256)
            row = rows.next_or_wait(conn, sleep=0.01, timeout=3000)
            assert rows.index == len(row) == 256 and same(row, ref[5, :256])
        finally:
            conn.close()


# ---- the plain form: callbacks, the cap, every root ---------------------------------------

def test_callbacks_of_a_plain_connection_receive_the_plain_form():
    stream = LiveStream("rig", ["a", "b"], 1000.0, history_seconds=10)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        conn = plain(srv.port)
        try:
            got = []
            assert conn.root.get_stream_segment(5, 10, got.append) is False
            assert conn.root.get_row_segment("b", 3, 12, got.append) is False
            stream.append_stream_segment_data(ramp(2, 0, 20))
            wait_until(lambda: (conn.serve(0.05), len(got) == 2)[1])
            segment, row = sorted(got, key=lambda v: type(v[0]) is not tuple)
            assert segment == tuple(map(tuple, ramp(2, 10, 5).tolist()))
            assert row == tuple(ramp(2, 12, 3)[1].tolist())
            it = StreamSegmentIterator(4, start=20)            # ours, on a plain connection
            stream.append_stream_segment_data(ramp(2, 20, 4))
            assert same(it.next_or_wait(conn, timeout=30), ramp(2, 20, 4))
        finally:
            conn.close()


def test_a_failed_callback_answer_is_the_error_form_in_the_plain_form_too():
    """A request registered ahead, whose samples are dropped before it is answered: the
    callback gets ``("error", class name, message)`` (never a tuple to take for data),
    which decode_segment and our iterator raise."""
    stream = LiveStream("rig", ["a"], 100.0, history_seconds=1)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        conn = plain(srv.port)
        try:
            got = []
            assert conn.root.get_stream_segment(10, 150, got.append) is False
            it = StreamSegmentIterator(10, start=160)
            assert it.next_or_wait(conn, timeout=0.01) is False    # timed out: withdrawn
            stream.append_stream_segment_data(np.arange(300.0)[None, :])  # ring: 100
            wait_until(lambda: (conn.serve(0.05), len(got) == 1)[1])
            assert got[0][:2] == ("error", "DroppedSamplesError")
            with pytest.raises(DroppedSamplesError, match="first_available"):
                decode_segment(got[0])
            with pytest.raises(DroppedSamplesError, match="first_available"):
                it.next_or_wait(conn, timeout=30)
        finally:
            conn.close()


def test_a_plain_answer_too_large_is_refused_naming_the_largest_range():
    """60 channels x 20,000 samples is 1.2 million values: refused before any reading, in
    a sync call and with a callback, naming the largest range; the packed form has no
    such cap."""
    stream = LiveStream("mea", [f"ch{i}" for i in range(60)], 10000.0, history_seconds=10)
    pushed = ramp(60, 0, 20000)
    stream.append_stream_segment_data(pushed)
    largest = PLAIN_MAX_VALUES // 60
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        conn = plain(srv.port)
        try:
            for call in (lambda: conn.root.get_stream_segment(20000, 0),
                         lambda: conn.root.get_stream_segment(20000, 10**6, print)):
                with pytest.raises(InvalidRangeError, match=f"_range={largest}") as refused:
                    call()
                assert "set_answer_form('packed')" in str(refused.value)
                assert "get_connection" in str(refused.value)
            assert _waiting(srv) == 0                              # nothing registered
            assert same(conn.root.get_stream_segment(largest, 0), pushed[:, :largest])
            assert conn.root.set_answer_form("packed") == "packed"
            assert same(decode_segment(conn.root.get_stream_segment(20000, 0)), pushed)
            assert conn.root.set_answer_form("plain") == "plain"
            with pytest.raises(InvalidArgumentError, match="form='json' is not an answer"):
                conn.root.set_answer_form("json")
        finally:
            conn.close()


def test_every_kind_of_root_has_the_answer_form(data_root, main_path):
    stream = LiveStream("rig", ["a"], 100.0, history_seconds=10)
    stream.append_stream_segment_data(np.arange(5.0)[None, :])
    kinds = [dict(), dict(session=main_path), dict(live=stream), dict(live_streams=[stream])]
    for kwargs in kinds:
        with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=8,
                             **kwargs) as srv:
            conn = plain(srv.port)
            try:
                assert conn.root.set_answer_form("packed") == "packed"
                assert conn.root.set_answer_form("plain") == "plain"
            finally:
                conn.close()
            with get_connection(srv.port, host="127.0.0.1") as fast:   # arrays, as ever
                if "live_streams" in kwargs:
                    view = fast.root.open_live("rig")
                elif kwargs:
                    view = fast.root
                else:
                    view = fast.root.open_file("main.mefd")
                assert isinstance(view.get_stream_segment(2, 0), np.ndarray)
                if "live" in kwargs or "live_streams" in kwargs:   # read from its ring
                    assert view.ring_follower() is not None
                else:
                    assert fast.shared_memory.adopted == 1    # packed: through shared memory
