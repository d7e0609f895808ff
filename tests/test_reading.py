"""How reads reach the reader processes: priorities, runs of blocks, no lingering answers."""
from __future__ import annotations

import gc
import logging
import os
import pathlib
import threading
import weakref

import numpy as np
import psutil
import pytest

from software.readers.pool import DEMAND, ReaderPool
from software.readers.processes import FORGET_WINDOW
from software.readers.worker import _inspect_task
from tests.util import held, reference, release, wait_until

NAMES = ("Cz", "Fp1", "Fp2", "O1", "O2", "index")


@pytest.fixture(scope="module")
def ref(main_path):
    return reference(main_path, NAMES)


@pytest.fixture(scope="module")
def one_reader():
    with ReaderPool(workers=1, nice=0) as pool:
        pool.warm_up()
        yield pool


def hold_the_reader(pool: ReaderPool, main_path: str, tmp_path) -> str:
    """Keep the only reader busy with a task that waits on a FIFO; returns the FIFO."""
    gate = str(tmp_path / "gate")
    os.mkfifo(gate)
    pool._submit(DEMAND, held, main_path, gate)
    return gate


def finishing_order(futures: dict) -> list:
    """Names of ``futures`` in the order they complete."""
    order, lock = [], threading.Lock()
    for name, fut in futures.items():
        fut.add_done_callback(lambda _f, n=name: (lock.acquire(), order.append(n),
                                                  lock.release()))
    for fut in futures.values():
        fut.result(timeout=60)
    return order


def test_a_demand_read_overtakes_waiting_reads_ahead(one_reader, main_path, ref, tmp_path):
    pool = one_reader
    gate = hold_the_reader(pool, main_path, tmp_path)      # the reader is busy until released
    futures = {f"ahead{i}": pool.read(main_path, None, NAMES, i * 2560, (i + 1) * 2560,
                                      priority=3) for i in range(6)}
    futures["demand"] = pool.read(main_path, None, NAMES, 40000, 42000, priority=DEMAND)
    assert pool.queued() == 6          # one task running, one handed over, six waiting
    release(gate)
    order = finishing_order(futures)
    # the read handed to the executor before the demand read finishes first
    assert order[:3] == ["ahead0", "demand", "ahead1"], order
    assert np.array_equal(futures["demand"].result(), ref[:, 40000:42000], equal_nan=True)
    for i in range(6):
        assert np.array_equal(futures[f"ahead{i}"].result(), ref[:, i * 2560:(i + 1) * 2560],
                              equal_nan=True)


def test_promote_moves_a_waiting_read_up(one_reader, main_path, tmp_path):
    pool = one_reader
    gate = hold_the_reader(pool, main_path, tmp_path)      # the reader is busy until released
    futures = {f"ahead{i}": pool.read(main_path, None, NAMES[:2], i * 256, (i + 1) * 256,
                                      priority=2) for i in range(6)}
    pool.promote(futures["ahead5"])
    pool.promote(futures["ahead0"])    # already handed over: nothing to do
    release(gate)
    order = finishing_order(futures)
    assert order[:3] == ["ahead0", "ahead5", "ahead1"], order


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
        area = pool._landing._arena

        def one(*args, **kwargs):   # one read at a time: the area is empty for each
            wait_until(lambda: area.regions == 0, timeout=30)
            fut = pool.read(main_path, None, NAMES, *args, **kwargs)
            return fut.result(timeout=60)

        for i in range(4):
            assert np.array_equal(one(i * 2560, (i + 1) * 2560),
                                  ref[:, i * 2560:(i + 1) * 2560], equal_nan=True)
        assert np.array_equal(one(0, 3 * 2560), ref[:, :3 * 2560], equal_nan=True)
        assert np.array_equal(one(2560, 2 * 2560, consume=lambda view: np.nansum(view, axis=1)),
                              np.nansum(ref[:, 2560:5120], axis=1))
        assert (pool.reads_landed, pool.reads_piped) == (5, 1)
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


# ---- every reader, whichever takes which task (issue 9, fault 8) -------------------------

#: What a probe task returns: the reader's pid and the sessions it has open.
PROBE = ("(__import__('os').getpid(), sorted({key[0] for key in __import__("
         "'software.readers.worker', fromlist=['_open_sessions'])._open_sessions}))")


class Hold:
    """A task that keeps one reader busy (blocked reading a FIFO, as in a hung read)
    until :meth:`release`."""

    def __init__(self, pool: ReaderPool, path) -> None:
        os.mkfifo(path)
        self.future = pool._submit_raw(pathlib.Path(path).read_bytes)[0]
        fds: list[int] = []

        def reader_blocked() -> bool:    # opening the writing end works once it reads
            try:
                fds.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                return False
            return True

        wait_until(reader_blocked, timeout=60)
        self.fd: int | None = fds[0]

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.future.result(timeout=60)


