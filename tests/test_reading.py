"""How reads reach the reader processes: priorities, runs of blocks, no lingering answers."""
from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

from software.readers import DEMAND, ReaderPool
from tests.util import reference, wait_until

NAMES = ("Cz", "Fp1", "Fp2", "O1", "O2", "index")


@pytest.fixture(scope="module")
def ref(main_path):
    return reference(main_path, NAMES)


@pytest.fixture(scope="module")
def one_reader():
    with ReaderPool(workers=1, nice=0) as pool:
        pool.warm_up()
        yield pool


def finishing_order(futures: dict) -> list:
    """Names of ``futures`` in the order they complete."""
    order, lock = [], threading.Lock()
    for name, fut in futures.items():
        fut.add_done_callback(lambda _f, n=name: (lock.acquire(), order.append(n),
                                                  lock.release()))
    for fut in futures.values():
        fut.result(timeout=60)
    return order


def test_a_demand_read_overtakes_waiting_reads_ahead(one_reader, main_path, ref):
    pool = one_reader
    futures = {f"ahead{i}": pool.read(main_path, None, NAMES, i * 2560, (i + 1) * 2560,
                                      priority=3) for i in range(6)}
    futures["demand"] = pool.read(main_path, None, NAMES, 40000, 42000, priority=DEMAND)
    assert pool.queued() >= 4          # one reader: one task running, one handed over
    order = finishing_order(futures)
    # the two reads handed to the executor before the demand read finish first
    assert order[:3] == ["ahead0", "ahead1", "demand"], order
    assert np.array_equal(futures["demand"].result(), ref[:, 40000:42000], equal_nan=True)
    for i in range(6):
        assert np.array_equal(futures[f"ahead{i}"].result(), ref[:, i * 2560:(i + 1) * 2560],
                              equal_nan=True)


def test_promote_moves_a_waiting_read_up(one_reader, main_path):
    pool = one_reader
    futures = {f"ahead{i}": pool.read(main_path, None, NAMES[:2], i * 256, (i + 1) * 256,
                                      priority=2) for i in range(6)}
    pool.promote(futures["ahead5"])
    pool.promote(futures["ahead0"])    # already handed over: nothing to do
    order = finishing_order(futures)
    assert order[:3] == ["ahead0", "ahead1", "ahead5"], order


def test_closing_the_pool_fails_waiting_reads(main_path):
    from software.errors import ServiceClosedError
    pool = ReaderPool(workers=1, nice=0)
    waiting = [pool.read(main_path, None, NAMES, 0, 2560, priority=1) for _ in range(5)]
    pool.close()
    for fut in waiting:
        assert fut.exception(timeout=60) is None or isinstance(fut.exception(),
                                                               ServiceClosedError)
    assert isinstance(waiting[-1].exception(), ServiceClosedError)
    assert isinstance(pool.read(main_path, None, NAMES, 0, 10).exception(timeout=5),
                      ServiceClosedError)


@pytest.fixture
def recording(server):
    rec = server.registry.acquire("main.mefd")
    server.cache.discard_where(lambda key: True)
    yield rec
    server.registry.release(rec)


def test_one_task_per_reader_for_a_run_of_blocks(server, recording, ref, monkeypatch):
    """60 s of 6 channels, cold: 2 reader tasks (3 channels x 6 blocks each), not 6 x 1."""
    pool = server.pool
    calls = []
    read = pool.read

    def spy(path, password, names, start, stop, priority=DEMAND):
        calls.append((tuple(names), start, stop, priority))
        return read(path, password, names, start, stop, priority)

    monkeypatch.setattr(pool, "read", spy)
    group = recording.groups[256.0]
    size = recording.block_samples(group)
    got = recording.request(NAMES, group, 100, 6 * size - 7).result(timeout=60)
    assert np.array_equal(got, ref[:, 100:6 * size - 7], equal_nan=True)
    assert sorted(calls) == [(NAMES[:3], 0, 6 * size, DEMAND), (NAMES[3:], 0, 6 * size, DEMAND)]
    calls.clear()
    recording.prefetch(NAMES, group, 5 * size, 8 * size, priority=2)   # block 5 is cached
    assert sorted(c[1:] for c in calls) == [(6 * size, 8 * size, 2)] * 2
    got = recording.request(NAMES[::-1], group, 7 * size, 7 * size + 9).result(timeout=60)
    assert np.array_equal(got, ref[::-1, 7 * size:7 * size + 9], equal_nan=True)


def test_an_answer_is_freed_as_soon_as_it_is_dropped(recording):
    """No reference cycle keeps assembled answers alive until the garbage collector runs."""
    group = recording.groups[256.0]
    gc.disable()
    try:
        fut = recording.request(NAMES, group, 0, 30_000)     # cold: assembled from futures
        answer = fut.result(timeout=60)
        alive = weakref.ref(answer)
        del fut, answer
        assert alive() is None
    finally:
        gc.enable()


def test_reading_ahead_follows_a_stream_and_skips_jumps(server, conn, recording):
    """A stream reads ahead (at least one 60 s run) in its direction; a jump reads nothing."""
    cache = server.cache
    size = recording.block_samples(recording.groups[256.0])          # 2560: 10 s blocks

    def claimed(block: int) -> bool:   # cached, or being read (claimed synchronously)
        keys = [(recording._key, name, block) for name in NAMES]
        return all(k in cache or k in cache._inflight for k in keys)

    svc = conn.root.open_file("main.mefd")
    get = svc.get_stream_segment
    get(size, 0)                                       # first request: ahead of it, 60 s
    assert all(claimed(b) for b in range(1, 7)) and not claimed(7)
    get(size, size)                                    # continues: one more block ahead
    assert claimed(7) and not claimed(8)
    get(256, 40 * size // 3)                           # a jump: nothing read ahead
    assert not claimed(14) and not claimed(15)
    get(size, 12 * size)                               # a jump again ...
    get(size, 11 * size)                               # ... then backwards: 60 s behind
    assert all(claimed(b) for b in range(5, 11)) and not claimed(14)
    wait_until(lambda: dict(cache.stats())["in_flight"] == 0, timeout=30)
