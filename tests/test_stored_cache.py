"""The cache keeps samples as MEF3 stores them (int32 + factor + NaN marker), and every
answer path stays bit-equal to ``MefReader`` (issue 15).

Sessions of precision 0 to 4 with NaN gaps (discontinuities), a stored MEF3 NaN inside a
block, and a second segment, served by a real server with real reader processes; answers
through shared memory and the socket, whole segments, rows, time windows reaching outside
the recording (padded) and callbacks, compared bit for bit (``view(uint64)``) with the
whole-recording ``MefReader`` read.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from software import MefStreamServer, decode_segment, get_connection
from software.mef3.samples import STORED_NAN
from software.mef3.writer import write_session
from tests.util import FS, START, reference

N = int(90 * FS)
GAP = (int(20.5 * FS) + 3, int(33 * FS) + 11)        # NaN run -> a discontinuity
PRECISIONS = (0, 1, 2, 3, 4)
NAMES = ("a", "b", "c")


def _signals(precision: int) -> dict:
    rng = np.random.default_rng(precision)
    scale = 10.0 ** precision
    signals = {}
    for k, name in enumerate(NAMES):
        ints = rng.integers(-30000, 30000, N).astype(np.float64)
        data = ints / scale
        data[GAP[0]:GAP[1]] = np.nan
        signals[name] = data
    # a sample stored as MEF3's NaN (the smallest int32) inside a block: pymef gives NaN
    signals["b"][5000] = STORED_NAN / scale
    return signals


@pytest.fixture(scope="module")
def stored_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("stored")
    for p in PRECISIONS:
        write_session(root / f"p{p}.mefd", _signals(p), FS, START, precision=p,
                      new_segment_at=[(int(60 * FS), START + 62 * 1_000_000)])
    return str(root)


@pytest.fixture(scope="module")
def stored_server(stored_root):
    srv = MefStreamServer(host="127.0.0.1", port=0, data_root=stored_root, workers=2,
                          prefetch=1, cache_mb=64)
    srv.start()
    yield srv
    srv.close()


def bits_equal(got: np.ndarray, want: np.ndarray) -> bool:
    """Same shape and the same float64 bits (NaN included)."""
    got, want = np.ascontiguousarray(got, np.float64), np.ascontiguousarray(want)
    return got.shape == want.shape and np.array_equal(got.view(np.uint64),
                                                      want.view(np.uint64))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shared_memory", [True, False])
def test_int32_cache_answers_bit_equal_to_mefreader(stored_root, stored_server, precision,
                                                    shared_memory):
    """Kills: scale_into without its NaN step (a stored NaN or a gap comes back as
    -2**31 * factor), to_stored without its NaN step, a float32 factor, a cache that
    keeps float64 (the int32 check below)."""
    path = f"{stored_root}/p{precision}.mefd"
    ref = reference(path, NAMES)
    if precision == 2:   # the marker inside a block is NaN for MefReader too
        assert np.isnan(ref[1, 5000]) and np.isnan(ref[0, GAP[0] + 5])
    conn = get_connection(stored_server.port, host="127.0.0.1", timeout=10,
                          shared_memory=shared_memory)
    try:
        svc = conn.root.open_file(f"p{precision}.mefd")
        svc.set_active_channels(list(NAMES))
        # through a callback (a cold read that is not ready at once)
        done, box = threading.Event(), []
        a = int(75 * FS) + 17

        def callback(value):
            box.append(decode_segment(value))
            done.set()

        value = svc.get_stream_segment(1000, a, callback)
        if value is False:     # not ready at once: it comes through the callback
            assert done.wait(30)
        else:
            box.append(decode_segment(value))
        assert bits_equal(box[0], ref[:, a:a + 1000]), precision
        n = ref.shape[1]
        windows = [(0, 2560), (4990, 5030), (GAP[0] - 300, GAP[1] + 300),
                   (int(59 * FS), int(64 * FS)), (n - 700, n), (100, n - 100)]
        for a, b in windows:
            for _ in range(2):     # cold (read by the readers), then from the cache
                got = decode_segment(svc.get_stream_segment(b - a, a))
                assert bits_equal(got, ref[:, a:b]), (precision, a, b)
        got = decode_segment(svc.get_row_segment(1, 4000, 3000))
        assert bits_equal(got, ref[1, 3000:7000]), precision
        # a time window that starts before the recording: padded with NaN
        got = decode_segment(svc.get_time_segment(START - 1_000_000, START + 2_000_000))
        want = np.concatenate([np.full((3, int(FS)), np.nan), ref[:, :2 * int(FS)]], axis=1)
        assert bits_equal(got, want), precision
        kinds = {v.dtype for v in list(stored_server.cache._data.values())}
        assert kinds == {np.dtype(np.int32)}
    finally:
        conn.close()


def test_the_cache_holds_four_bytes_per_sample(stored_server):
    """The same budget holds twice the float64 samples. Kills: float64 blocks."""
    cache = stored_server.cache
    with get_connection(stored_server.port, host="127.0.0.1", timeout=10) as conn:
        svc = conn.root.open_file("p3.mefd")
        svc.set_active_channels(list(NAMES))
        decode_segment(svc.get_stream_segment(2560, 0))
        values = list(cache._data.values())
        assert values and cache.nbytes == sum(v.size for v in values) * 4


@pytest.mark.parametrize("landing_mb", [0, 64])
def test_stored_reads_through_the_pipe_and_the_landing_area(stored_root, landing_mb):
    """``ReaderPool.read(stored=True)``: int32 as stored, whichever way the samples cross;
    times the factor it is MefReader's read. Kills: a stored task that returns float64, a
    landing view of the wrong dtype."""
    from software.mef3.samples import scale_into
    from software.readers.pool import ReaderPool
    path = f"{stored_root}/p3.mefd"
    ref = reference(path, NAMES)
    with ReaderPool(workers=1, landing_mb=landing_mb) as pool:
        got = pool.read(path, None, NAMES, GAP[0] - 100, GAP[1] + 100,
                        stored=True).result(timeout=60)
        assert got.dtype == np.int32
        assert (pool.reads_landed, pool.reads_piped) == ((1, 0) if landing_mb else (0, 1))
    factors = np.full((3, 1), 1e-3)
    assert bits_equal(scale_into(got, factors, np.empty(got.shape)),
                      ref[:, GAP[0] - 100:GAP[1] + 100])
