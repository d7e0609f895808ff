"""The live ring on its own: every read across the wrap point, value for value, repeatedly
(issue 18, section 5; mutant killed: the wrap-around copy off by one)."""
from __future__ import annotations

import numpy as np

from software.live.ring import Ring


def signal(rows: int, start: int, n: int) -> np.ndarray:
    """Row r, index i holds i + 1000 r."""
    i = np.arange(start, start + n, dtype=np.float64)
    return i[None, :] + 1000.0 * np.arange(rows)[:, None]


def read(ring: Ring, rows, start: int, stop: int) -> np.ndarray | None:
    n_rows = ring.n_channels if isinstance(rows, slice) else len(rows)
    out = np.full((n_rows, stop - start), -1.0)
    return out if ring.copy(rows, start, stop, out) else None


def test_the_issues_case_ring_1_8_fifteen_written_8_to_13_read():
    ring = Ring(1, 8)
    assert ring.capacity == 10            # history 8 + slack 2
    ring.write(np.arange(15.0)[None, :10])
    ring.write(np.arange(15.0)[None, 10:])
    assert ring.head == 15 and ring.first_available == 5
    assert read(ring, slice(None), 8, 13).tolist() == [[8, 9, 10, 11, 12]]


def test_every_window_reads_back_exactly_across_many_wraps():
    for history, rows, steps in ((8, 1, (3, 7, 1, 10, 2)), (20, 3, (7, 13, 1, 25, 19)),
                                 (5, 2, (1, 2, 6, 4))):
        ring = Ring(rows, history)
        pushed, k = 0, 0
        while pushed < 12 * ring.capacity:       # a dozen ring lengths, wrap points moving
            n = steps[k % len(steps)]
            k += 1
            ring.write(signal(rows, pushed, n))
            pushed += n
            assert ring.head == pushed
            oldest = max(ring.first_available, pushed - history)
            for start in range(oldest, pushed):
                for stop in range(start + 1, min(start + history, pushed) + 1):
                    got = read(ring, slice(None), start, stop)
                    assert got is not None, (history, pushed, start, stop)
                    assert got.tolist() == signal(rows, start, stop - start).tolist(), \
                        (history, pushed, start, stop)
            if rows > 1 and pushed >= history:    # some rows, in another order
                got = read(ring, [rows - 1, 0], pushed - history, pushed)
                assert got.tolist() == signal(rows, pushed - history, history)[
                    [rows - 1, 0]].tolist()


def test_rows_written_one_at_a_time_wrap_on_their_own():
    ring = Ring(2, 8)
    data = signal(2, 0, 40)
    a = b = 0
    while min(a, b) < 38:
        if a - b < ring.slack and a < 40:     # row 0 runs ahead by up to the slack
            ring.write(data[0, a:a + 1][None, :], 0)
            a += 1
        else:
            ring.write(data[1, b:b + 3][None, :], 1)
            b += 3
        assert ring.head == min(a, b)
        head = ring.head
        for start in range(max(ring.first_available, head - 8), head):
            got = read(ring, slice(None), start, head)
            assert got.tolist() == data[:, start:head].tolist(), (a, b, start)


def test_a_read_of_samples_overwritten_meanwhile_says_so():
    ring = Ring(1, 8)
    ring.write(np.arange(10.0)[None, :])
    out = np.empty((1, 5))
    assert ring.copy(slice(None), 2, 7, out)            # all there
    ring.write(np.arange(10.0, 13.0)[None, :])           # overwrites 0, 1, 2
    assert not ring.copy(slice(None), 2, 7, out)         # 2 was overwritten
    assert ring.copy(slice(None), 3, 8, out) and out.tolist() == [[3, 4, 5, 6, 7]]
