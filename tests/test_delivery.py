"""CallbackDeliverer: one delivery thread per view whatever thread puts (issue 9, fault 4),
per-thread order kept, close() ends the thread, the server's counters are fed, jobs run in
turn, withdrawn requests are skipped and an answer that cannot be built sends its error."""
from __future__ import annotations

import sys
import threading
from concurrent.futures import Future

import pytest

from software import decode_segment, errors
from software.stream.counters import Counters
from software.stream.delivery import CallbackDeliverer
from software.stream.waiting import Tickets, WaitingBudget
from tests.util import wait_until

#: Seconds a thread that should end at once may take on a loaded two-core machine.
BOUND = 15.0


def done(value) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


def failed(exc: BaseException) -> Future:
    fut: Future = Future()
    fut.set_exception(exc)
    return fut


@pytest.fixture
def fast_switching():
    """Switch threads as often as the interpreter can, so that races show."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_puts_from_many_threads_use_one_delivery_thread(fast_switching):
    putters, each, rounds = 8, 40, 30
    for r in range(rounds):
        name = f"callbacks-race-{r}"
        received: list = []
        runners: set = set()
        all_in = threading.Event()

        def callback(value, received=received, runners=runners, all_in=all_in):
            runners.add(threading.current_thread())
            received.append(value)
            if len(received) == putters * each:
                all_in.set()

        deliverer = CallbackDeliverer(name)
        barrier = threading.Barrier(putters)

        def put(i, deliverer=deliverer, barrier=barrier, callback=callback):
            barrier.wait()
            for k in range(each):
                deliverer.put(callback, done((i, k)), lambda v: v)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(putters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND)
        assert all_in.wait(BOUND), f"round {r}: {len(received)} of {putters * each}"
        started = [t for t in threading.enumerate() if t.name == name]
        assert len(runners) == 1 and len(started) == 1, (r, runners, started)
        for i in range(putters):                     # each putter's callbacks in its order
            assert [k for j, k in received if j == i] == list(range(each)), r
        deliverer.close()
        for t in started:
            t.join(BOUND)
            assert not t.is_alive(), f"round {r}: {t.name} still running after close()"
        assert deliverer.delivered == putters * each


def test_counters_follow_the_deliverers_own_counts():
    counters = Counters()
    broken = RuntimeError("the client is gone")
    results: list = []
    hung = threading.Event()
    with CallbackDeliverer("callbacks-counted", callback_timeout=0.05,
                           counters=counters) as deliverer:
        class Reply:       # what an rpyc.async_ call returns: tells when the client replied
            def __init__(self, error):
                self.error = error

            def add_callback(self, fn):
                self.fn = fn

        replies: list = []

        def callback(value):
            if value == "raise":
                raise broken
            results.append(value)
            replies.append(Reply(error=value == "client error"))
            return replies[-1]

        deliverer.put(callback, done("fine"), lambda v: v)
        deliverer.put(callback, done("client error"), lambda v: v)
        deliverer.put(callback, done("raise"), lambda v: v)          # delivery fails
        deliverer.put(callback, failed(ValueError("bad read")), lambda v: v)   # an error sent
        deliverer.put(lambda v: hung.set() or Reply(False), done("never replied"),
                      lambda v: v)
        assert hung.wait(BOUND)
        replies[0].fn(replies[0])                    # the client returned from these two
        replies[1].fn(replies[1])
        wait_until(lambda: deliverer.hung >= 1, timeout=BOUND)   # the last never replies
    with deliverer._lock:          # a watchdog check still running adds to both at once
        stats, hung_count = dict(counters.snapshot()), deliverer.hung
    assert (deliverer.delivered, deliverer.failed, deliverer.client_errors) == (4, 1, 1)
    assert stats["callbacks_delivered"] == 4 and stats["callbacks_failed"] == 1
    assert stats["client_callback_errors"] == 1
    assert stats["hung_callbacks"] == hung_count >= 1
    assert deliverer.closed and "closed" in repr(deliverer)


def test_close_twice_and_put_after_close_do_nothing():
    deliverer = CallbackDeliverer("callbacks-closed")
    deliverer.close()
    deliverer.close()
    deliverer.put(lambda v: pytest.fail("delivered after close"), done(1), lambda v: v)
    assert deliverer._thread is None


def test_jobs_run_in_turn_withdrawn_requests_are_skipped_and_encode_errors_sent():
    counters = Counters()
    tickets = Tickets(WaitingBudget(10), counters)
    received: list = []
    gate, finished = threading.Event(), threading.Event()

    def dropped(value):
        raise errors.DroppedSamplesError("samples [0, 10) were dropped")

    with CallbackDeliverer("callbacks-jobs", counters=counters) as deliverer:
        keep = tickets.register(received.append)
        gone = tickets.register(print)
        late = tickets.register(received.append)
        deliverer.call_soon(lambda: gate.wait(BOUND))       # the thread is busy meanwhile
        deliverer.put(received.append, done("first"), lambda v: v, keep)
        deliverer.call_soon(lambda: received.append("job"))
        deliverer.put(print, done("withdrawn"), lambda v: v, gone)
        deliverer.put(received.append, done("late"), dropped, late)
        deliverer.call_soon(finished.set)
        assert tickets.withdraw(print) == 1 and tickets.withdraw(print) == 0
        assert counters.get("waiting_requests") == 2
        gate.set()
        assert finished.wait(BOUND)
    assert received[:2] == ["first", "job"] and len(received) == 3
    with pytest.raises(errors.DroppedSamplesError):
        decode_segment(received[2])                        # the error went to the client
    assert counters.get("waiting_requests") == 0 and tickets.count == 0
