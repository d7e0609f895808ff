"""Envelopes (issue 15): exact min/max per bin, from block tables, tiles and samples.

Every envelope is checked against numpy's nanmin/nanmax of MefReader's whole-recording
read over the returned bins: at block and sub-block resolution, across gaps, MEF segments
and rates, precisions 0-4, bins straddling blocks, channels whose blocks lie elsewhere,
dirty block groups, and live streams against the samples pushed.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import Future

import numpy as np
import pytest

import software
from benchmarks.sessions import LongSession, ensure_long_session
from software import MefStreamServer, decode_segment, get_connection
from software.cache.pyramid import pyramid_of
from software.live.source import LiveStream
from software.mef3.envelope import DIRTY, BlockEnvelope, blocks_per_group
from software.mef3.writer import write_session
from tests.util import START, reference, wait_until

N = 256 * 150            # 150 s at 256 Hz: 15 MEF blocks of 10 s a channel


def _signals(precision: int, seed: int) -> dict:
    """``a`` and ``c`` share their block layout; ``b`` starts 1000 samples late (its blocks
    lie elsewhere); all have a gap; values keep ``precision`` decimals."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in ("a", "b", "c"):
        x = np.round(rng.normal(0, 40, N) - 20 * (name == "c"), precision)
        x[int(40.5 * 256) + 3:int(52 * 256) + 11] = np.nan         # a gap (a new block)
        out[name] = x
    out["b"][:1000] = np.nan
    out["c"][7000:7010] = np.nan      # a short NaN run: mef_tools stores it as 0
    return out


@pytest.fixture(scope="module")
def env_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("envelopes")
    for p in range(5):
        write_session(root / f"prec{p}.mefd", _signals(p, p), 256.0, START, precision=p,
                      new_segment_at=[(256 * 100, START + 105_001_954)])  # off the grid
    rng = np.random.default_rng(9)
    slow = np.round(rng.normal(0, 10, 256 * 60), 2)
    fast = np.round(rng.normal(0, 10, 512 * 60), 2)
    fast[512 * 20:512 * 25] = np.nan
    write_session(root / "rates.mefd", {"s1": slow, "f1": fast, "s2": -slow, "f2": fast * 2},
                  {"s1": 256.0, "s2": 256.0, "f1": 512.0, "f2": 512.0}, START, precision=2)
    # 1 s blocks of 8 samples, a one-block gap every 97 s, two segments
    ensure_long_session(LongSession(str(root), n_blocks=3 * 600, n_channels=3, fs=8.0,
                                    segments=2, gap_every=97), log=lambda *a: None)
    return str(root)


@pytest.fixture(scope="module")
def env_server(env_root):
    with MefStreamServer(port=0, data_root=env_root, workers=2, cache_mb=32,
                         prefetch=0) as srv:
        yield srv


@pytest.fixture
def env_conn(env_server):
    conn = get_connection(env_server.port, host="127.0.0.1", timeout=10)
    yield conn
    conn.close()


_refs: dict = {}


def ref_of(root: str, name: str, channels) -> np.ndarray:
    key = (root, name, tuple(channels))
    if key not in _refs:
        _refs[key] = reference(os.path.join(root, name), list(channels))
    return _refs[key]


