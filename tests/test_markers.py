"""Live markers: the bounded history (unit), then markers on live streams served for real:
producer and client pushes with the push rules, get_records, iterators and watchers, the
ring's wrap-around, bad input, the recorder (SIGKILL with markers pending) and replay
(seek and loop)."""
from __future__ import annotations

import threading

import pytest

from software.live.markers import MarkerHistory
from tests.util import START

FS = 1000.0


def history(capacity: int = 100) -> MarkerHistory:
    return MarkerHistory(FS, START, capacity)


def test_markers_are_kept_by_index_and_served_as_records():
    h = history()
    h.add(10, "a", 0, 0, 10)
    h.add(30, "b", 500_000, 0, 30)
    h.add(20, "late", 0, 0, 30)                 # stamped in the past: sorted in
    assert [w[3] for w in h.by_index(0, 100)] == ["a", "late", "b"]
    wire = h.by_index(30, 31)[0]
    assert wire[:6] == (START + 30_000, 30, "EDFA", "b", 500_000, None)
    assert h.by_index(0, 1) == [] and len(h) == 3
    # a window holds the markers overlapping it: b lasts 0.5 s from 30 ms
    assert [w[3] for w in h.select(START + 100_000, START + 200_000)] == ["b"]
    assert [w[3] for w in h.select(START + 21_000, START + 30_000)] == []
    assert [w[3] for w in h.select(None, START + 20_001)] == ["a", "late"]


def test_the_history_is_bounded_by_count_and_by_the_ring():
    h = history(capacity=5)
    for k in range(8):
        h.add(k, str(k), 0, 0, k)
    assert [w[3] for w in h.by_index(0, 100)] == ["3", "4", "5", "6", "7"]
    assert h.dropped == 3
    h.add(8, "8", 0, first_available=6, head=8)  # the ring dropped samples before 6
    assert [w[3] for w in h.by_index(0, 100)] == ["6", "7", "8"]
    assert [w[3] for w in h.select(None, None, first_available=8)] == ["8"]


def test_watchers_hear_of_each_marker_and_a_broken_one_is_dropped():
    h = history()
    heard, calls = [], []
    h.watch(heard.append)
    gone = h.watch(lambda w: calls.append(w) or False)        # returns False: removed
    h.watch(lambda w: 1 / 0)                                  # raises: removed, logged
    h.add(1, "x", 0, 0, 1)
    h.add(2, "y", 0, 0, 2)
    assert [w[3] for w in heard] == ["x", "y"] and len(calls) == 1 and h.watchers == 1
    h.unwatch(gone)                                           # idempotent


def test_a_watcher_may_read_the_history_it_is_told_about():
    h = history()
    seen = []
    h.watch(lambda w: seen.append(len(h.by_index(0, 10))))    # no lock held while called
    done = threading.Event()
    threading.Thread(target=lambda: (h.add(1, "x", 0, 0, 1), done.set())).start()
    assert done.wait(10) and seen == [1]


@pytest.mark.parametrize("capacity", [1, 3])
def test_capacity_of_one_and_more(capacity):
    h = history(capacity)
    for k in range(4):
        h.add(k, str(k), 0, 0, k)
    assert len(h) == capacity


# ---- markers on live streams served for real ----------------------------------------------

import contextlib  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from software import MefStreamServer, Record, errors, get_connection  # noqa: E402
from software.client.iterators import StreamSegmentIterator  # noqa: E402
from software.live.recorder import Recorder  # noqa: E402
from software.live.replay import Replay  # noqa: E402
from software.live.source import LiveStream  # noqa: E402
from software.mef3.append import AppendingSession  # noqa: E402
from software.mef3.crc import crc_update  # noqa: E402
from software.server.live_roots import LiveRootService  # noqa: E402
from software.stream.options import ServiceOptions  # noqa: E402
from software.stream.service import StreamService  # noqa: E402
from tests.record_sessions import write_events_session  # noqa: E402
from tests.util import wait_until  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ramp(c: int, start: int, n: int) -> np.ndarray:
    i = np.arange(start, start + n, dtype=np.float64)
    return i[None, :] + 100000.0 * np.arange(c)[:, None]


