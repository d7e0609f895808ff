"""BlockCache: LRU by bytes, one future per block in flight, exact hit/miss counts."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from software.cache.blocks import BlockCache


def block(n: int, value: float = 1.0) -> np.ndarray:
    return np.full(n, value)


def load_through(cache: BlockCache, key, loader):
    """Claim ``key`` and, when ours, load it with ``loader`` (a one-line fetcher)."""
    fut, mine = cache.claim(key)
    if mine:
        cache.fulfil(key, loader(key))
    return fut.result(timeout=1)


def test_hits_and_misses_are_counted_exactly():
    calls = []
    cache = BlockCache(10_000)

    def loader(key):
        calls.append(key)
        return block(10, key)

    for key in [1, 2, 1, 1, 3, 2]:
        load_through(cache, key, loader)
    assert calls == [1, 2, 3]
    assert (cache.hits, cache.misses) == (3, 3)


def test_lru_is_bounded_in_bytes_not_entries():
    cache = BlockCache(3 * 80)  # three blocks of 10 float64
    for key in range(5):
        cache.fulfil(key, block(10))
    assert len(cache) == 3 and cache.nbytes == 240
    assert 0 not in cache and 1 not in cache and 4 in cache
    assert cache.evictions == 2
    cache.lookup(2)                      # 2 becomes most recent
    cache.fulfil(5, block(20))           # needs two slots: evicts 3 and 4
    assert 2 in cache and 3 not in cache and 4 not in cache


def test_claim_many_the_servers_path_keeps_lru_recency():
    """Recording.gather looks blocks up with claim_many: a block it finds must become the
    most recent (kills the mutant that drops move_to_end from claim_many)."""
    cache = BlockCache(3 * 80)  # three blocks of 10 float64
    for key in range(3):
        cache.fulfil(key, block(10, key))
    values, mine = cache.claim_many([0, 2])            # 0 and 2 read by a client
    assert mine == [] and [v[0] for v in values] == [0, 2]
    cache.fulfil(3, block(10))                          # evicts the least recent: 1
    assert 0 in cache and 1 not in cache and 2 in cache and 3 in cache
    cache.claim_many([0])
    cache.fulfil(4, block(10))                          # then 2 (0 was just used)
    assert 0 in cache and 2 not in cache


def test_block_larger_than_budget_is_served_but_not_kept():
    cache = BlockCache(100)
    fut, mine = cache.claim("big")
    assert mine
    cache.fulfil("big", block(1000))
    assert fut.result().shape == (1000,)
    assert "big" not in cache and cache.nbytes == 0


def test_one_read_in_flight_per_block():
    cache = BlockCache(10_000)
    first, mine1 = cache.claim("k")
    second, mine2 = cache.claim("k")
    assert mine1 and not mine2 and first is second
    done = threading.Event()
    second.add_done_callback(lambda _f: done.set())
    cache.fulfil("k", block(4, 7.0))
    assert done.wait(1) and second.result()[0] == 7.0


def test_failure_reaches_every_waiter_and_is_not_cached():
    cache = BlockCache(10_000)
    fut, _ = cache.claim("k")
    waiter, mine = cache.claim("k")
    assert not mine
    cache.fail("k", RuntimeError("disk gone"))
    with pytest.raises(RuntimeError, match="disk gone"):
        waiter.result(timeout=1)
    _again, mine = cache.claim("k")
    assert mine  # a later reader tries again


def test_cached_blocks_are_read_only_and_discard_works():
    cache = BlockCache(10_000)
    cache.fulfil(("a", 1), block(3))
    cache.fulfil(("b", 1), block(3))
    with pytest.raises(ValueError):
        cache.lookup(("a", 1))[0] = 5.0
    assert cache.discard_where(lambda k: k[0] == "a") == 1
    assert ("a", 1) not in cache and ("b", 1) in cache and cache.nbytes == 24


def test_claim_many_takes_cached_and_in_flight_blocks_and_counts_them():
    cache = BlockCache(10_000)
    cache.fulfil("a", block(2, 1.0))
    waiting, _ = cache.claim("b")                     # in flight, claimed elsewhere
    values, mine = cache.claim_many(["a", "b", "c"])
    assert values[0][0] == 1.0 and values[1] is waiting and mine == [2]
    assert not values[2].done()
    assert (cache.hits, cache.misses) == (1, 1 + 2)   # the first claim of "b" was a miss too
    cache.fulfil_many([("b", block(2, 2.0)), ("c", block(2, 3.0))])
    assert values[1].result(0)[0] == 2.0 and values[2].result(0)[0] == 3.0


def test_claim_absent_claims_only_what_nobody_has_and_counts_nothing():
    cache = BlockCache(3 * 16)
    cache.fulfil("old", block(2))
    cache.fulfil("cached", block(2))
    cache.claim("flying")
    hits, misses = cache.hits, cache.misses
    assert cache.claim_absent(["old", "flying", "new"]) == ["new"]
    assert (cache.hits, cache.misses) == (hits, misses)
    cache.fulfil("new", block(2))
    cache.fulfil("newer", block(2))                   # evicts the least recently used
    assert "old" in cache and "cached" not in cache   # "old" became recent when claimed


def test_fail_many_reaches_every_claimed_block():
    cache = BlockCache(10_000)
    values, mine = cache.claim_many(["x", "y"])
    cache.fail_many(["x", "y"], OSError("gone"))
    for fut in values:
        with pytest.raises(OSError, match="gone"):
            fut.result(0)
    assert cache.claim_absent(["x", "y"]) == ["x", "y"]  # nothing cached, claimable again
