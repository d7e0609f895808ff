"""How reads reach the reader processes: priorities, runs of blocks, no lingering answers."""
from __future__ import annotations

import gc
import os
import threading
import weakref

import numpy as np
import pytest

from software.readers.pool import DEMAND, ReaderPool
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

    def spy(path, password, names, start, stop, priority=DEMAND, **kw):
        calls.append((tuple(names), start, stop, priority))
        return read(path, password, names, start, stop, priority, **kw)

    monkeypatch.setattr(pool, "read", spy)
    group = recording.groups[256.0]
    size = recording.block_samples(group)
    got = recording.gather(NAMES, group, 100, 6 * size - 7).result(timeout=60).assemble()
    assert np.array_equal(got, ref[:, 100:6 * size - 7], equal_nan=True)
    assert sorted(calls) == [(NAMES[:3], 0, 6 * size, DEMAND), (NAMES[3:], 0, 6 * size, DEMAND)]
    calls.clear()
    recording.prefetch(NAMES, group, 5 * size, 8 * size, priority=2)   # block 5 is cached
    assert sorted(c[1:] for c in calls) == [(6 * size, 8 * size, 2)] * 2
    got = recording.gather(NAMES[::-1], group, 7 * size, 7 * size + 9).result(timeout=60)
    got = got.assemble()
    assert np.array_equal(got, ref[::-1, 7 * size:7 * size + 9], equal_nan=True)


def test_an_answer_is_freed_as_soon_as_it_is_dropped(recording):
    """No reference cycle keeps assembled answers alive until the garbage collector runs."""
    group = recording.groups[256.0]
    gc.disable()
    try:
        fut = recording.gather(NAMES, group, 0, 30_000)      # cold: blocks read for it
        answer = fut.result(timeout=60).assemble()
        alive = weakref.ref(answer)
        del fut, answer
        assert alive() is None
    finally:
        gc.enable()


def test_reading_ahead_follows_a_stream_and_skips_jumps(server, conn, recording):
    """A stream reads ahead (at least two 60 s runs) in its direction; a jump reads nothing."""
    cache = server.cache
    size = recording.block_samples(recording.groups[256.0])          # 2560: 10 s blocks

    def claimed(block: int) -> bool:   # cached, or being read (claimed synchronously)
        keys = [(recording._key, name, block) for name in NAMES]
        return all(k in cache or k in cache._inflight for k in keys)

    svc = conn.root.open_file("main.mefd")
    get = svc.get_stream_segment
    get(size, 0)                                       # first request: ahead of it, 120 s
    assert all(claimed(b) for b in range(1, 13)) and not claimed(13)
    get(size, size)                                    # continues: one more block ahead
    assert claimed(13) and not claimed(14)
    get(256, 40 * size // 3)                           # a jump: nothing read ahead
    assert not claimed(14) and not claimed(15)
    get(size, 17 * size)                               # a jump again ...
    assert not claimed(14) and not claimed(18)
    get(size, 16 * size)                               # ... then backwards: 120 s behind
    assert claimed(14) and claimed(15) and not claimed(18)
    wait_until(lambda: dict(cache.stats())["in_flight"] == 0, timeout=30)


def test_samples_land_in_shared_memory_or_go_through_the_pipe(main_path, ref):
    """Reads that fit the landing area cross there, larger ones through the pipe; both
    equal MefReader's; a consumer sees the samples before the region is reused; closing
    the pool removes the area."""
    small = 6 * 2560 * 8                          # room for one read of 6 channels x 10 s
    with ReaderPool(workers=2, landing_mb=small / 2**20) as pool:
        path = pool._landing.path
        assert os.path.exists(path)
        fits = [pool.read(main_path, None, NAMES, i * 2560, (i + 1) * 2560)
                for i in range(4)]
        too_big = pool.read(main_path, None, NAMES, 0, 3 * 2560)
        sums = pool.read(main_path, None, NAMES, 2560, 2 * 2560,
                         consume=lambda view: np.nansum(view, axis=1))
        for i, fut in enumerate(fits):
            assert np.array_equal(fut.result(timeout=60), ref[:, i * 2560:(i + 1) * 2560],
                                  equal_nan=True)
        assert np.array_equal(too_big.result(timeout=60), ref[:, :3 * 2560], equal_nan=True)
        assert np.array_equal(sums.result(timeout=60), np.nansum(ref[:, 2560:5120], axis=1))
        assert pool.reads_piped >= 1 and pool.reads_landed >= 2
        assert pool.reads_landed + pool.reads_piped == 6
    assert not os.path.exists(path)
    with ReaderPool(workers=1, landing_mb=0) as pool:   # no area: everything by pipe
        assert np.array_equal(pool.read(main_path, None, NAMES, 5, 900).result(timeout=60),
                              ref[:, 5:900], equal_nan=True)
        assert (pool.reads_landed, pool.reads_piped) == (0, 1)


def test_a_read_whose_landing_area_is_gone_comes_through_the_pipe(main_path, ref):
    """A task that cannot map its area (removed by a rebuild after it was reserved) still
    returns its samples, through the pipe."""
    with ReaderPool(workers=1) as pool:
        real = pool._landing.path
        pool._landing.path = real + "-gone"          # what a reader finds after a rebuild
        try:
            got = pool.read(main_path, None, NAMES, 10, 700).result(timeout=60)
        finally:
            pool._landing.path = real
        assert np.array_equal(got, ref[:, 10:700], equal_nan=True)
        assert pool.reads_landed == 1                # it was reserved in the area