@contextlib.contextmanager
def live_server(stream, **kwargs):
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream, **kwargs) as srv:
        yield srv


def test_producer_and_client_markers_are_records_of_the_stream():
    stream = LiveStream("rig", ["a", "b"], FS, start_uutc=START)
    stream.append_stream_segment_data(ramp(2, 0, 500))
    assert stream.append_marker("producer") == 500                    # the head
    with live_server(stream) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        svc = conn.root
        assert svc.append_marker("client", duration=0.25) == 500
        assert svc.append_marker("earlier", index=100, type="SyLg") == 100
        got = svc.get_records()
        assert [(r.index, r.type, r.text, r.duration) for r in got] == [
            (100, "SyLg", "earlier", None), (500, "Note", "producer", None),
            (500, "EDFA", "client", 250_000)]
        assert got[1].time_uutc == START + 500_000 and got[1].channel is None
        assert got[2].fields == {"duration": 250_000, "text": "client"}
        assert [r.text for r in svc.get_records(START + 600_000, START + 700_000)] == [
            "client"]                                                 # lasts to 750 ms
        assert dict(svc.get_record_counts()) == {"Note": 1, "EDFA": 1, "SyLg": 1}
    stream.close()


def test_pushing_markers_follows_the_push_rules():
    stream = LiveStream("rig", ["a"], FS, start_uutc=START)

    class Conn:          # a peer on another host without a client certificate
        _config = {"endpoints": (("127.0.0.1", 1), ("192.0.2.7", 5)), "credentials": None}

    svc = LiveRootService(stream, ServiceOptions())
    svc.on_connect(Conn())
    with pytest.raises(errors.PushRefusedError, match="192.0.2.7"):
        svc.exposed_append_marker("from afar")
    assert len(stream.markers) == 0
    assert svc.exposed_get_records() == ()                            # reading is allowed
    svc.close()
    stream.close()


def test_a_replayed_stream_refuses_client_markers(data_root, main_path):
    def make(registry):
        return Replay(registry.acquire(main_path), release=registry.release, speed=1.0)\
            .start().stream
    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=8,
                         live=make) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        with pytest.raises(errors.PushRefusedError, match="replays"):
            conn.root.append_marker("mine")


BAD = [
    (dict(text=""), errors.InvalidArgumentError, "empty"),
    (dict(text="   "), errors.InvalidArgumentError, "empty"),
    (dict(text=None), errors.InvalidTypeError, "text"),
    (dict(text="a\0b"), errors.InvalidArgumentError, "NUL"),
    (dict(text="x" * 5000), errors.InvalidArgumentError, "4096"),
    (dict(text="x", index=1001), errors.InvalidRangeError, "outside the stream's history"),
    (dict(text="x", index=-1), errors.InvalidRangeError, "index"),
    (dict(text="x", index=1.5), errors.InvalidTypeError, "index"),
    (dict(text="x", duration=-1), errors.InvalidArgumentError, "duration"),
    (dict(text="x", duration=float("nan")), errors.InvalidArgumentError, "duration"),
    (dict(text="x", duration="long"), errors.InvalidTypeError, "duration"),
    (dict(text="x", type="Xtra"), errors.InvalidArgumentError, "cannot store"),
    (dict(text="x", type="Seiz"), errors.InvalidArgumentError, "fields a marker"),
    (dict(text="x", type="Note", duration=1), errors.InvalidArgumentError, "EDFA"),
]


