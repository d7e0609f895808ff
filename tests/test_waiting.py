"""Waiting requests that no client can leak or flood (issue 18, section 2), on real servers:
withdrawn requests never call back, each connection has its own bound, and the counts
in get_stats() follow."""
from __future__ import annotations

import contextlib
import threading

from concurrent.futures import Future

import numpy as np
import pytest
import rpyc

import settings
from software import MefStreamServer, decode_segment, errors, get_connection
from software.live.source import LiveStream
from software.mef3.metadata import ChannelInfo, SessionInfo
from software.stream.options import ServiceOptions
from software.stream.service import StreamService
from software.stream.source import Source
from software.stream.waiting import WaitingBudget
from tests.test_live import ramp
from tests.util import START, wait_until

FS = 1000.0


@contextlib.contextmanager
def served(stream, **kwargs):
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream, **kwargs) as srv:
        yield srv


@contextlib.contextmanager
def plain(port: int):
    """A CREPE-style ``rpyc.connect`` client, its callbacks served by a background thread."""
    conn = rpyc.connect("127.0.0.1", port, config=settings.RPYC_CONFIG)
    serving = rpyc.BgServingThread(conn, serve_interval=0.1, sleep_interval=0.0)
    try:
        yield conn
    finally:
        serving.stop()
        conn.close()


def stat(srv, name: str) -> int:
    return dict(srv.stats())[name]


def test_withdrawn_requests_never_call_back_so_40_timeouts_then_a_push_answer_once():
    """The Recorder's loop: a wait that times out withdraws its request; 40 of them at one
    position, then one that is answered: one callback, not 41."""
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=5)
    with served(stream) as srv, plain(srv.port) as conn:
        root = conn.root
        got: list = []
        arrived = threading.Event()
        for k in range(40):
            def callback(value, k=k):
                got.append(k)
            assert root.get_stream_segment(10, 0, callback) is False
            assert stat(srv, "waiting_requests") == 1
            assert root.withdraw(callback) == 1          # the timed-out wait gives it back
            assert root.withdraw(callback) == 0          # nothing left under that callback
        assert stat(srv, "waiting_requests") == 0 and stream.waiting == 0

        def last(value):
            got.append(decode_segment(value).tolist())
            arrived.set()

        assert root.get_stream_segment(10, 0, last) is False
        stream.append_stream_segment_data(ramp(2, 0, 10))
        assert arrived.wait(10)
        # a withdrawn request answered by mistake would have been sent before this one
        assert got == [ramp(2, 0, 10).tolist()]
        wait_until(lambda: stat(srv, "waiting_requests") == 0)
        with pytest.raises(errors.InvalidTypeError):
            root.withdraw(3)


def test_withdraw_counts_every_request_of_that_callback_and_only_those():
    stream = LiveStream("rig", ["a"], FS, history_seconds=5)
    with served(stream) as srv, plain(srv.port) as conn:
        root = conn.root
        kept: list = []
        arrived = threading.Event()

        def dropped(value):
            kept.append("withdrawn one called back")

        def wanted(value):
            kept.append(decode_segment(value).tolist())
            arrived.set()

        for k in range(5):
            assert root.get_stream_segment(2, 10 * k, dropped) is False
        assert root.get_stream_segment(2, 48, wanted) is False
        assert root.withdraw(dropped) == 5 and stat(srv, "waiting_requests") == 1
        stream.append_stream_segment_data(ramp(1, 0, 50))
        assert arrived.wait(10)
        assert kept == [ramp(1, 48, 2).tolist()]


def test_one_client_filling_its_bound_leaves_the_others_working():
    """A per-connection bound, not one global count that one client can fill (mutant: every
    request counted under one key; then the other client is refused)."""
    stream = LiveStream("rig", ["a"], FS, history_seconds=5)
    with served(stream, max_waiting=50) as srv:
        greedy = get_connection(srv.port, host="127.0.0.1")
        try:
            svc = greedy.root.proxy

            def ignore(value):
                pass

            for k in range(50):
                assert svc.get_stream_segment(1, 100 + k, ignore) is False
            with pytest.raises(errors.WaitingLimitError) as caught:
                svc.get_stream_segment(1, 200, ignore)
            text = str(caught.value)
            assert "max_waiting=50" in text and "--max-waiting" in text and "withdraw" in text
            assert stat(srv, "waiting_requests") == 50 and stream.waiting == 50
            with plain(srv.port) as other:              # another client is served
                got: list = []
                arrived = threading.Event()
                assert other.root.get_stream_segment(
                    3, 10, lambda v: (got.append(decode_segment(v).tolist()),
                                      arrived.set())) is False
                stream.append_stream_segment_data(ramp(1, 0, 20))
                assert arrived.wait(10) and got == [ramp(1, 10, 3).tolist()]
            assert svc.withdraw(ignore) == 50            # withdrawing frees the bound
            assert svc.get_stream_segment(1, 200, ignore) is False
        finally:
            greedy.close()
        wait_until(lambda: stat(srv, "waiting_requests") == 0)   # a disconnect gives back
        assert stream.waiting == 0


def test_the_bound_counts_requests_waiting_for_a_read_too():
    """A request of a file waits for the readers: it counts until its callback went out,
    and a withdrawn one never calls back (its read goes on, for the cache)."""
    source = ToySource(100)
    options = ServiceOptions(waiting=WaitingBudget(2))
    svc = StreamService(source, options, "toy")
    got: list = []
    arrived = threading.Event()

    def callback(value):
        got.append(decode_segment(value).tolist())
        arrived.set()

    assert svc.exposed_get_stream_segment(10, 0, callback) is False
    assert svc.exposed_get_stream_segment(10, 10, got.append) is False
    with pytest.raises(errors.WaitingLimitError):
        svc.exposed_get_stream_segment(10, 20, got.append)
    assert options.waiting.waiting() == 2 and options.counters.get("waiting_requests") == 2
    assert svc.exposed_withdraw(got.append) == 1
    source.finish()                                   # the reads complete
    assert arrived.wait(10)
    wait_until(lambda: options.counters.get("waiting_requests") == 0)
    assert got == [source.data[:, 0:10].tolist()]     # the withdrawn one never called back
    assert options.waiting.waiting() == 0
    svc.close()


class ToySource(Source):
    """A fixed (not growing) source whose reads complete when the test says so."""

    def __init__(self, n: int) -> None:
        self.data = np.arange(2 * n, dtype=np.float64).reshape(2, n)
        self.reads: list = []

    @property
    def info(self) -> SessionInfo:
        n = self.data.shape[1]
        return SessionInfo(path="toy", channels=tuple(
            ChannelInfo(name, FS, START, START + int(n * 1e6 / FS), "uV", 1.0, n)
            for name in ("a", "b")))

    def group(self, fs):
        return self.info.group(fs)

    def gather(self, names, group, start, stop):
        fut: Future = Future()
        self.reads.append((fut, start, stop))
        return fut

    def finish(self) -> None:
        for fut, start, stop in self.reads:
            fut.set_result(_Rows(self.data[:, start:stop]))


class _Rows:
    def __init__(self, values) -> None:
        self.values, self.shape = values, values.shape

    def assemble(self, out=None):
        return self.values.copy()


def test_max_waiting_is_checked_like_every_option():
    with pytest.raises(errors.InvalidArgumentError) as caught:
        MefStreamServer(port=0, max_waiting=0)
    assert "max_waiting=0" in str(caught.value)
