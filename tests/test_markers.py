"""Live markers: the bounded history (unit), then markers on live streams served for real:
producer and client pushes with the push rules, get_records, iterators and watchers, the
ring's wrap-around, bad input, the recorder (SIGKILL with markers pending) and replay
(seek and loop)."""
from __future__ import annotations

import threading

import pytest

from software.live.markers import MarkerHistory
from tests.util import START

FS = 1000.0


def history(capacity: int = 100) -> MarkerHistory:
    return MarkerHistory(FS, START, capacity)


def test_markers_are_kept_by_index_and_served_as_records():
    h = history()
    h.add(10, "a", 0, 0, 10)
    h.add(30, "b", 500_000, 0, 30)
    h.add(20, "late", 0, 0, 30)                 # stamped in the past: sorted in
    assert [w[3] for w in h.by_index(0, 100)] == ["a", "late", "b"]
    wire = h.by_index(30, 31)[0]
    assert wire[:6] == (START + 30_000, 30, "EDFA", "b", 500_000, None)
    assert h.by_index(0, 1) == [] and len(h) == 3
    # a window holds the markers overlapping it: b lasts 0.5 s from 30 ms
    assert [w[3] for w in h.select(START + 100_000, START + 200_000)] == ["b"]
    assert [w[3] for w in h.select(START + 21_000, START + 30_000)] == []
    assert [w[3] for w in h.select(None, START + 20_001)] == ["a", "late"]


def test_the_history_is_bounded_by_count_and_by_the_ring():
    h = history(capacity=5)
    for k in range(8):
        h.add(k, str(k), 0, 0, k)
    assert [w[3] for w in h.by_index(0, 100)] == ["3", "4", "5", "6", "7"]
    assert h.dropped == 3
    h.add(8, "8", 0, first_available=6, head=8)  # the ring dropped samples before 6
    assert [w[3] for w in h.by_index(0, 100)] == ["6", "7", "8"]
    assert [w[3] for w in h.select(None, None, first_available=8)] == ["8"]


def test_watchers_hear_of_each_marker_and_a_broken_one_is_dropped():
    h = history()
    heard, calls = [], []
    h.watch(heard.append)
    gone = h.watch(lambda w: calls.append(w) or False)        # returns False: removed
    h.watch(lambda w: 1 / 0)                                  # raises: removed, logged
    h.add(1, "x", 0, 0, 1)
    h.add(2, "y", 0, 0, 2)
    assert [w[3] for w in heard] == ["x", "y"] and len(calls) == 1 and h.watchers == 1
    h.unwatch(gone)                                           # idempotent


def test_a_watcher_may_read_the_history_it_is_told_about():
    h = history()
    seen = []
    h.watch(lambda w: seen.append(len(h.by_index(0, 10))))    # no lock held while called
    done = threading.Event()
    threading.Thread(target=lambda: (h.add(1, "x", 0, 0, 1), done.set())).start()
    assert done.wait(10) and seen == [1]


@pytest.mark.parametrize("capacity", [1, 3])
def test_capacity_of_one_and_more(capacity):
    h = history(capacity)
    for k in range(4):
        h.add(k, str(k), 0, 0, k)
    assert len(h) == capacity