@pytest.mark.parametrize("kwargs, error, words", BAD)
def test_bad_markers_are_refused_and_nothing_is_appended(kwargs, error, words):
    stream = LiveStream("rig", ["a"], FS, start_uutc=START, history_seconds=0.5)
    stream.append_stream_segment_data(ramp(1, 0, 1000))        # the ring holds 375..999
    assert stream.first_available == 375
    with live_server(stream) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        with pytest.raises(error, match=words):
            conn.root.append_marker(**kwargs)
        if "index" not in kwargs:
            with pytest.raises(error, match=words):
                stream.append_marker(**kwargs)                        # the producer too
        with pytest.raises(errors.InvalidRangeError, match="first_available=375"):
            stream.append_marker("dropped already", index=374)
        assert len(stream.markers) == 0 and conn.root.get_records() == []
        assert conn.root.append_marker("fine", index=375) == 375       # still works
    stream.close()


def test_markers_across_the_ring_wrap_around():
    stream = LiveStream("rig", ["a", "b"], FS, start_uutc=START, history_seconds=0.2)
    ring = stream.ring                                          # 200 + 50 samples
    marks = {}
    for first in range(0, 2000, 37):                            # wraps the ring 8 times
        stream.append_stream_segment_data(ramp(2, first, 37))
        marks[stream.append_marker(f"m{stream.head}")] = f"m{stream.head}"
        stream.append_marker(f"late{stream.head}", index=max(ring.first_available,
                                                             stream.head - 150))
    with live_server(stream) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        svc = conn.root
        got = svc.get_records()
        first = dict(svc.get_info())["first_available"]
        assert got and all(r.index >= first for r in got)    # none older than the ring
        assert [r.time_uutc for r in got] == sorted(r.time_uutc for r in got)
        for r in got:
            assert r.time_uutc == START + r.index * 1000
            if r.text.startswith("m"):
                assert r.text == f"m{r.index}" and marks[r.index] == r.text
        head = stream.head
        start = head - ring.history       # the longest request: its markers with it
        chunk, records = StreamSegmentIterator(ring.history, start=start, records=True).next(
            svc)
        np.testing.assert_array_equal(chunk, ramp(2, start, ring.history))
        assert [r.index for r in records] == sorted(r.index for r in got
                                                    if start <= r.index < head)
    stream.close()


def test_a_follower_gets_each_marker_with_its_chunk_and_a_watcher_before_it():
    stream = LiveStream("rig", ["a"], FS, start_uutc=START)
    with live_server(stream) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        svc = conn.root
        events, watched = [], threading.Event()

        def heard(record):
            events.append(("marker", record.index))
            if record.text == "m990":
                watched.set()

        assert svc.watch_markers(heard) == 0
        it = StreamSegmentIterator(10, start=0, records=True)
        plain = StreamSegmentIterator(10, start=0)                  # CREPE loop: arrays
        seen = []
        stop = threading.Event()

        def produce():
            for first in range(0, 1000, 10):
                if first % 30 == 0:
                    stream.append_marker(f"m{first}")               # at the head
                stream.append_stream_segment_data(ramp(1, first, 10))
            stop.set()

        producer = threading.Thread(target=produce)
        producer.start()
        while it.position < 1000:
            chunk, records = it.next_or_wait(svc, timeout=30)
            events.append(("chunk", it.position))
            assert all(it.position - 10 <= r.index < it.position for r in records)
            seen += [r.text for r in records]
            assert isinstance(plain.next_or_wait(svc, timeout=30), np.ndarray)
        producer.join()
        assert seen == [f"m{k}" for k in range(0, 1000, 30)]        # each once, in order
        assert watched.wait(30)
        marker_at = {i: n for n, (kind, i) in enumerate(events) if kind == "marker"}
        assert len(marker_at) == len(seen)
        # a watcher hears of a marker before the chunk holding it reaches the follower
        # (one view: its callbacks in order; the marker was kept before its sample pushed)
        chunk_at = {i: n for n, (kind, i) in enumerate(events) if kind == "chunk"}
        for index, n in marker_at.items():
            assert n < chunk_at[index - index % 10 + 10]
    stream.close()


