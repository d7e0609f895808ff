"""Records of MEF3 sessions served with the samples: equal to MefReader.get_annotations field
by field (session and channel level, Note, EDFA with durations, Seiz), windows, grid
indices, caching per session, bounded answers and bad input, on a real server."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import rpyc

from software import MefStreamServer, Record, errors, get_connection
from software.cache.records import RecordTable, grid_indices
from software.mef3.metadata import RateGroup, grid_offset
from software.mef3.record_writer import write_records
from software.mef3.records import check_marker_text, check_storable
from software.mef3.writer import write_session
from tests.record_sessions import (
    CHANNEL_NOTES,
    SESSION_NOTES,
    at,
    write_events_session,
    write_many_records,
)
from tests.util import FS, START


@pytest.fixture(scope="module")
def records_root(tmp_path_factory) -> str:
    """events.mefd (records at both levels), mixed.mefd (two rates, records), plain.mefd
    (no record), secret.mefd (encrypted, with records), many.mefd (3,000 records)."""
    root = tmp_path_factory.mktemp("records")
    write_events_session(str(root / "events.mefd"))
    rng = np.random.default_rng(2)
    write_session(root / "mixed.mefd", {"slow": rng.normal(0, 5, 256 * 20),
                                        "fast": np.arange(512 * 20) / 100.0},
                  {"slow": 256.0, "fast": 512.0}, START)
    write_records(str(root / "mixed.mefd"), [
        (at(2.0) + 977, "Note", "between samples", None, None, (("text", "between samples"),)),
        (at(3.0), "EDFA", "fast only", 1_000_000, "fast",
         (("duration", 1_000_000), ("text", "fast only")))])
    write_session(root / "plain.mefd", {"x": np.zeros(256 * 10)}, FS, START)
    write_session(root / "secret.mefd", {"x": np.zeros(256 * 10)}, FS, START,
                  password1="one", password2="two")
    write_records(str(root / "secret.mefd"), [
        (at(1.0), "Note", "hidden", None, None, (("text", "hidden"),))],
        password1="one", password2="two")
    write_many_records(str(root / "many.mefd"), 3000, 600.0)
    return str(root)


@pytest.fixture(scope="module")
def records_server(records_root):
    with MefStreamServer(port=0, data_root=records_root, workers=1, cache_mb=16) as srv:
        yield srv


@pytest.fixture
def rconn(records_server):
    connection = get_connection(records_server.port, host="127.0.0.1", timeout=10)
    yield connection
    connection.close()


def annotations(path: str, password=None) -> list[dict]:
    """Every record MefReader.get_annotations gives, with a 'channel' key added."""
    from mef_tools.io import MefReader
    reader = MefReader(path, password2=password)
    try:
        out = [dict(a, channel=None) for a in reader.get_annotations() or []]
    except KeyError:          # mef_tools: a session without records
        out = []
    for name in reader.channels:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                found = reader.get_annotations(name) or []
            except KeyError:      # mef_tools: a channel without records
                found = []
        out += [dict(a, channel=name) for a in found]
    return out


def key(item: dict):
    return (item["time"], item["channel"] or "", item["type"], str(item.get("text")))


def test_records_equal_get_annotations_field_by_field(rconn, records_root):
    path = os.path.join(records_root, "events.mefd")
    expected = sorted(annotations(path), key=key)
    svc = rconn.root.open_file("events.mefd")
    got = svc.get_records()
    assert [r.time_uutc for r in got] == sorted(r.time_uutc for r in got)   # by time
    mine = sorted((dict(r.annotation(), channel=r.channel) for r in got), key=key)
    assert len(mine) == len(expected) == len(SESSION_NOTES) + 1 + sum(
        map(len, CHANNEL_NOTES.values()))
    for a, b in zip(mine, expected):
        assert a.keys() == b.keys()
        for field in b:
            assert a[field] == b[field], field
            if isinstance(b[field], (np.integer, int)):
                assert type(a[field]) is int           # plain values, sent by copy
    by_text = {r.text: r for r in got}
    assert by_text["seizure onset"].duration == 2_000_000
    assert by_text["eyes closed"].duration is None and by_text["eyes closed"].type == "Note"
    assert by_text["spike train"].channel == "a" and by_text["b flat"].channel == "b"
    assert by_text["focal seizure"].type == "Seiz"
    assert by_text["focal seizure"].fields["channels"][0]["name"] == "a"


def test_a_record_index_is_the_sample_it_marks_on_the_grid(rconn):
    svc = rconn.root.open_file("events.mefd")
    svc.set_active_channels(["index"])
    record = next(r for r in svc.get_records() if r.text == "on sample 1000")
    assert record.index == 1000
    # the 'index' channel holds sample_index / 100: the record sits on that sample
    assert svc.get_stream_segment(1, record.index)[0, 0] == pytest.approx(10.0)
    before = next(r for r in svc.get_records() if r.text == "before the start")
    assert before.index == -256                   # one second before sample 0


def test_a_window_holds_the_records_overlapping_it(rconn):
    svc = rconn.root.open_file("events.mefd")
    texts = [r.text for r in svc.get_records(at(35.0), at(60.0))]
    assert texts == ["long artefact", "electrode pop"]      # 30.5 s + 10 s overlaps; 60 out
    assert [r.text for r in svc.get_records(at(60.0), at(60.0) + 1)] == [
        "eyes open", "same time as a note"]
    assert [r.text for r in svc.get_records(at(40.5), at(44.0))] == []   # ended at 40.5
    assert [r.text for r in svc.get_records(stop_uutc=at(0.5))] == ["before the start"]
    assert [r.text for r in svc.get_records(start_uutc=at(119.5))] == ["after the end"]
    # a chunk's records: by sample index, each record in exactly one chunk
    chunks = [svc.get_records_by_index(a, a + 2560) for a in range(0, 120 * 256, 2560)]
    inside = [r.text for chunk in chunks for r in chunk]
    assert sorted(inside) == sorted(r.text for r in svc.get_records()
                                    if 0 <= r.index < 120 * 256)


def test_indices_follow_the_active_rate(rconn):
    svc = rconn.root.open_file("mixed.mefd")
    svc.set_active_channels(["slow"])
    slow = {r.text: r.index for r in svc.get_records()}
    svc.set_active_channels(["fast"])
    fast = {r.text: r.index for r in svc.get_records()}
    t = at(2.0) + 977                       # 512.25 samples at 256 Hz, 1024.5 at 512 Hz
    assert slow["between samples"] == grid_offset(t, START, 256.0) == 512
    assert fast["between samples"] == grid_offset(t, START, 512.0) == 1025
    assert fast["fast only"] == 3 * 512 and slow["fast only"] == 3 * 256


def test_grid_indices_round_half_away_from_zero_as_pymef():
    group = RateGroup(fs=1000.0, channels=("a",), start_uutc=START, end_uutc=START + 10**6,
                      n_samples=1000)
    times = START + np.array([-1500, -1499, -500, 0, 499, 500, 1500, 2499])
    assert grid_indices(times, group).tolist() == [grid_offset(int(t), START, 1000.0)
                                                   for t in times]


def test_records_are_read_once_per_session_and_shared(records_server):
    conns = [get_connection(records_server.port, host="127.0.0.1") for _ in range(2)]
    try:
        first = conns[0].root.open_file("events.mefd")
        a = first.get_records()
        recording = next(entry[0] for path, entry in records_server.registry._open.items()
                         if path.endswith("events.mefd"))
        future = recording.records.future()
        b = conns[1].root.open_file("events.mefd").get_records()
        first.get_records(at(1.0), at(2.0))
        assert recording.records.future() is future          # one reader task, kept
        assert a == b
    finally:
        for c in conns:
            c.close()


def test_a_session_without_records_answers_none(rconn):
    svc = rconn.root.open_file("plain.mefd")
    assert svc.get_records() == []
    assert svc.get_record_counts() == ()


def test_counts_by_type(rconn):
    counts = dict(rconn.root.open_file("events.mefd").get_record_counts())
    assert counts == {"Note": 8, "EDFA": 4, "Seiz": 1}


def test_an_encrypted_session_gives_its_records_with_the_password(rconn, records_root):
    svc = rconn.root.open_file("secret.mefd", "two")
    got = svc.get_records()
    assert [dict(r.annotation(), channel=r.channel) for r in got] == annotations(
        os.path.join(records_root, "secret.mefd"), "two") and got[0].text == "hidden"


def test_an_answer_is_bounded_and_the_message_names_a_window_that_fits(records_root):
    with MefStreamServer(port=0, data_root=records_root, workers=1, cache_mb=8,
                         max_request_mb=0.05) as srv, \
            get_connection(srv.port, host="127.0.0.1") as conn:
        svc = conn.root.open_file("many.mefd")
        with pytest.raises(errors.InvalidRangeError, match="stop_uutc="):
            svc.get_records()
        texts, start, pages = set(), None, 0
        while True:                        # page through with the windows it names
            try:
                part = svc.get_records(start, None)
            except errors.InvalidRangeError as exc:
                stop = int(str(exc).split("e.g. stop_uutc=")[1].split(",")[0])
                part = svc.get_records(start, stop)
                assert len(part) > 100
                start = stop
            else:
                start = None
            texts |= {r.text for r in part}    # a record overlapping two pages comes twice
            pages += 1
            if start is None:
                break
        assert len(texts) == 3000 and pages > 2


def test_the_root_serving_one_session_answers_records(records_root):
    with MefStreamServer(port=0, data_root=records_root, workers=1, cache_mb=8,
                         session="events.mefd") as srv:
        with get_connection(srv.port, host="127.0.0.1") as conn:
            assert len(conn.root.get_records(at(0), at(10))) == 5
            assert isinstance(conn.root.get_records()[0], Record)
        plain = rpyc.connect("127.0.0.1", srv.port)      # the wire form: plain tuples
        try:
            wire = plain.root.get_records(at(0.5), at(1.5))
            assert isinstance(wire, tuple) and wire[0][:6] == (
                at(1.0), 256, "Note", "eyes closed", None, None)
            assert wire[0][6] == ()               # a Note's fields: rebuilt by Record
            seizure = plain.root.get_records(at(80.0), at(80.0) + 1)[0]
            assert dict(seizure[6])["annotation"] == "focal seizure"
        finally:
            plain.close()


def test_the_file_service_root_says_to_open_a_file_first(rconn):
    with pytest.raises(errors.NoFileOpenError, match="open_file"):
        rconn.root.get_records()


def test_bad_windows_and_markers_on_a_file_are_refused(rconn):
    svc = rconn.root.open_file("events.mefd")
    with pytest.raises(errors.InvalidRangeError, match="stop_uutc"):
        svc.get_records(at(5), at(5))
    with pytest.raises(errors.InvalidTypeError, match="start_uutc"):
        svc.get_records(1.5, None)
    with pytest.raises(errors.InvalidTypeError, match="start_uutc"):
        svc.get_records("soon", None)
    with pytest.raises(errors.InvalidRangeError, match="stop"):
        svc.get_records_by_index(10, 10)
    with pytest.raises(errors.StreamError, match="read-only"):
        svc.append_marker("stimulus")
    with pytest.raises(errors.StreamError, match="get_records"):
        svc.watch_markers(lambda record: None)
    assert len(svc.get_records()) == 13                  # the view still works


def test_records_mef3_cannot_store_are_refused_before_anything_is_written(tmp_path):
    path = str(tmp_path / "w.mefd")
    write_session(path, {"x": np.zeros(256 * 4)}, FS, START)
    good = (at(1.0), "Note", "fine", None, None, (("text", "fine"),))
    with pytest.raises(errors.InvalidArgumentError, match="type='XYZ1'"):
        write_records(path, [good, (at(2.0), "XYZ1", "?", None, None, ())])
    with pytest.raises(errors.InvalidArgumentError, match="NUL"):
        write_records(path, [good, (at(2.0), "Note", "a\0b", None, None, (("text", "a\0b"),))])
    with pytest.raises(errors.InvalidArgumentError, match="no such channel"):
        write_records(path, [good, (at(2.0), "Note", "x", None, "nope", (("text", "x"),))])
    assert annotations(path) == []                              # nothing was written
    with pytest.raises(errors.InvalidArgumentError, match="type="):
        check_storable("Foo")
    for text, error in (("", errors.InvalidArgumentError), ("  ", errors.InvalidArgumentError),
                        (None, errors.InvalidTypeError), (b"x", errors.InvalidTypeError),
                        ("x" * 5000, errors.InvalidArgumentError)):
        with pytest.raises(error, match="text"):
            check_marker_text(text)


def test_the_client_rebuilds_the_fields_the_wire_leaves_out():
    from software.client import records as client_records
    from software.mef3 import records as mef3_records
    assert client_records._DERIVED == mef3_records.DERIVED_FIELDS
    from software.stream.records import RECORDS_TAG
    assert client_records.RECORDS_TAG == RECORDS_TAG
    for record in (mef3_records.marker_record(START, "x", 0),
                   mef3_records.marker_record(START, "y", 5)):
        wire = (record[0], 0) + record[1:5] + (mef3_records.wire_fields(*record[1:4],
                                                                        record[5]),)
        assert wire[6] == () and client_records.as_record(wire).fields == dict(record[5])


def test_the_table_answers_windows_without_scanning():
    records = [(START + k * 1000, "Note", str(k), None, None, (("text", str(k)),))
               for k in range(1000)]
    records.insert(0, (START - 10**6, "EDFA", "long", 10**7, None, ()))
    table = RecordTable(records)
    assert table.select(START + 500_000, START + 503_000).tolist() == [0, 501, 502, 503]
    assert table.select(None, START - 10**6 + 1).tolist() == [0]
    assert len(table.select(None, None)) == 1001


def test_an_iterator_option_gives_each_chunk_with_its_records(rconn, records_server):
    from software.client.iterators import StreamRowIterator, StreamSegmentIterator
    svc = rconn.root.open_file("events.mefd")
    every = [r for r in svc.get_records() if 0 <= r.index < 120 * 256]
    seen, position = [], 0
    for chunk, records in StreamSegmentIterator(2560, target=svc, records=True):
        assert all(position <= r.index < position + chunk.shape[1] for r in records)
        seen += records
        position += chunk.shape[1]
    assert seen == every
    plain = StreamSegmentIterator(2560)                       # CREPE loops: unchanged
    assert isinstance(plain.next(svc), np.ndarray)
    rows = StreamRowIterator("a", 1024, start=512, records=True)
    chunk, records = rows.next(svc)
    assert chunk.shape == (1024,) and [r.text for r in records] == [
        "spike train", "on sample 1000", "seizure onset"]          # [512, 1536)
    raw = rpyc.connect("127.0.0.1", records_server.port)     # a plain proxy: Records too
    try:
        chunk, records = StreamSegmentIterator(2560, records=True).next(
            raw.root.open_file("events.mefd"))
        assert [r.text for r in records] == [r.text for r in every if r.index < 2560]
    finally:
        raw.close()
