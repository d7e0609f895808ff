"""A byte-bounded LRU cache of blocks, with one future per block being read.

Keys are ``(session_key, channel_name, block_index)``: a block read once serves every
channel selection and every segment size. The cache does no I/O: callers claim the
blocks they will load, load them elsewhere, then :meth:`BlockCache.fulfil` them; later
readers of a claimed block wait on the same future.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from concurrent.futures import Future

import numpy as np

logger = logging.getLogger(__name__)


class BlockCache:
    """LRU cache bounded in bytes, shared by every connection and every open file.

    Parameters
    ----------
    max_bytes : int
        Budget for the arrays held; the least recently used are dropped beyond it.

    Notes
    -----
    Thread-safe. Futures are completed outside the lock, so their callbacks may call back
    into the cache.
    """

    def __init__(self, max_bytes: int) -> None:
        if int(max_bytes) < 0:
            raise ValueError(f"max_bytes={max_bytes!r} must be >= 0")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._inflight: dict[Hashable, Future] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def lookup(self, key: Hashable) -> np.ndarray | Future | None:
        """Return the cached array, the future of a read in flight, or ``None``.

        Counts a hit when the array is cached, a miss otherwise.
        """
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                self.hits += 1
                return value
            self.misses += 1
            return self._inflight.get(key)

    def claim(self, key: Hashable) -> tuple[Future, bool]:
        """Return the future for ``key`` and whether the caller must load it.

        Counts a hit when the block is cached and a miss otherwise (in flight or not).

        Returns
        -------
        (Future, bool)
            The block's future (already done when cached) and ``True`` when no read of
            it is in flight yet, in which case the caller must :meth:`fulfil` or
            :meth:`fail` it.
        """
        (value,), mine = self.claim_many((key,))
        if isinstance(value, Future):
            return value, bool(mine)
        fut: Future = Future()
        fut.set_result(value)
        return fut, False

    def claim_many(self, keys: Iterable[Hashable]) -> tuple[list, list[int]]:
        """Look up or claim many blocks under one lock acquisition.

        Counts a hit per cached key and a miss per other key.

        Returns
        -------
        values : list
            Per key, in order: the cached array, or the future of its read (in flight
            already, or claimed now).
        mine : list of int
            Positions of the keys claimed by this call: the caller must :meth:`fulfil`
            or :meth:`fail` each of them.
        """
        values: list = []
        mine: list[int] = []
        misses = 0
        data, inflight = self._data, self._inflight
        with self._lock:
            for i, key in enumerate(keys):
                value = data.get(key)
                if value is not None:
                    data.move_to_end(key)
                    values.append(value)
                    continue
                misses += 1
                fut = inflight.get(key)
                if fut is None:
                    fut = Future()
                    fut.set_running_or_notify_cancel()
                    inflight[key] = fut
                    mine.append(i)
                values.append(fut)
            self.hits += len(values) - misses
            self.misses += misses
        return values, mine

    def claim_absent(self, keys: Iterable[Hashable]) -> list[Hashable]:
        """Claim the keys that are neither cached nor in flight (for reading ahead).

        Cached keys become most recently used; nothing is counted as a hit or miss.

        Returns
        -------
        list
            The keys claimed: the caller must :meth:`fulfil` or :meth:`fail` each.
        """
        claimed = []
        data, inflight = self._data, self._inflight
        with self._lock:
            for key in keys:
                if key in data:
                    data.move_to_end(key)
                elif key not in inflight:
                    fut: Future = Future()
                    fut.set_running_or_notify_cancel()
                    inflight[key] = fut
                    claimed.append(key)
        return claimed

    def fulfil(self, key: Hashable, value: np.ndarray) -> None:
        """Store a loaded block and complete its future."""
        self.fulfil_many(((key, value),))

    def fulfil_many(self, items: Iterable[tuple[Hashable, np.ndarray]]) -> None:
        """Store loaded blocks and complete their futures (one lock acquisition)."""
        done = []
        with self._lock:
            for key, value in items:
                value.flags.writeable = False
                fut = self._inflight.pop(key, None)
                self._store(key, value)
                if fut is not None:
                    done.append((fut, value))
        for fut, value in done:
            if not fut.done():
                fut.set_result(value)

    def fail(self, key: Hashable, exc: BaseException) -> None:
        """Complete a claimed block's future with ``exc``; nothing is cached."""
        self.fail_many((key,), exc)

    def fail_many(self, keys: Iterable[Hashable], exc: BaseException) -> None:
        """Complete claimed blocks' futures with ``exc``; nothing is cached."""
        with self._lock:
            futures = [self._inflight.pop(key, None) for key in keys]
        for fut in futures:
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    def _store(self, key: Hashable, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        old = self._data.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._data[key] = value
        self.nbytes += value.nbytes
        while self.nbytes > self.max_bytes:
            _, dropped = self._data.popitem(last=False)
            self.nbytes -= dropped.nbytes
            self.evictions += 1

    def discard(self, keys: Iterable[Hashable]) -> None:
        """Drop the given keys if cached (reads in flight complete normally)."""
        with self._lock:
            for key in keys:
                value = self._data.pop(key, None)
                if value is not None:
                    self.nbytes -= value.nbytes

    def discard_where(self, predicate) -> int:
        """Drop every cached key for which ``predicate(key)`` is true; return how many."""
        with self._lock:
            doomed = [k for k in self._data if predicate(k)]
            for key in doomed:
                self.nbytes -= self._data.pop(key).nbytes
        return len(doomed)

    def stats(self) -> tuple[tuple[str, int], ...]:
        """Counters as ``(name, value)`` pairs."""
        with self._lock:
            return (("hits", self.hits), ("misses", self.misses),
                    ("evictions", self.evictions), ("entries", len(self._data)),
                    ("bytes", self.nbytes), ("max_bytes", self.max_bytes),
                    ("in_flight", len(self._inflight)))

    def __repr__(self) -> str:
        return (f"<BlockCache {len(self._data)} blocks, {self.nbytes}/{self.max_bytes} bytes, "
                f"hits={self.hits} misses={self.misses}>")
