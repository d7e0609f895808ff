"""Futex wake-ups with bits: the live ring wakes its followers before the server's thread."""
from __future__ import annotations

import mmap
import threading

import numpy as np
import pytest

from software.shm import futex
from software.shm.ring import FOLLOWER, SERVER
from tests.util import wait_until

pytestmark = pytest.mark.skipif(not futex.AVAILABLE, reason="no futexes on this system")


def _in_futex_wait(tid: int) -> bool:
    """Whether thread ``tid`` of this process sleeps in the futex system call now."""
    with open(f"/proc/self/task/{tid}/syscall") as fh:
        number = fh.read().split()[0]
    return number == str(futex._SYS_FUTEX.value)


def test_a_wake_reaches_only_the_waiters_whose_bits_it_names():
    memory = mmap.mmap(-1, mmap.PAGESIZE)
    word = np.frombuffer(memory, dtype=np.uint32, count=1)
    address = word.ctypes.data
    woken = {FOLLOWER: threading.Event(), SERVER: threading.Event()}
    tids: dict[int, int] = {}

    def sleeper(bits: int) -> None:
        tids[bits] = threading.get_native_id()
        if futex.wait(address, 0, 30.0, bits):
            woken[bits].set()

    threads = [threading.Thread(target=sleeper, args=(bits,), daemon=True)
               for bits in (FOLLOWER, SERVER)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(tids) == 2 and all(map(_in_futex_wait, tids.values())))

    assert futex.wake(address, FOLLOWER) == 1            # the follower only
    assert woken[FOLLOWER].wait(10)
    assert _in_futex_wait(tids[SERVER]) and not woken[SERVER].is_set()
    assert futex.wake(address, SERVER) == 1
    assert woken[SERVER].wait(10)
    for thread in threads:
        thread.join(10)


def test_a_wait_with_bits_times_out_and_returns_false():
    memory = mmap.mmap(-1, mmap.PAGESIZE)
    address = np.frombuffer(memory, dtype=np.uint32, count=1).ctypes.data
    assert futex.wait(address, 0, 0.01, SERVER) is False   # a relative timeout, not a date
    assert futex.wait(address, 1, 5.0, SERVER) is True     # the word differs: no sleep