def test_a_chunk_that_comes_by_callback_brings_its_markers_without_a_round_trip(
        monkeypatch):
    import software.client.iterators as iterators
    asked = []
    monkeypatch.setattr(iterators, "chunk_records",
                        lambda *a: asked.append(a) or [])       # the round trip, counted
    stream = LiveStream("rig", ["a"], FS, start_uutc=START)
    with live_server(stream) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        it = StreamSegmentIterator(10, start=0, records=True)
        got = []
        follower = threading.Thread(target=lambda: got.append(it.next_or_wait(conn.root,
                                                                              timeout=30)))
        follower.start()
        wait_until(lambda: stream.waiting == 1)                  # asked before it exists
        stream.append_marker("on 0")
        stream.append_stream_segment_data(ramp(1, 0, 4))
        stream.append_marker("on 4", duration=0.001)
        stream.append_stream_segment_data(ramp(1, 4, 6))
        stream.append_marker("on 10")                            # the next chunk's
        follower.join(30)
        chunk, records = got[0]
        assert [(r.index, r.text) for r in records] == [(0, "on 0"), (4, "on 4")]
        assert asked == []                                       # they came with it
        stream.append_stream_segment_data(ramp(1, 10, 10))       # ready at once: the same
        chunk, records = it.next_or_wait(conn.root, timeout=30)
        assert [(r.index, r.text) for r in records] == [(10, "on 10")] and asked == []
        stream.append_stream_segment_data(ramp(1, 20, 10))       # ready, no marker:
        chunk, records = it.next_or_wait(conn.root, timeout=30)  # returned, holds none
        assert chunk.shape == (1, 10) and records == [] and asked == []
        stream.append_stream_segment_data(ramp(1, 30, 10))
        chunk, records = it.next(conn.root)                      # no callback: asked
        assert chunk.shape == (1, 10) and len(asked) == 1
    stream.close()


def test_a_marked_request_can_be_withdrawn_with_its_callback():
    stream = LiveStream("rig", ["a"], FS, start_uutc=START)
    with live_server(stream) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        called = []

        def callback(value):
            called.append(value)

        assert conn.root.get_stream_segment_marked(10, 0, callback) is False
        assert conn.root.withdraw(callback) == 1                 # the wrapper found
        stream.append_marker("m")
        stream.append_stream_segment_data(ramp(1, 0, 10))
        assert conn.root.get_stream_segment_marked(10, 0, callback) is False  # ready: sent
        wait_until(lambda: len(called) == 2)                     # records, then the chunk
        assert called[0][0] == "mefstream-records" and len(called[0][1]) == 1
        assert conn.root.withdraw(callback) == 0
    stream.close()


def test_an_iterator_with_records_that_times_out_withdraws_its_request():
    stream = LiveStream("rig", ["a"], FS, start_uutc=START)
    with live_server(stream) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        it = StreamSegmentIterator(10, start=0, records=True)
        assert it.next_or_wait(conn.root, timeout=0.3) is False      # nothing pushed yet
        wait_until(lambda: stream.waiting == 0)                       # withdrawn
        stream.append_marker("late but kept")
        stream.append_stream_segment_data(ramp(1, 0, 10))
        chunk, records = it.next_or_wait(conn.root, timeout=30)
        assert [r.text for r in records] == ["late but kept"] and chunk.shape == (1, 10)
    stream.close()


def test_a_watcher_stops_with_its_view():
    stream = LiveStream("rig", ["a"], FS, start_uutc=START)
    with live_server(stream) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        got = []
        conn.root.watch_markers(got.append)
        stream.append_marker("one")
        wait_until(lambda: len(got) == 1)
        assert isinstance(got[0], Record) and got[0].text == "one"
        conn.close()
        wait_until(lambda: dict(srv.stats())["connections"] == 0)     # the view closed
        stream.append_marker("two")                 # the closed view's watcher goes
        assert stream.markers.watchers == 0
    stream.close()


