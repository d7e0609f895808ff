"""The reader pool's waiting room: lowest priority first, equal priorities round-robin.

A client that queues 300 reads must not make another client's one read wait for all of
them. Each waiting task has an owner (the connection's serving thread that asked for it)
and, within its priority, a *round*: an owner's k-th waiting task gets round k, counted
from the round being served when it arrived (start-time fair queueing). Tasks leave in
``(priority, round, arrival)`` order, so one of every owner's tasks leaves before the
second of any::

    owner A queues a1..a300      rounds 1..300        served: a1 b1 a2 b2 a3 a4 ...
    owner B queues b1, b2        (served up to 1)     B waits for one task of A, not 299
             then                rounds 2, 3

A task can be moved to a better priority (:meth:`FairQueue.promote`); the entry it
leaves behind is skipped when it comes up. Not thread-safe: the pool calls it under its
lock.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable

__all__ = ["FairQueue"]

#: Owner bookkeeping kept before the stale part (owners with nothing waiting) is dropped.
_PRUNE_AT = 4096


class _Waiting:
    __slots__ = ("priority", "item", "alive")

    def __init__(self, priority: int, item: object) -> None:
        self.priority = priority
        self.item = item
        self.alive = True


class FairQueue:
    """Waiting tasks of many owners; see the module docstring for the order."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, Hashable, _Waiting]] = []
        self._tasks: dict[Hashable, _Waiting] = {}
        self._seq = itertools.count()
        self._served: dict[int, int] = {}                    # priority -> round served
        self._last: dict[tuple[int, Hashable], int] = {}     # (priority, owner) -> round
        self._prune_at = _PRUNE_AT

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._tasks

    def _round(self, priority: int, owner: Hashable) -> int:
        served = self._served.get(priority, 0)
        turn = max(self._last.get((priority, owner), 0), served) + 1
        self._last[(priority, owner)] = turn
        if len(self._last) > self._prune_at:   # owners caught up carry no information
            self._last = {k: v for k, v in self._last.items()
                          if v > self._served.get(k[0], 0)}
            self._prune_at = max(_PRUNE_AT, 2 * len(self._last))   # amortised
        return turn

    def push(self, key: Hashable, priority: int, owner: Hashable, item: object) -> None:
        """Queue ``item`` under ``key`` (unique while it waits) for ``owner``."""
        waiting = _Waiting(priority, item)
        self._tasks[key] = waiting
        heapq.heappush(self._heap, (priority, self._round(priority, owner),
                                    next(self._seq), key, waiting))

    def priority(self, key: Hashable) -> int | None:
        """The priority ``key`` waits with, or None when it does not wait."""
        waiting = self._tasks.get(key)
        return None if waiting is None else waiting.priority

    def promote(self, key: Hashable, priority: int, owner: Hashable) -> bool:
        """Queue ``key`` also at ``priority`` for ``owner``, when that is no worse.

        At a better priority the task moves there; at its own priority it gets a second
        place, in ``owner``'s turn (a client waiting for a read another client queued
        does not wait for that client's other reads). Returns whether it was queued.
        """
        waiting = self._tasks.get(key)
        if waiting is None or waiting.priority < priority:
            return False
        waiting.priority = priority
        heapq.heappush(self._heap, (priority, self._round(priority, owner),
                                    next(self._seq), key, waiting))
        return True

    def _top(self):
        heap = self._heap
        while heap:
            priority, _turn, _seq, _key, waiting = heap[0]
            if waiting.alive and waiting.priority == priority:
                return heap[0]
            heapq.heappop(heap)   # taken, removed, or moved to a better priority
        return None

    def peek_priority(self) -> int | None:
        """Priority of the task :meth:`pop` would return, or None when nothing waits."""
        top = self._top()
        return None if top is None else top[0]

    def pop(self) -> tuple[Hashable, object] | None:
        """Take the next task: ``(key, item)``, or None when nothing waits."""
        top = self._top()
        if top is None:
            return None
        heapq.heappop(self._heap)
        priority, turn, _seq, key, waiting = top
        waiting.alive = False
        del self._tasks[key]
        if turn > self._served.get(priority, 0):
            self._served[priority] = turn
        return key, waiting.item

    def remove(self, key: Hashable) -> object | None:
        """Take ``key`` out of the queue; its item, or None when it was not waiting."""
        waiting = self._tasks.pop(key, None)
        if waiting is None:
            return None
        waiting.alive = False
        return waiting.item

    def clear(self) -> list:
        """Empty the queue; the items that were waiting, in no particular order."""
        items = [w.item for w in self._tasks.values()]
        for waiting in self._tasks.values():
            waiting.alive = False
        self._tasks.clear()
        self._heap.clear()
        return items

    def __repr__(self) -> str:
        return f"<FairQueue {len(self._tasks)} waiting>"