def expected(ref: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """numpy's nanmin/nanmax of every bin (NaN for a bin without samples)."""
    out = np.empty((2, ref.shape[0], len(edges) - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN bins
        for k in range(len(edges) - 1):
            part = ref[:, edges[k]:edges[k + 1]]
            out[0, :, k] = np.nanmin(part, axis=1)
            out[1, :, k] = np.nanmax(part, axis=1)
    return out


def check(svc, ref: np.ndarray, start: int, stop: int, n_bins: int) -> np.ndarray:
    env, edges = svc.get_envelope(start, stop, n_bins)
    n_bins = min(n_bins, min(stop, ref.shape[1]) - start)
    assert env.shape == (2, ref.shape[0], n_bins) and env.dtype == np.float64
    assert edges.shape == (n_bins + 1,) and edges[0] == start
    assert edges[-1] == min(stop, ref.shape[1]) and np.all(np.diff(edges) > 0)
    np.testing.assert_array_equal(env, expected(ref, edges))
    return edges


def reads(server) -> int:
    """Sample reads the reader processes did so far."""
    return dict(server.stats())["reads"]


# ---- files ---------------------------------------------------------------------------

@pytest.mark.parametrize("precision", range(5))
def test_envelopes_equal_numpy_at_every_resolution_and_precision(env_conn, env_root,
                                                                 precision):
    name = f"prec{precision}.mefd"
    svc = env_conn.root.open_file(name)
    ref = ref_of(env_root, name, ("a", "b", "c"))
    n = ref.shape[1]
    assert dict(svc.get_info())["n_samples"] == n
    for n_bins in (1, 3, 7, 60):                 # >= 2 MEF blocks a bin: block tables
        check(svc, ref, 0, n, n_bins)
    for n_bins in (12, 15, 100, 250, 299):       # sub-block bins: tiles of 1024, of 64
        check(svc, ref, 0, n, n_bins)
    check(svc, ref, 0, n, 5000)                  # under two tiles a bin: samples
    check(svc, ref, 0, n, 10**9)                 # more bins than samples: one a sample
    # windows that start and end inside blocks, across the gap and the new segment
    for start, stop, n_bins in ((1234, n - 777, 4), (10_000, 13_500, 2), (9000, 30_000, 90),
                                (25_000, 27_000, 40), (5, 300, 3), (n - 5, n, 5)):
        check(svc, ref, start, stop, n_bins)


def test_a_block_resolution_overview_reads_no_sample(env_server, env_conn, env_root):
    """a and c share their block layout: bins of whole blocks come from the block tables."""
    svc = env_conn.root.open_file("prec2.mefd")
    svc.set_active_channels(["a", "c"])
    ref = ref_of(env_root, "prec2.mefd", ("a", "c"))
    before = reads(env_server)
    check(svc, ref, 0, ref.shape[1], 6)
    assert reads(env_server) == before             # nothing decoded


def test_finer_bins_come_from_tiles_once_decoded(env_server, env_conn, env_root):
    svc = env_conn.root.open_file("prec3.mefd")
    ref = ref_of(env_root, "prec3.mefd", ("a", "b", "c"))
    env_server.cache.discard_where(lambda key: True)
    check(svc, ref, 0, ref.shape[1], 200)          # cold: decodes, fills the tiles
    env_server.cache.discard_where(lambda key: True)
    before = reads(env_server)
    edges = check(svc, ref, 0, ref.shape[1], 200)  # warm: from tiles, nothing decoded
    assert reads(env_server) == before
    assert np.all(edges[1:-1] % 64 == 0)            # edges on tile boundaries


def test_a_background_build_fills_the_tiles_so_finer_bins_decode_nothing(
        env_server, env_conn, env_root):
    svc = env_conn.root.open_file("prec3.mefd")
    ref = ref_of(env_root, "prec3.mefd", ("a", "b", "c"))
    n = ref.shape[1]
    assert svc.build_envelope() == n
    recording = env_server.registry.acquire("prec3.mefd")
    try:
        pyramid = pyramid_of(recording)
        group = recording.groups[256.0]
        last = (n - 1) // pyramid.geometry(group).block
        wait_until(lambda: all(pyramid.tiles(name, group, 0, last, level)[2].all()
                               for name in "abc" for level in range(pyramid.levels)),
                   timeout=60)
        env_server.cache.discard_where(lambda key: True)
        before = reads(env_server)
        for n_bins in (20, 100, 250):            # tiles of 1024, 256 and 64 samples
            check(svc, ref, 0, n, n_bins)
        assert reads(env_server) == before
    finally:
        env_server.registry.release(recording)
    with pytest.raises(software.InvalidRangeError, match="start"):
        svc.build_envelope(n, n + 10)


def test_reads_of_any_client_fill_the_tiles(env_server, env_conn, env_root):
    """Once a session has a pyramid, every read that lands fills its tiles."""
    svc = env_conn.root.open_file("prec0.mefd")
    ref = ref_of(env_root, "prec0.mefd", ("a", "b", "c"))
    n = ref.shape[1]
    env_server.cache.discard_where(lambda key: True)
    svc.get_envelope(0, n, 1)                     # makes the pyramid
    svc.get_stream_segment(n, 0)                  # a client reads everything
    env_server.cache.discard_where(lambda key: True)
    before = reads(env_server)
    check(svc, ref, 0, n, 250)
    assert reads(env_server) == before


def test_several_rates_and_short_blocks(env_conn, env_root):
    svc = env_conn.root.open_file("rates.mefd")
    for names in (("s1", "s2"), ("f2", "f1")):
        svc.set_active_channels(list(names))
        ref = ref_of(env_root, "rates.mefd", names)
        for n_bins in (2, 9, 100, 1000):
            check(svc, ref, 0, ref.shape[1], n_bins)
        check(svc, ref, 3333, ref.shape[1] - 10, 13)
    long = LongSession(env_root, n_blocks=3 * 600, n_channels=3, fs=8.0, segments=2,
                       gap_every=97)
    svc = env_conn.root.open_file(long.name)
    names = ("ch000", "ch001", "ch002")
    ref = ref_of(env_root, long.name, names)
    for n_bins in (1, 17, 150, 300, 1000, 4000):   # groups of 8-sample blocks, tiles, samples
        check(svc, ref, 0, ref.shape[1], n_bins)
    check(svc, ref, 771, ref.shape[1] - 93, 41)


def test_the_time_variant_places_the_window_as_get_time_segment(env_conn, env_root):
    svc = env_conn.root.open_file("prec1.mefd")
    ref = ref_of(env_root, "prec1.mefd", ("a", "b", "c"))
    t0, t1 = START + 12_345_678, START + 98_000_000
    env, edges_uutc = svc.get_time_envelope(t0, t1, 20)
    seg = svc.get_time_segment(t0, t1)
    first = round((t0 - START) * 256 / 1e6)
    assert edges_uutc[0] == START + round(first * 1e6 / 256) and len(edges_uutc) == 21
    grid = np.round((edges_uutc - START) * 256 / 1e6).astype(np.int64)
    np.testing.assert_array_equal(env, expected(ref, grid))
    np.testing.assert_array_equal(env, expected(seg, grid - first))
    with pytest.raises(software.InvalidRangeError, match="holds no sample"):
        svc.get_time_envelope(START - 10**9, START - 10**8, 5)


def test_dirty_groups_and_unusable_extremes_are_decoded(env_server, env_conn, env_root):
    """Groups marked dirty (blocks overwritten, RED NaN/infinity markers, a table out of
    order) are answered from samples; wrong extremes in them would show otherwise."""
    svc = env_conn.root.open_file("prec4.mefd")
    ref = ref_of(env_root, "prec4.mefd", ("a", "b", "c"))
    recording = env_server.registry.acquire("prec4.mefd")
    try:
        pyramid = pyramid_of(recording)
        real = pyramid.blocks(30)
        poisoned = {}
        for name, env in real.items():
            low, high = env.low.copy(), env.high.copy()
            low[::2] = DIRTY                 # wrong extremes: would be seen if used
            high[::2] = 10**9
            poisoned[name] = BlockEnvelope(env.start, env.stop, low, high, env.group_blocks)
        poisoned["c"] = BlockEnvelope(np.array([0]), np.array([ref.shape[1]]),
                                      np.array([DIRTY], np.int32),
                                      np.array([2**31 - 1], np.int32))   # out of order
        done: Future = Future()
        done.set_result(poisoned)
        pyramid._blocks, pyramid._stop_max = done, {}
        for n_bins in (1, 4, 7):
            check(svc, ref, 0, ref.shape[1], n_bins)
        check(svc, ref, 3000, 30_000, 5)
    finally:
        pyramid._blocks, pyramid._stop_max = None, {}
        env_server.registry.release(recording)


def test_bad_envelope_arguments_are_refused_naming_them(env_conn):
    svc = env_conn.root.open_file("prec0.mefd")
    n = dict(svc.get_info())["n_samples"]
    for args, kind, word in (((10, 5, 3), software.InvalidRangeError, "stop"),
                             ((n, n + 5, 3), software.InvalidRangeError, "start"),
                             ((0, 10, 0), software.InvalidRangeError, "n_bins"),
                             ((0.5, 10, 3), software.InvalidTypeError, "start"),
                             ((0, 10, "3"), software.InvalidTypeError, "n_bins")):
        with pytest.raises(kind, match=word):
            svc.proxy.get_envelope(*args)
    assert svc.get_envelope(0, 10, 3)[0].shape == (2, 3, 3)


def test_a_negative_conversion_factor_swaps_the_stored_extremes():
    from software.cache.envelope import _Bins, _from_blocks
    env = BlockEnvelope(np.array([0, 10]), np.array([10, 20]), np.array([-5, 1], np.int32),
                        np.array([7, 3], np.int32))
    bins = _Bins(1, 2)
    assert _from_blocks(bins, [0], [env], env.stop, [-0.5], np.array([0, 10, 20])) == []
    np.testing.assert_array_equal(bins.result()[:, 0], [[-3.5, -1.5], [2.5, -0.5]])


def test_blocks_per_group_keeps_the_budget():
    assert blocks_per_group(1000, 2000) == 1
    assert blocks_per_group(2_070_000, 1_000_000) == 4
    assert blocks_per_group(10**12, 1) == 16384


def test_plain_clients_get_the_wire_form(env_server, env_root):
    import rpyc
    conn = rpyc.connect("127.0.0.1", env_server.port)
    try:
        svc = conn.root.open_file("prec0.mefd")
        env_w, edges_w = svc.get_envelope(0, 25_600, 4)
        env, edges = decode_segment(env_w), decode_segment(edges_w)
        assert env.shape == (2, 3, 4) and edges.dtype == np.int64
        ref = ref_of(env_root, "prec0.mefd", ("a", "b", "c"))
        np.testing.assert_array_equal(env, expected(ref, edges))
    finally:
        conn.close()


# ---- live streams ----------------------------------------------------------------------

def test_live_envelopes_equal_the_samples_pushed():
    stream = LiveStream("rig", ["x", "y"], 1000.0, history_seconds=4, start_uutc=10**15)
    rng = np.random.default_rng(2)
    pushed = rng.normal(0, 5, (2, 9000))
    pushed[1, 6000:6500] = np.nan
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv, \
            get_connection(srv.port, host="127.0.0.1", timeout=10) as conn:
        svc = conn.root
        assert svc.get_envelope(0, 100, 5) is False        # nothing pushed yet
        stream.append_stream_segment_data(pushed[:, :2500])
        env, edges = svc.get_envelope(0, 10**6, 7)         # cut at the head
        assert edges[-1] == 2500
        np.testing.assert_array_equal(env, expected(pushed[:, :2500], edges))
        stream.append_stream_segment_data(pushed[:, 2500:])
        env, edges = svc.get_envelope(5500, 9000, 50)
        np.testing.assert_array_equal(env, expected(pushed[:, 5500:9000], edges - 5500))
        with pytest.raises(software.DroppedSamplesError):
            svc.get_envelope(0, 3000, 5)                   # no longer held


def test_live_int16_envelopes():
    stream = LiveStream("rig16", ["x"], 500.0, dtype="int16", history_seconds=10,
                        start_uutc=10**15)
    data = np.random.default_rng(4).integers(-3000, 3000, (1, 4000)).astype(np.int16)
    stream.append_stream_segment_data(data)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv, \
            get_connection(srv.port, host="127.0.0.1", timeout=10) as conn:
        env, edges = conn.root.get_envelope(0, 4000, 9)
        np.testing.assert_array_equal(env, expected(data.astype(np.float64), edges))
