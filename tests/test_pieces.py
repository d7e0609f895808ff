"""Answers over the per-request limit (issue 15): get_connection clients get them whole,
put together from pieces, exactly; plain clients are refused with the largest range."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import software
from software import MefStreamServer, get_connection
from tests.util import FS, START, reference

SMALL_MB = 0.05          # 52,428 bytes: 6 channels x 1092 float64 samples a piece
CHANNELS = ("Cz", "Fp1", "Fp2", "O1", "O2", "index")


@pytest.fixture(scope="module")
def small_server(data_root):
    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=16,
                         max_request_mb=SMALL_MB) as srv:
        yield srv


@pytest.fixture
def small(small_server):
    conn = get_connection(small_server.port, host="127.0.0.1", timeout=10)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def ref(main_path):
    return reference(main_path, CHANNELS)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_a_request_over_the_limit_comes_whole_and_exact(small, ref):
    svc = small.root.open_file("main.mefd")
    n = ref.shape[1]
    assert 6 * n * 8 > SMALL_MB * 2**20
    whole = svc.get_stream_segment(n + 10**6, 0)          # cut to the file, as one call is
    assert same(whole, ref) and whole.flags.writeable
    part = svc.get_stream_segment(20_000, 3_333)
    assert same(part, ref[:, 3_333:23_333])
    got = []
    assert same(svc.get_stream_segment(5000, 100, got.append), ref[:, 100:5100])
    assert got == []                                      # answered at once
    assert svc.get_stream_segment(5000, n) is False       # past the end, as one call


def test_rows_and_time_windows_in_pieces(small, ref):
    svc = small.root.open_file("main.mefd")
    n = ref.shape[1]
    assert same(svc.get_row_segment("index", n, 0), ref[5])
    assert same(svc.get_row_segment(1, 9000, 777), ref[1, 777:9777])
    t0 = START - 10 * 1_000_000                          # 10 s before the recording
    t1 = START + int(n / FS * 1e6) + 5 * 1_000_000        # 5 s after it
    window = svc.get_time_segment(t0, t1)
    want = np.full((6, 2560 + n + 1280), np.nan)
    want[:, 2560:2560 + n] = ref
    assert same(window, want)


def test_plain_clients_are_refused_with_the_largest_range(small):
    svc = small.root.open_file("main.mefd")
    with pytest.raises(software.InvalidRangeError) as caught:
        svc.proxy.get_stream_segment(5000, 0)
    text = str(caught.value.args[0])
    assert "at most 1092 samples" in text and "0.05 MiB" in text
    svc.set_active_channels(["Fp1"])
    with pytest.raises(software.InvalidRangeError, match="at most 6553 samples"):
        svc.proxy.get_stream_segment(7000, 0)


def test_envelopes_with_more_bins_than_one_answer_holds(small, ref):
    svc = small.root.open_file("main.mefd")
    n = ref.shape[1]
    with pytest.raises(software.InvalidRangeError, match="at most 504 bins"):
        svc.proxy.get_envelope(0, n, 3000)
    env, edges = svc.get_envelope(0, n, 3000)
    assert env.shape == (2, 6, 3000) and len(edges) == 3001
    assert edges[0] == 0 and edges[-1] == n and np.all(np.diff(edges) > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k in range(3000):
            part = ref[:, edges[k]:edges[k + 1]]
            np.testing.assert_array_equal(env[0, :, k], np.nanmin(part, axis=1))
            np.testing.assert_array_equal(env[1, :, k], np.nanmax(part, axis=1))
    env_t, edges_t = svc.get_time_envelope(START, START + 100 * 1_000_000, 1000)
    assert env_t.shape == (2, 6, 1000) and edges_t[0] == START


def test_an_answer_beyond_the_client_memory_is_refused_naming_the_piece(small):
    svc = small.root.open_file("main.mefd")
    with pytest.raises(software.InvalidRangeError) as caught:
        svc.get_time_segment(START, START + 10**15)        # 31 years of NaN padding
    text = str(caught.value.args[0])
    assert "at most 1092 samples" in text and "StreamSegmentIterator" in text