# ---- recording -----------------------------------------------------------------------------

def annotations_of(path: str) -> list[dict]:
    from mef_tools.io import MefReader
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return MefReader(path).get_annotations() or []
        except KeyError:
            return []


def test_the_recorder_writes_markers_as_notes_and_edf_annotations(tmp_path):
    stream = LiveStream("rig", ["x", "y"], FS, start_uutc=START)
    stream.append_stream_segment_data(ramp(2, 0, 700))
    svc = StreamService(stream.view(), ServiceOptions(segment_seconds=1.0), "rig")
    path = str(tmp_path / "marked.mefd")
    stream.append_marker("before the recording", index=100)
    with Recorder(svc, path, flush_seconds=0.5) as recorder:
        for first in range(700, 4700, 50):
            stream.append_marker(f"at {first}", duration=0.02 if first % 100 else 0)
            stream.append_stream_segment_data(ramp(2, first, 50))
        wait_until(lambda: recorder.n_samples >= 4000, timeout=30)
    assert recorder.error is None and recorder.n_markers == 80
    got = annotations_of(path)
    expected = [{"type": "EDFA", "time": START + first * 1000, "duration": 20_000,
                 "text": f"at {first}"} if first % 100 else
                {"type": "Note", "time": START + first * 1000, "text": f"at {first}"}
                for first in range(700, 4700, 50)]
    assert sorted(got, key=lambda a: a["time"]) == expected         # field by field
    svc.close()
    stream.close()


APPENDER = """
import sys
from software.mef3.append import AppendingSession
from tests.test_recorder import signal_values
from tests.util import START
path, chunk = sys.argv[1], int(sys.argv[2])
s = AppendingSession(path, ["a", "b"], 1000.0, START)
first = 0
while True:
    marks = [(s.uutc(i), "Note" if i % 2 else "EDFA", f"m{i} " + "x" * (i % 97),
              None if i % 2 else 1000 * i,  None,
              (("text", f"m{i} " + "x" * (i % 97)),) if i % 2 else
              (("duration", 1000 * i), ("text", f"m{i} " + "x" * (i % 97))))
             for i in range(first, first + chunk, 7)]
    s.append(signal_values(2, first, first + chunk), records=marks)
    first += chunk
    print(first, flush=True)
"""


def check_record_files(path: str) -> None:
    """The session's record files: header CRCs valid, the index's body CRC too, each index
    entry pointing at its record (same type and time), records back to back to the end."""
    base = os.path.join(path, os.path.basename(path)[:-5])
    for ext in ("rdat", "ridx"):
        raw = open(f"{base}.{ext}", "rb").read()
        head, body = struct.unpack_from("<II", raw, 0)
        assert head == crc_update(raw[4:1024])
        assert body in (0, crc_update(raw[1024:])) and (ext == "rdat" or body != 0)
    data, index = (open(f"{base}.{ext}", "rb").read() for ext in ("rdat", "ridx"))
    n = struct.unpack_from("<q", index, 32)[0]
    assert n == struct.unpack_from("<q", data, 32)[0] == (len(index) - 1024) // 24
    at = 1024
    for k in range(n):
        kind, offset, time = struct.unpack_from("<5s3xqq", index, 1024 + 24 * k)
        assert offset == at                              # where the record is
        crc, kind2, _, _, _, size, time2 = struct.unpack_from("<I5sBBbIq", data, offset)
        assert (kind2, time2) == (kind, time)
        assert crc == crc_update(data[offset + 4:offset + 24 + size])   # not torn
        at = offset + 24 + size
    assert at == len(data)


