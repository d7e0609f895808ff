"""Reader work shared fairly between connections (issue 18, section 2).

Measured before: 300 callback requests of one client made another client's 10 s read go
from 29 ms to 4.15 s (it waited behind all of them). The tests build that state on
purpose (the readers stopped or held while the requests queue) and check the order in
which the reads are served, never their timing.
"""
from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from software import MefStreamServer, decode_segment, get_connection
from software.readers.fair import FairQueue
from software.readers.pool import DEMAND, ReaderPool
from tests.conftest import N_MAIN
from tests.util import held as _held, reference, release, wait_until


def test_equal_priorities_are_served_round_robin_by_owner():
    queue = FairQueue()
    for i in range(300):
        queue.push(("a", i), DEMAND, "A", f"a{i}")
    assert queue.pop() == (("a", 0), "a0")            # A's first is being served
    queue.push(("b", 0), DEMAND, "B", "b0")
    queue.push(("b", 1), DEMAND, "B", "b1")
    order = [queue.pop()[1] for _ in range(6)]
    assert order == ["a1", "b0", "a2", "b1", "a3", "a4"]
    assert len(queue) == 302 - 7


def test_priority_comes_first_and_promote_moves_or_shares_a_place():
    queue = FairQueue()
    for i in range(4):
        queue.push(("ahead", i), 2, "A", f"ahead{i}")
    for i in range(3):
        queue.push(("demand", i), DEMAND, "A", f"demand{i}")
    queue.push("mine", DEMAND, "B", "mine")
    assert queue.promote(("ahead", 3), DEMAND, "B")    # B waits for A's read ahead
    assert not queue.promote(("demand", 0), 2, "B")    # never to a worse priority
    assert queue.promote(("demand", 2), DEMAND, "B")   # B waits for A's third: B's turn
    order = [queue.pop()[1] for _ in range(len(queue))]
    assert order == ["demand0", "mine", "demand1", "ahead3", "demand2",
                     "ahead0", "ahead1", "ahead2"]
    assert queue.pop() is None and queue.peek_priority() is None


def test_one_clients_300_queued_reads_delay_anothers_by_one(main_path, tmp_path):
    """Client A (a thread) queues 300 reads while the only reader is held; client B then
    queues one. B's read is the third served, not the 301st (FIFO order before)."""
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    order: list[str] = []
    lock = threading.Lock()

    def note(name: str):
        def done(_f) -> None:
            with lock:
                order.append(name)
        return done

    with ReaderPool(workers=1, landing_mb=4) as pool:
        pool.warm_up()
        held = pool._submit(DEMAND, _held, main_path, fifo)
        futures = []

        def client(name: str, count: int) -> None:   # its own thread: its own owner
            for i in range(count):
                fut = pool.read(main_path, None, ["Cz"], i * 128, (i + 1) * 128)
                fut.add_done_callback(note(f"{name}{i}"))
                futures.append(fut)

        for name, count in (("a", 300), ("b", 1)):
            thread = threading.Thread(target=client, args=(name, count), name=f"client-{name}")
            thread.start()
            thread.join(30)
        assert pool.queued() == 300                      # a0 handed over, b0 waits too
        release(fifo)
        held.result(timeout=60)
        for fut in futures:
            fut.result(timeout=120)
    assert order.index("b0") == 2, order[:10]            # after a0 and a1


@pytest.fixture
def fair_server(data_root):
    """A server with one reader, no reading ahead and 0.5 s blocks (1 channel x 1 block
    per request: one reader task each)."""
    srv = MefStreamServer(port=0, data_root=data_root, workers=1, prefetch=0, cache_mb=64,
                          block_seconds=0.5)
    srv.start()
    srv.pool.warm_up()
    yield srv
    srv.close()


def test_a_read_is_served_within_a_few_tasks_of_anothers_300_callbacks(fair_server,
                                                                       main_path):
    """The measured case on a real server: client A's 300 callback requests queue while
    the reader is stopped, then client B asks for 10 s. When B's answer arrives only a
    few of A's blocks have been read (before: all 300 were read first)."""
    srv = fair_server
    a = get_connection(srv.port, host="127.0.0.1", timeout=10)
    b = get_connection(srv.port, host="127.0.0.1", timeout=10)
    try:
        stream_a = a.root.open_file("main.mefd")
        stream_a.set_active_channels(("index",))
        stream_b = b.root.open_file("main.mefd")
        stream_b.set_active_channels(("Cz",))
        delivered = []
        pids = srv.pool.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(300):
                assert stream_a.get_stream_segment(128, i * 128, delivered.append) is False
            queued = srv.pool.queued()
            assert queued >= 300 - 2                      # one task running, one handed
            answer: list = []
            reader_b = threading.Thread(
                target=lambda: answer.append(stream_b.get_stream_segment(2560, 0)),
                name="client-b", daemon=True)
            reader_b.start()
            wait_until(lambda: srv.pool.queued() == queued + 1)   # B's read is queued
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        reader_b.join(60)
        blocks_of_a = dict(srv.cache.stats())["entries"] - 2560 // 128   # B's: 20
        # counted when B holds its answer: the reader goes on with A's blocks while B's
        # answer is sent (1-3 on a quiet machine, 7 seen under load); first come, first
        # served reads all 300 first. The exact order: test_one_clients_300_queued_reads...
        assert answer and blocks_of_a <= 30, blocks_of_a
        assert np.array_equal(decode_segment(answer[0]),
                              reference(main_path, ["Cz"])[:, :2560], equal_nan=True)
        wait_until(lambda: len(delivered) == 300, timeout=120)   # A loses nothing
    finally:
        a.close()
        b.close()
    assert N_MAIN >= 300 * 128


def test_what_the_queue_keeps_of_owners_stays_bounded():
    """Owners (connection threads) come and go: their bookkeeping is dropped once they
    have nothing waiting, and the order stays round-robin."""
    from software.readers import fair
    queue = FairQueue()
    for i in range(3 * fair._PRUNE_AT):
        queue.push(i, DEMAND, object(), i)               # a new owner each time
        assert queue.pop() == (i, i)
    assert len(queue._last) <= fair._PRUNE_AT + 1
    queue.push("a1", DEMAND, "A", "a1")
    queue.push("a2", DEMAND, "A", "a2")
    queue.push("b1", DEMAND, "B", "b1")
    assert [queue.pop()[1] for _ in range(3)] == ["a1", "b1", "a2"]
