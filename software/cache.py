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
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                self.hits += 1
                fut: Future = Future()
                fut.set_result(value)
                return fut, False
            self.misses += 1
            fut = self._inflight.get(key)
            if fut is not None:
                return fut, False
            fut = Future()
            fut.set_running_or_notify_cancel()
            self._inflight[key] = fut
            return fut, True

    def fulfil(self, key: Hashable, value: np.ndarray) -> None:
        """Store a loaded block and complete its future."""
        value.flags.writeable = False
        with self._lock:
            fut = self._inflight.pop(key, None)
            self._store(key, value)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def fail(self, key: Hashable, exc: BaseException) -> None:
        """Complete a claimed block's future with ``exc``; nothing is cached."""
        with self._lock:
            fut = self._inflight.pop(key, None)
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