@pytest.mark.timeout(300)
def test_sigkill_with_markers_pending_leaves_the_records_of_the_samples_held(tmp_path):
    from tests.test_recorder import read
    rng = random.Random(17)
    env = dict(os.environ, PYTHONPATH=ROOT)
    chunk = 700
    for run in range(6):
        path = str(tmp_path / f"kill{run}.mefd")
        child = subprocess.Popen([sys.executable, "-c", APPENDER, path, str(chunk)],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        done = 0
        for _ in range(rng.randint(2, 6)):
            done = int(child.stdout.readline())
        threading.Event().wait(rng.uniform(0.0, 0.05))   # a random moment, not a sync
        child.kill()
        child.wait()
        for line in child.stdout.read().split():
            done = int(line)
        _, reader = read(path, ("a", "b"))
        n = int(reader.get_property("nsamp")[0])
        assert n in (done, done + chunk)
        got = sorted(annotations_of(path), key=lambda a: a["time"])
        want = [i for i in range(0, n, 7)]                # every marker of the samples held
        assert [a["text"] for a in got] == [f"m{i} " + "x" * (i % 97) for i in want]
        assert [a["time"] for a in got] == [START + i * 1000 for i in want]
        assert [a.get("duration") for a in got] == [None if i % 2 else 1000 * i
                                                    for i in want]
        check_record_files(path)


def written(path: str) -> int:
    """Records in a session being recorded (0 while it does not exist, or when an append's
    exchange came between two of MefReader's file reads)."""
    try:
        return len(annotations_of(path)) if os.path.isdir(path) else 0
    except Exception:  # noqa: BLE001 - read again at the next poll
        return 0


def test_an_append_that_fails_leaves_no_record_behind(tmp_path, monkeypatch):
    import software.mef3.append as mefappend
    from tests.test_recorder import signal_values
    path = str(tmp_path / "failing.mefd")
    note = lambda i: (START + i * 1000, "Note", f"n{i}", None, None,  # noqa: E731
                      (("text", f"n{i}"),))
    session = AppendingSession(path, ["a"], FS, START)
    session.append(signal_values(1, 0, 100), records=[note(10)])
    session.append(signal_values(1, 100, 200), records=[note(110)])
    real = mefappend.exchange

    def fail(a, b):
        raise OSError("the disk is full")

    monkeypatch.setattr(mefappend, "exchange", fail)
    with pytest.raises(OSError, match="disk is full"):
        session.append(signal_values(1, 200, 300), records=[note(210), note(220)])
    monkeypatch.setattr(mefappend, "exchange", real)
    session.append(signal_values(1, 200, 300), records=[note(250)])
    session.append(signal_values(1, 300, 400), records=[note(310)])
    session.close()
    assert [a["text"] for a in sorted(annotations_of(path), key=lambda a: a["time"])] == [
        "n10", "n110", "n250", "n310"]
    check_record_files(path)
    with pytest.raises(errors.InvalidArgumentError, match="type='Xtra'"):
        AppendingSession(str(tmp_path / "bad.mefd"), ["a"], FS, START).append(
            signal_values(1, 0, 10), records=[(START, "Xtra", "?", None, None, ())])
    assert not os.path.exists(tmp_path / "bad.mefd")      # refused before anything


@pytest.mark.timeout(300)
def test_a_killed_recorder_process_keeps_the_markers_of_what_it_wrote(tmp_path):
    stream = LiveStream("rig", ["a", "b"], FS, start_uutc=START, history_seconds=30)
    path = str(tmp_path / "rec.mefd")
    with live_server(stream) as srv:
        stop = threading.Event()

        def produce():
            first = 0
            while not stop.is_set():
                stream.append_marker(f"m{first}")
                stream.append_stream_segment_data(ramp(2, first, 20))
                first += 20
                stop.wait(0.004)         # a producer's pace (not a synchronisation)

        producer = threading.Thread(target=produce)
        producer.start()
        child = subprocess.Popen([sys.executable, "-m", "software", "record", path,
                                  "--flush-seconds", "0.2", "--port", str(srv.port)],
                                 cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: written(path) >= 30, timeout=60)
            child.kill()                          # markers pending: gathered, not written
            child.wait()
        finally:
            stop.set()
            producer.join()
    from tests.test_recorder import read
    got, reader = read(path, ("a", "b"))
    n = got.shape[1]
    head0 = int(round((reader.get_property("start_time", "a") - START) / 1000))
    np.testing.assert_allclose(got, ramp(2, head0, n), atol=1e-9)
    marks = sorted(annotations_of(path), key=lambda a: a["time"])
    want = [i for i in range(0, head0 + n, 20) if i >= head0]
    assert [a["text"] for a in marks] == [f"m{i}" for i in want]   # all, and only, those
    assert [a["time"] for a in marks] == [START + i * 1000 for i in want]
    assert stream.markers.by_index(head0 + n, stream.head)           # some were pending
    check_record_files(path)
    stream.close()


# ---- replay --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def events_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("replayed")
    write_events_session(str(root / "events.mefd"))
    return str(root)


def file_position(stretches, index: int) -> int:
    """File grid index of stream index ``index`` (its stretch: first index, file time)."""
    first, uutc = [s for s in stretches if s[0] <= index][-1]
    return int(round((uutc - START) * 256 / 1e6)) + index - first


def test_a_replay_pushes_the_file_records_at_their_samples_across_seek_and_loop(
        events_root):
    path = os.path.join(events_root, "events.mefd")
    made = []

    def make(registry):
        replay = Replay(registry.acquire(path), release=registry.release, speed=60.0,
                        loop=True, history_seconds=1000)
        made.append(replay)
        return replay.start().stream

    with MefStreamServer(port=0, data_root=events_root, workers=1, cache_mb=16,
                         live=make) as srv, get_connection(srv.port, host="127.0.0.1") as conn:
        svc = conn.root
        wait_until(lambda: stream_head(svc) > 20 * 256, timeout=60)
        made[0].seek(START + 55_000_000)                  # a new stretch from 55 s

        def looped_far() -> bool:                          # ... then round the end again
            stretches = dict(svc.get_info())["stretches"]
            return len(stretches) >= 3 and stream_head(svc) - stretches[2][0] > 10 * 256

        wait_until(looped_far, timeout=120)
        svc.pause()
        info = dict(svc.get_info())
        stretches, head = info["stretches"], info["n_samples"]
        by_position = {}
        for r in replay_records(path):
            if 0 <= r[1] < 120 * 256:
                by_position.setdefault(r[1], []).append(r)
        got = svc.get_records()
        positions = []
        for marker in got:                     # each marker is a file record, at its sample
            p = file_position(stretches, marker.index)
            matches = [r for r in by_position.get(p, ()) if (r[3] or r[2]) == marker.text]
            assert matches, (marker, p)
            assert marker.duration == matches[0][4] and marker.channel == matches[0][5]
            assert marker.type == ("EDFA" if matches[0][4] else "Note")
            positions.append(p)
        expected = []                          # ... and every record of every stretch came
        for k, (first, _) in enumerate(stretches):
            end = stretches[k + 1][0] if k + 1 < len(stretches) else head
            p0 = file_position(stretches, first)
            expected += [p for p in by_position for _ in by_position[p]
                         if p0 <= p < p0 + (end - first)]
        assert sorted(positions) == sorted(expected)
        starts = [first for first, _ in stretches]
        per_stretch = {max(k for k, f in enumerate(starts) if f <= m.index) for m in got}
        assert {0, 1, 2} <= per_stretch        # before the seek, after it, after the loop


def stream_head(svc) -> int:
    return int(dict(svc.get_info())["n_samples"])


def replay_records(path: str) -> list[tuple]:
    """(time, index at 256 Hz, type, text, duration, channel) of the file's records."""
    from software.mef3.access import MefSessionFile
    from software.mef3.metadata import grid_offset
    from software.mef3.records import session_records
    with MefSessionFile(path) as session:
        records = session_records(session)
    return [(r[0], grid_offset(r[0], START, 256.0), r[1], r[2], r[3], r[4]) for r in records]
