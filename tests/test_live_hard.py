"""Live streams in the states that break them, built on purpose on a real server (issue 18,
section 5): reads across the ring's wrap point after many ring lengths, a request whose
rows lag, and a short request registered behind a long one. Each is compared value for
value. Mutants killed: the wrap-around copy off by one; waiters answered when only some
rows are pushed; waiters kept in arrival order instead of by stop (in a view, and
between views)."""
from __future__ import annotations

import threading

import pytest

from software import decode_segment, errors, get_connection
from software.live.source import LiveStream
from software.stream.options import ServiceOptions
from software.stream.service import StreamService
from tests.test_live import ramp
from tests.test_waiting import plain, served

FS = 1000.0
#: Seconds a callback that must come may take on a loaded two-core machine.
BOUND = 20.0


class Inbox:
    """Callbacks received, by name, each waking whoever waits for it."""

    def __init__(self) -> None:
        self.got: dict[str, list] = {}
        self._events: dict[str, threading.Event] = {}

    def callback(self, name: str):
        self.got[name] = []
        event = self._events[name] = threading.Event()

        def receive(value) -> None:
            self.got[name].append(decode_segment(value).tolist())
            event.set()

        return receive

    def wait(self, name: str) -> list:
        assert self._events[name].wait(BOUND), f"{name} never called back"
        return self.got[name]


def test_a_short_history_reads_exactly_across_its_wrap_point_after_many_ring_lengths():
    stream = LiveStream("rig", ["a", "b"], FS, history_seconds=0.02)   # 20 samples, ring 25
    ring = stream.ring
    assert (ring.history, ring.capacity) == (20, 25)
    with served(stream) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        try:
            svc = conn.root
            pushed, k = 0, 0
            while pushed < 10 * ring.capacity:
                n = (7, 3, 11, 1, 9)[k % 5]
                k += 1
                stream.append_stream_segment_data(ramp(2, pushed, n))
                pushed += n
                oldest = max(0, pushed - ring.history)
                for length in (1, 6, 13, 20):       # every window of these lengths held
                    for start in range(oldest, pushed - length + 1):
                        got = svc.get_stream_segment(length, start)
                        assert got.tolist() == ramp(2, start, length).tolist(), \
                            (pushed, start, length)
            # a whole-history request across the wrap, answered through its callback
            inbox = Inbox()
            for round_ in range(4):
                start = pushed + 3
                name = f"r{round_}"
                assert svc.proxy.get_stream_segment(20, start, inbox.callback(name)) is False
                while pushed < start + 20:     # up to its end, never past it before it comes
                    n = min(8, start + 20 - pushed)
                    stream.append_stream_segment_data(ramp(2, pushed, n))
                    pushed += n
                assert inbox.wait(name) == [ramp(2, start, 20).tolist()]
        finally:
            conn.close()


def test_a_request_waits_while_one_row_lags_then_calls_back_once_with_exact_data():
    stream = LiveStream("rig", ["a", "b", "c"], FS, history_seconds=1)
    data = ramp(3, 0, 20)
    with served(stream) as srv, plain(srv.port) as conn:
        root = conn.root
        inbox = Inbox()
        assert root.get_stream_segment(10, 0, inbox.callback("whole")) is False
        stream.append_stream_row_data("a", data[0, :10])
        stream.append_stream_row_data(1, data[1, :10])
        stream.append_stream_row_data("c", data[2, :5])           # row c lags at 5
        assert stream.head == 5
        # a second request, complete as soon as row c has one more sample: its callback
        # comes after any answer the first request got meanwhile (one delivery thread per
        # view, one serving thread here)
        assert root.get_stream_segment(1, 5, inbox.callback("probe")) is False
        stream.append_stream_row_data("c", data[2, 5:6])
        assert inbox.wait("probe") == [data[:, 5:6].tolist()]
        assert inbox.got["whole"] == [] and stream.waiting == 1   # still waiting for row c
        stream.append_stream_row_data("c", data[2, 6:10])          # row c catches up
        assert inbox.wait("whole") == [data[:, :10].tolist()]
        # exactly once: a later request's callback comes after any second one
        assert root.get_stream_segment(1, 10, inbox.callback("after")) is False
        for r in range(3):
            stream.append_stream_row_data(r, data[r, 10:11])
        assert inbox.wait("after") == [data[:, 10:11].tolist()]
        assert len(inbox.got["whole"]) == 1 and stream.waiting == 0


def test_a_short_request_behind_a_longer_one_is_answered_first():
    """Two requests of one view, the longer stop registered first; then the same between
    two connections."""
    stream = LiveStream("rig", ["a"], FS, history_seconds=1)
    with served(stream) as srv, plain(srv.port) as one, plain(srv.port) as two:
        inbox = Inbox()
        assert one.root.get_stream_segment(100, 0, inbox.callback("long")) is False
        assert one.root.get_stream_segment(10, 0, inbox.callback("short")) is False
        stream.append_stream_segment_data(ramp(1, 0, 10))
        assert inbox.wait("short") == [ramp(1, 0, 10).tolist()]
        assert inbox.got["long"] == [] and stream.waiting == 1
        stream.append_stream_segment_data(ramp(1, 10, 90))
        assert inbox.wait("long") == [ramp(1, 0, 100).tolist()]
        # between views: the longer one's connection registers first
        assert one.root.get_stream_segment(100, 100, inbox.callback("long2")) is False
        assert two.root.get_stream_segment(5, 100, inbox.callback("short2")) is False
        stream.append_stream_segment_data(ramp(1, 100, 5))
        assert inbox.wait("short2") == [ramp(1, 100, 5).tolist()]
        assert inbox.got["long2"] == [] and stream.waiting == 1
        stream.append_stream_segment_data(ramp(1, 105, 95))
        assert inbox.wait("long2") == [ramp(1, 100, 100).tolist()]


def test_answers_the_ring_overwrote_before_their_view_sent_them_are_reported_dropped():
    """The push never copies for the waiters (mutant: copying in the producer's push, as
    before): a view whose thread is busy copies later, and samples overwritten meanwhile
    come back as DroppedSamplesError, never as other samples."""
    stream = LiveStream("rig", ["a"], FS, history_seconds=0.02)     # 20 samples, ring 25
    options = ServiceOptions()
    svc = StreamService(stream.view(options.counters), options, "rig")
    inbox = Inbox()
    try:
        got: list = []
        arrived = threading.Event()
        assert svc.exposed_get_stream_segment(
            10, 0, lambda v: (got.append(v), arrived.set())) is False
        assert svc.exposed_get_stream_segment(10, 30, inbox.callback("later")) is False
        gate = threading.Event()
        svc._requests.deliverer.call_soon(lambda: gate.wait(BOUND))   # the view is busy
        stream.append_stream_segment_data(ramp(1, 0, 10))      # completes the first
        stream.append_stream_segment_data(ramp(1, 10, 30))     # the ring moves past it
        assert options.counters.get("pending_answer_bytes") == 0
        gate.set()
        assert arrived.wait(BOUND)
        with pytest.raises(errors.DroppedSamplesError) as caught:
            decode_segment(got[0])
        assert "[0, 10)" in str(caught.value)
        assert inbox.wait("later") == [ramp(1, 30, 10).tolist()]   # the next one is exact
        assert options.counters.get("dropped_requests") == 1
        assert options.counters.get("waiting_requests") == 0
    finally:
        svc.close()