def on_each(pool: ReaderPool, directory, submit) -> list:
    """Run ``submit()`` (a task) once in each of a pool's two readers, the other one held
    meanwhile; return the results in that order."""
    os.makedirs(directory, exist_ok=True)
    first_held = Hold(pool, directory / "a")
    second_held = Hold(pool, directory / "b")          # the other reader: one is held
    first = submit()
    first_held.release()                               # only this reader is free
    results = [first.result(timeout=60)]
    again = Hold(pool, directory / "c")                # ... so it holds this one again
    second_held.release()
    results.append(submit().result(timeout=60))
    again.release()
    return results


def probe(pool: ReaderPool):
    return pool._submit_raw(eval, PROBE)[0]


def test_forget_reaches_a_reader_that_ran_none_of_its_tasks(main_path, data_root, tmp_path):
    mixed = os.path.join(data_root, "mixed.mefd")
    with ReaderPool(workers=2, landing_mb=0) as pool:
        pool.warm_up()
        for path in (main_path, mixed):
            on_each(pool, tmp_path / f"open-{len(path)}",
                    lambda p=path: pool._submit_raw(_inspect_task, p, None)[0])
        states = dict(on_each(pool, tmp_path / "before", lambda: probe(pool)))
        assert len(states) == 2 and all(v == sorted([main_path, mixed])
                                        for v in states.values())
        held = Hold(pool, tmp_path / "held")           # this reader runs no forget task
        pool.forget(main_path)                         # both tasks go to the other one
        other, paths = probe(pool).result(timeout=60)
        assert paths == [mixed]
        other_held = Hold(pool, tmp_path / "other")
        late = probe(pool)
        held.release()                                 # the held reader runs the probe
        pid, paths = late.result(timeout=60)
        other_held.release()
        assert pid != other and paths == [mixed]       # it closed main before the probe
        # a reader that missed more forgets than a task carries closes everything
        held = Hold(pool, tmp_path / "held-again")
        for i in range(FORGET_WINDOW + 1):
            pool.forget(f"/nowhere/{i}.mefd")
        other_held = Hold(pool, tmp_path / "other-again")
        late = probe(pool)
        held.release()
        pid, paths = late.result(timeout=60)
        other_held.release()
        assert paths == []                             # mixed too, never forgotten


def test_open_everywhere_opens_in_every_reader(main_path, tmp_path, monkeypatch):
    """One reader is busy when a session is opened: the other must not take every
    opening task; the busy one opens the session as soon as it is free."""
    import glob
    import tempfile

    import software.readers.pool as pool_module
    monkeypatch.setattr(pool_module, "OPEN_EVERYWHERE_WAIT", 60.0)   # however slow
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))         # its rendezvous here
    with ReaderPool(workers=2, landing_mb=0) as pool:
        pool.warm_up()
        assert len(pool.pids()) == 2
        busy = Hold(pool, tmp_path / "busy")
        inspected = pool.inspect(main_path, None)     # as the registry does
        opening = pool.open_everywhere(main_path, None)
        after = probe(pool)                            # queued behind the opening tasks

        def free_reader_done() -> bool:  # ran every task, or waits for the busy one
            return after.done() or any(os.listdir(d) for d in
                                       glob.glob(str(tmp_path / "mefstream-rendezvous-*")))

        wait_until(free_reader_done, timeout=60)
        busy.release()
        for fut in opening:
            fut.result(timeout=60)
        assert inspected.result(timeout=60).channels and after.result(timeout=60)
        states = on_each(pool, tmp_path / "probe", lambda: probe(pool))
        assert len({pid for pid, _ in states}) == 2
        assert all(paths == [main_path] for _, paths in states), states


def test_close_is_bounded_when_a_reader_hangs(tmp_path, caplog):
    """A reader stuck in a task (as in a hung pymef read): close(timeout) returns, the
    stuck reader is terminated and no reader process remains."""
    pool = ReaderPool(workers=2, landing_mb=1)
    pool.warm_up()
    pids = pool.pids()
    landing = pool._landing.path
    hung = Hold(pool, tmp_path / "hung")               # never released before close
    closer = threading.Thread(target=pool.close, kwargs={"timeout": 1.0}, daemon=True)
    try:
        with caplog.at_level(logging.WARNING, logger="software.readers.processes"):
            closer.start()
            closer.join(20)
        assert not closer.is_alive(), "close(timeout=1.0) still waiting after 20 s"
    finally:
        os.close(hung.fd)                              # lets a pre-fix close go on
    assert len(pids) == 2
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert any("terminating" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(landing) and pool.closed
    pool.close()                                       # twice: nothing to do
