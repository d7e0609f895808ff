"""The view over its Source seam: segment sizes cut to the request limit, bounded
arguments, the exposed push side of a file, and a view over a source that is not a file."""
from __future__ import annotations

import itertools
import threading
from concurrent.futures import Future

import numpy as np
import pytest

import software
from software import MefStreamServer, decode_segment, get_connection
from software.mef3.metadata import ChannelInfo, SessionInfo, grid_length
from software.stream.options import ServiceOptions
from software.stream.service import StreamService
from software.stream.source import Source
from tests.util import START

SMALL_MB = 0.05      # 52,428 bytes: 6 channels x 1092 float64 samples


@pytest.fixture(scope="module")
def small_server(data_root):
    """A server whose largest answer is far below its default 60 s segment."""
    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=16,
                         max_request_mb=SMALL_MB) as srv:
        yield srv


@pytest.fixture
def small_conn(small_server):
    connection = get_connection(small_server.port, host="127.0.0.1")
    yield connection
    connection.close()


def test_default_segment_is_cut_to_what_one_answer_may_hold(small_conn):
    svc = small_conn.root.open_file("main.mefd")
    limit = int(SMALL_MB * 2**20)
    info = dict(svc.get_info())
    n = len(info["channels"])
    assert info["segment_samples"] == limit // (8 * n) < 60 * 256   # cut, not 60 s
    assert info["segment_seconds"] == info["segment_samples"] / 256.0
    seg = decode_segment(svc.get_segment(0))
    assert seg.shape == (n, info["segment_samples"]) and seg.nbytes <= limit
    last = info["n_segments"] - 1
    assert decode_segment(svc.get_segment(last)).shape[1] >= 1
    # fewer channels: the 60 s asked for fits better, and the size follows
    svc.set_active_channels(("Fp1",))
    one = dict(svc.get_info())
    assert one["segment_samples"] == min(60 * 256, limit // 8)
    assert decode_segment(svc.get_segment(0)).shape == (1, one["segment_samples"])
    # back to every channel: cut again
    svc.set_active_channels(None)
    assert dict(svc.get_info())["segment_samples"] == info["segment_samples"]


def test_a_segment_size_that_does_not_fit_is_refused_naming_the_largest(small_conn):
    svc = small_conn.root.open_file("main.mefd")
    with pytest.raises(software.InvalidRangeError) as caught:
        svc.set_segment_size(60)
    limit = int(SMALL_MB * 2**20) // (8 * 6)
    assert f"({limit} samples)" in str(caught.value)
    assert svc.set_segment_size(limit / 256.0) >= 1      # the value named is accepted
    assert decode_segment(svc.get_segment(0)).shape == (6, limit)


def test_an_endless_channel_list_is_refused_and_the_connection_goes_on(conn):
    svc = conn.root.open_file("main.mefd")
    done = threading.Event()
    outcome: list = []

    def hostile() -> None:
        try:
            svc.set_active_channels(itertools.repeat("Fp1"))   # a local iterator: a proxy
        except Exception as exc:  # noqa: BLE001 - the outcome is checked below
            outcome.append(exc)
        done.set()

    threading.Thread(target=hostile, daemon=True).start()
    assert done.wait(20), "the server kept pulling an endless iterator"
    assert isinstance(outcome[0], software.InvalidArgumentError)
    assert "more than 6 names" in str(outcome[0])
    assert svc.set_active_channels(["Fp1", "Cz"]) == ("Fp1", "Cz")


def test_a_channel_list_that_trickles_in_is_refused(conn):
    svc = conn.root.open_file("main.mefd")
    before = dict(svc.get_info())["channels"]
    never = threading.Event()

    def slow():
        for name in ("Fp1", "Fp2", "Cz", "O1", "O2"):
            never.wait(1.5)          # a hostile client: 1.5 s per name
            yield name

    with pytest.raises(software.InvalidArgumentError) as caught:
        svc.set_active_channels(slow())
    assert "took more than 5 s" in str(caught.value)
    assert dict(svc.get_info())["channels"] == before       # the view is unchanged


def test_a_file_refuses_pushes_over_rpyc_with_a_clear_error(conn):
    svc = conn.root.open_file("main.mefd")
    for push in (lambda: svc.append_stream_segment_data((1.0,) * 6),
                 lambda: svc.append_stream_row_data(0, (1.0, 2.0))):
        with pytest.raises(software.StreamError) as caught:
            push()
        assert "read-only" in str(caught.value) and "--live" in str(caught.value)
    assert decode_segment(svc.get_stream_segment(4, 0)).shape == (6, 4)


class ToySource(Source):
    """A source that is not a file: two channels of a ramp, growing on demand."""

    def __init__(self, n: int, growing: bool = False) -> None:
        self.growing = growing
        self.data = np.arange(2 * 10_000, dtype=np.float64).reshape(2, -1)
        self.n = n
        self.waiting: list[tuple[Future, int, int]] = []

    @property
    def info(self) -> SessionInfo:
        end = START + int(self.n * 1e6 / 100)
        return SessionInfo(path="toy", channels=tuple(
            ChannelInfo(name, 100.0, START, end, "uV", 1.0, self.n) for name in ("a", "b")))

    def group(self, fs):
        return self.info.group(fs)

    def gather(self, names, group, start, stop):
        fut: Future = Future()
        if stop <= self.n:
            fut.set_result(_Rows(self.data, names, start, stop))
        else:
            self.waiting.append((fut, start, stop))
        return fut

    def grow(self, n: int) -> None:
        self.n = n
        for fut, start, stop in self.waiting:
            if stop <= n and not fut.done():
                fut.set_result(_Rows(self.data, ("a", "b"), start, stop))


class _Rows:
    def __init__(self, data, names, start, stop):
        rows = [("a", "b").index(n) for n in names]
        self.values = data[rows, start:stop]
        self.shape = self.values.shape

    def assemble(self, out=None):
        return self.values.copy()


def test_a_view_serves_any_source_through_the_seam():
    toy = ToySource(1000)
    svc = StreamService(toy, ServiceOptions(segment_seconds=3.0), "toy")
    info = dict(svc.exposed_get_info())
    assert info["n_samples"] == 1000 == grid_length(START, START + 10**7, 100.0)
    assert info["segment_samples"] == 300 and info["growing"] is False
    assert decode_segment(svc.exposed_get_segment(1)).tolist() == toy.data[:, 300:600].tolist()
    row = decode_segment(svc.exposed_get_row_segment("b", 5, 995))
    assert row.tolist() == toy.data[1, 995:1000].tolist()
    assert svc.exposed_get_stream_segment(10, 1000) is False      # past the end of a fixed source


def test_a_growing_source_is_not_ready_then_calls_back_once():
    toy = ToySource(100, growing=True)
    svc = StreamService(toy, ServiceOptions(segment_seconds=1.0), "toy")
    assert svc.exposed_get_stream_segment(50, 80) is False         # no callback: nothing registered
    assert toy.waiting == []
    got: list = []
    arrived = threading.Event()
    assert svc.exposed_get_stream_segment(50, 80, lambda v: (got.append(v), arrived.set())) is False
    assert len(toy.waiting) == 1
    toy.grow(130)
    assert arrived.wait(5)
    assert decode_segment(got[0]).tolist() == toy.data[:, 80:130].tolist()
    # a view closed with a request pending withdraws it
    assert svc.exposed_get_stream_segment(10, 200, got.append) is False
    svc.close()
    assert toy.waiting[-1][0].cancelled()
    toy.grow(300)
    assert len(got) == 1
