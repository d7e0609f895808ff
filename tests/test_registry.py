"""SessionRegistry: concurrent openers of one path share one attempt; a failed attempt
leaves nothing behind (issue 9, fault 2)."""
from __future__ import annotations

import threading

import pytest

from software.cache.blocks import BlockCache
from software.cache.registry import SessionRegistry
from software.errors import WrongPasswordError
from tests.conftest import PASSWORD2
from tests.util import wait_until

#: Seconds a call that should end at once may take on a loaded two-core machine.
BOUND = 15.0


class CountingPool:
    """The server's reader pool, counting ``inspect`` calls (one per open attempt)."""

    def __init__(self, pool, hold: threading.Event | None = None):
        self._pool = pool
        self._hold = hold
        self.inspected = 0

    def inspect(self, path, password):
        self.inspected += 1
        if self._hold is not None:        # keep the attempt open until the test lets go
            self._hold.wait(BOUND)
        return self._pool.inspect(path, password)

    def __getattr__(self, name):
        return getattr(self._pool, name)


def in_threads(n: int, fn) -> list:
    """Run ``fn()`` in ``n`` threads started together; return each outcome (value or
    exception), failing if any thread is still running after BOUND seconds."""
    outcomes: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            outcomes[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True, name=f"opener-{i}")
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"{stuck} still opening after {BOUND} s"
    return outcomes


def test_a_failed_open_does_not_block_the_next(server, data_root):
    """block_seconds=0 makes every open raise (in Recording); each later open of the path
    must try again and fail on its own, not spin on the first attempt forever."""
    registry = SessionRegistry(data_root, server.pool, BlockCache(2**20), block_seconds=0)
    with pytest.raises(ZeroDivisionError):
        registry.acquire("main.mefd")
    outcomes = in_threads(1, lambda: registry.acquire("main.mefd"))
    assert isinstance(outcomes[0], ZeroDivisionError)
    outcomes = in_threads(4, lambda: registry.acquire("main.mefd"))  # concurrent, failing
    assert all(isinstance(o, ZeroDivisionError) for o in outcomes), outcomes
    assert registry._opening == {} and registry.open_paths() == ()


def test_concurrent_openers_share_one_recording(server, data_root):
    hold = threading.Event()
    pool = CountingPool(server.pool, hold)
    registry = SessionRegistry(data_root, pool, BlockCache(2**20))
    try:
        n = 6
        timer = threading.Timer(0.2, hold.set)   # let the others arrive while it opens
        timer.start()
        outcomes = in_threads(n, lambda: registry.acquire("main.mefd"))
        timer.join()
        assert all(o is outcomes[0] for o in outcomes), outcomes
        assert pool.inspected == 1                        # one attempt, shared
        assert registry._open[outcomes[0].path][2] == n   # n users
        for rec in outcomes:
            registry.release(rec)
        assert registry.open_paths() == () and outcomes[0].closed
    finally:
        registry.close()


def test_openers_waiting_on_a_wrong_password_make_their_own_attempt(server, data_root):
    """The first opener gives a wrong password; two openers arriving while it is under
    way then open the session with the right one, and share it."""
    hold = threading.Event()
    pool = CountingPool(server.pool, hold)
    registry = SessionRegistry(data_root, pool, BlockCache(2**20))
    try:
        wrong: list = []
        first = threading.Thread(target=lambda: wrong.append(
            pytest.raises(WrongPasswordError, registry.acquire, "secret.mefd", "wrong-one")),
            daemon=True)
        first.start()
        wait_until(lambda: pool.inspected == 1)        # the wrong attempt is under way
        timer = threading.Timer(0.2, hold.set)         # let the others queue behind it
        timer.start()
        opened = in_threads(2, lambda: registry.acquire("secret.mefd", PASSWORD2))
        first.join(BOUND)
        timer.join()
        assert wrong and not first.is_alive()
        assert all(o is opened[0] for o in opened), opened
        assert pool.inspected == 2                     # the wrong one, then one right one
        with pytest.raises(WrongPasswordError):        # open now: checked against it
            registry.acquire("secret.mefd", "wrong-one")
        for rec in opened:
            registry.release(rec)
        assert registry._opening == {} and registry.open_paths() == ()
    finally:
        registry.close()
