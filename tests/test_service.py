"""End to end: a real server, real reader processes, compared with MefReader sample by sample."""
from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import pytest
import rpyc

import software
from software import (
    MefStreamServer,
    StreamRowIterator,
    StreamSegmentIterator,
    decode_segment,
    get_connection,
)
from tests.conftest import PASSWORD2
from tests.util import reference


def same(a, b) -> bool:
    """Bit-exact equality, NaN included."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def ref_main(main_path):
    from mef_tools.io import MefReader
    names = list(MefReader(main_path).channels)
    return names, reference(main_path, names)


@pytest.fixture
def svc(conn):
    return conn.root.open_file("main.mefd")


def cold(server):
    """Empty the shared cache so the next read goes to the reader processes."""
    server.cache.discard_where(lambda key: True)


def test_get_info(svc, ref_main, main_path):
    names, ref = ref_main
    info = dict(svc.get_info())
    assert info["channels"] == tuple(names) == info["all_channels"]
    assert info["fs"] == 256.0 and info["n_samples"] == ref.shape[1]
    assert info["units"] == ("uV",) * len(names)
    assert info["segment_seconds"] == 7.0
    assert info["n_segments"] == -(-ref.shape[1] // (7 * 256))
    assert len(info["gaps"]) == 2 and info["growing"] is False
    assert info["path"] == "main.mefd"
    assert info["end_uutc"] > info["start_uutc"]


def test_every_segment_matches_for_sizes_that_do_not_divide_the_file(svc, ref_main):
    names, ref = ref_main
    for seconds in (7.0, 13.7):
        n = svc.set_segment_size(seconds)
        step = int(round(seconds * 256))
        assert n == -(-ref.shape[1] // step)
        parts = [decode_segment(svc.get_segment(i)) for i in range(n)]
        assert parts[-1].shape[1] == ref.shape[1] - step * (n - 1)   # shorter last segment
        assert same(np.concatenate(parts, axis=1), ref)


def test_random_windows_shuffled_channels(conn, server, ref_main):
    names, ref = ref_main
    svc = conn.root.open_file("main.mefd")
    rng = np.random.default_rng(11)
    n = ref.shape[1]
    for trial in range(40):
        subset = list(rng.permutation(names)[:rng.integers(1, len(names) + 1)])
        assert svc.set_active_channels(subset) == tuple(subset)
        start = int(rng.integers(0, n))
        length = int(rng.integers(1, 30_000))
        if trial % 5 == 0:
            cold(server)
        got = decode_segment(svc.get_stream_segment(length, start))
        rows = [names.index(c) for c in subset]
        assert same(got, ref[rows, start:start + length])   # fewer samples near the end
    # a row by index and by name
    svc.set_active_channels(["O2", "index"])
    row = decode_segment(svc.get_row_segment(1, 1000, 5000))
    assert same(row, ref[names.index("index"), 5000:6000])
    assert row[0] == 50.0   # the index channel holds sample_index / 100
    by_name = decode_segment(svc.get_row_segment("O2", 10, 0))
    assert same(by_name, ref[names.index("O2"), :10])


def test_end_of_file(svc, ref_main):
    n = ref_main[1].shape[1]
    assert svc.get_stream_segment(100, n) is False
    assert svc.get_stream_segment(100, n + 10**6) is False
    assert decode_segment(svc.get_stream_segment(100, n - 3)).shape == (6, 3)
    assert svc.get_row_segment(0, 5, n) is False


def test_time_segments_equal_mefreader_windows(svc, ref_main, main_path):
    from mef_tools.io import MefReader
    names, ref = ref_main
    info = dict(svc.get_info())
    t_start, fs = info["start_uutc"], info["fs"]
    reader = MefReader(main_path)
    for k0, k1 in [(0, 256), (1024, 20000), (10368, 13400), (30720, 33000), (44000, 46080)]:
        t0 = t_start + k0 * 1_000_000 // 256 * 1  # k0 multiple of 4: t0 on the grid exactly
        t0 = t_start + (k0 // 4) * 15625
        t1 = t_start + (k1 // 4) * 15625
        got = decode_segment(svc.get_time_segment(t0, t1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = np.array(reader.get_data(names, t0, t1))
        assert same(got, want), (k0, k1)
    # past both ends: NaN outside the recording, as MefReader pads
    t0, t1 = t_start - 2_000_000, info["end_uutc"] + 3_000_000
    got = decode_segment(svc.get_time_segment(t0, t1))
    assert got.shape[1] == int((t1 - t0) / 1e6 * fs + 0.5)
    assert np.isnan(got[:, :512]).all() and np.isnan(got[:, -768:]).all()
    assert same(got[:, 512:512 + ref.shape[1]], ref)
    # entirely outside: nothing to return
    assert svc.get_time_segment(t_start - 10_000_000, t_start - 5_000_000) is False


def test_callbacks_fire_once_with_the_right_data(conn, server, ref_main):
    names, ref = ref_main
    svc = conn.root.open_file("main.mefd")
    cold(server)
    received = []
    arrived = threading.Event()
    lock = threading.Lock()

    def callback(value):
        with lock:
            received.append(decode_segment(value))
            if len(received) == 3:
                arrived.set()

    # beyond what the first one reads ahead (120 s), and jumps (no read-ahead of their own)
    windows = [(2000, 100), (5000, 42000), (8000, 33500)]
    answers = [svc.get_stream_segment(length, start, callback) for length, start in windows]
    assert answers == [False, False, False]
    assert arrived.wait(10)
    got = sorted(received, key=lambda a: a.shape[1])
    want = sorted((ref[:, s:s + n] for n, s in windows), key=lambda a: a.shape[1])
    assert all(same(g, w) for g, w in zip(got, want))
    # cached now: returned at once, the callback is not called again
    extra = []
    value = svc.get_stream_segment(2000, 100, extra.append)
    assert same(decode_segment(value), ref[:, 100:2100])
    conn.root.open_file("main.mefd").get_info()   # a round trip after any late delivery
    assert extra == [] and len(received) == 3


def test_two_connections_do_not_interfere(server, ref_main):
    names, ref = ref_main
    with_a = get_connection(server.port)
    with_b = get_connection(server.port)
    try:
        a = with_a.root.open_file("main.mefd")
        b = with_b.root.open_file("main.mefd")
        a.set_active_channels(["Cz"])
        a.set_segment_size(1.5)
        b.set_segment_size(20)
        assert dict(b.get_info())["channels"] == tuple(names)
        assert decode_segment(a.get_segment(2)).shape == (1, 384)
        assert same(decode_segment(b.get_segment(1)), ref[:, 5120:10240])
        assert same(decode_segment(a.get_segment(3)), ref[[names.index("Cz")], 1152:1536])
        assert with_a.root.list_open_files() == ("main.mefd",)
        assert with_a.root.close_file("main.mefd") is True
        with pytest.raises(software.ServiceClosedError):
            a.get_info()
        assert same(decode_segment(b.get_segment(0)), ref[:, :5120])   # b unaffected
    finally:
        with_a.close()
        with_b.close()


def test_encrypted_session(conn, data_root):
    svc = conn.root.open_file("secret.mefd", password=PASSWORD2)
    want = reference(os.path.join(data_root, "secret.mefd"), ["a"], password=PASSWORD2)
    assert same(decode_segment(svc.get_stream_segment(5000, 0)), want[:, :5000])
    assert "password" not in repr(svc.get_info()).lower()
    with pytest.raises(software.WrongPasswordError):
        conn.root.open_file("secret.mefd", password="nope")


@pytest.mark.parametrize("path, error", [
    ("missing.mefd", software.NotMefSessionError),
    ("not_a_session.mefd", software.NotMefSessionError),
    ("plain_dir", software.NotMefSessionError),
    ("../outside.mefd", software.OutsideDataRootError),
    ("/etc", software.OutsideDataRootError),
])
def test_open_file_errors(conn, path, error):
    with pytest.raises(error) as caught:
        conn.root.open_file(path)
    assert repr(path) in str(caught.value)
    assert dict(conn.root.open_file("main.mefd").get_info())["n_samples"] > 0


def test_wrong_password_and_channel_errors_name_the_fix(conn):
    with pytest.raises(software.WrongPasswordError, match="level-2"):
        conn.root.open_file("secret.mefd")
    svc = conn.root.open_file("main.mefd")
    with pytest.raises(software.UnknownChannelError, match="Pz"):
        svc.set_active_channels(["Cz", "Pz"])
    with pytest.raises(software.InvalidRangeError, match="more than once"):
        svc.set_active_channels(["Cz", "Cz"])
    with pytest.raises(software.InvalidRangeError, match="_startIndex"):
        svc.get_stream_segment(10, -1)
    with pytest.raises(software.InvalidTypeError, match="_range"):
        svc.get_stream_segment(2.5, 0)
    with pytest.raises(software.InvalidRangeError, match="index"):
        svc.get_segment(10**6)
    with pytest.raises(software.UnknownChannelError, match="_row"):
        svc.get_row_segment(99, 10, 0)
    assert decode_segment(svc.get_stream_segment(10, 0)).shape == (6, 10)


def test_mixed_rates(conn):
    svc = conn.root.open_file("mixed.mefd")
    info = dict(svc.get_info())
    assert info["channels"] == ("fast1", "fast2") and info["fs"] == 512.0   # tie: first listed
    with pytest.raises(software.MixedRateError, match="256 Hz.*512 Hz"):
        svc.set_active_channels(["slow1", "fast1"])
    svc.set_active_channels(["slow2", "slow1"])
    info = dict(svc.get_info())
    assert info["fs"] == 256.0 and info["n_samples"] == 256 * 30
    assert decode_segment(svc.get_stream_segment(256, 0)).shape == (2, 256)


def test_iterators_over_a_connection_and_a_service(server, ref_main, main_path):
    names, ref = ref_main
    conn = get_connection(server.port)
    try:
        svc = conn.root.open_file("main.mefd")
        cold(server)
        it = StreamSegmentIterator(_range=2560 * 3)
        parts = []
        while (seg := it.next_or_wait(svc, timeout=10)) is not False:
            parts.append(seg)
        assert same(np.concatenate(parts, axis=1), ref)
        assert it.position == ref.shape[1]
        assert it.next_or_wait(svc, timeout=10) is False      # at the end: at once
        rows = StreamRowIterator(_channel="index", _range=5000, start=40000, target=svc)
        column = np.concatenate(list(rows))
        assert same(column, ref[names.index("index"), 40000:])
    finally:
        conn.close()


def test_single_file_root_and_plain_rpyc_connect(data_root, main_path, ref_main):
    names, ref = ref_main
    with MefStreamServer(port=0, data_root=data_root, session=main_path, workers=1) as srv:
        conn = rpyc.connect("127.0.0.1", srv.port,
                            config={"import_custom_exceptions": True,
                                    "instantiate_custom_exceptions": True})
        try:
            first = decode_segment(conn.root.get_stream_segment(_range=1000, _startIndex=0))
            assert same(first, ref[:, :1000])
            it = StreamSegmentIterator(_range=20000, start=1000)
            parts = [first]
            while (seg := it.next_or_wait(conn, timeout=10)) is not False:
                parts.append(seg)     # plain connection: next_or_wait serves it itself
            assert same(np.concatenate(parts, axis=1), ref)
            with pytest.raises(software.InvalidRangeError):
                conn.root.get_stream_segment(0, 0)
        finally:
            conn.close()


def test_server_close_is_idempotent_and_releases_the_port(data_root):
    import socket
    srv = MefStreamServer(port=0, data_root=data_root, workers=1).start()
    port = srv.port
    srv.close()
    srv.close()
    assert srv.closed and srv.pool.closed
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_iterators_cost_one_round_trip_per_chunk(conn):
    """The service, its method and its length are looked up once, not per chunk."""
    svc = conn.root.open_file("main.mefd")
    for it in (StreamSegmentIterator(256), StreamRowIterator("Cz", 256)):
        it.next_or_wait(svc)                       # resolves: get_info and the method
        before = next(conn._seqcounter)            # rpyc numbers every request it sends
        for _ in range(20):
            assert it.next_or_wait(svc) is not False
        assert next(conn._seqcounter) - before == 21   # 20 calls, and this counter read
