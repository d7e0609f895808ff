"""One opened MEF3 session, shared by every connection that opened it.

A request for grid samples ``[start, stop)`` of some channels is cut into fixed blocks of
``block_samples``; each ``(channel, block)`` is looked up in the shared cache, blocks that
nobody is reading yet are read by the reader processes (one task per block, so every
reader works at once), and the answer is assembled when the last block arrives::

    request(names, start, stop) --> claim (channel, block) keys in BlockCache
        cached / in flight -----------------> wait on the block's future
        new -> ReaderPool.read(block) --done--> cache.fulfil(rows) --> futures complete
    all block futures done --> assemble (dispatcher thread) --> request future done
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future

import numpy as np

from .cache import BlockCache
from .metadata import RateGroup, SessionInfo
from .readers import ReaderPool

logger = logging.getLogger(__name__)


class Recording:
    """An open MEF3 session: its metadata, its block layout and its reads.

    Parameters
    ----------
    path : str
        Absolute path of the session.
    password : str or None
        Level-2 password, kept only to hand to the reader processes.
    info : SessionInfo
        Metadata read by a reader process.
    pool : ReaderPool
        Shared reader processes.
    cache : BlockCache
        Shared block cache.
    assembler : concurrent.futures.Executor
        Threads that assemble answers from blocks (off the reader pool's threads).
    block_seconds : float
        Length of a cache block in seconds.
    """

    def __init__(self, path: str, password: str | None, info: SessionInfo, pool: ReaderPool,
                 cache: BlockCache, assembler: Executor, block_seconds: float = 10.0) -> None:
        self.path = path
        self._password = password
        self.info = info
        self._pool = pool
        self._cache = cache
        self._assembler = assembler
        self.block_seconds = float(block_seconds)
        self.groups = {c.fs: info.group(c.fs) for c in info.channels}
        self._key = object()  # identity of this opening in the shared cache
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def block_samples(self, group: RateGroup) -> int:
        """Samples per cache block on the grid of ``group``."""
        return max(1, int(round(self.block_seconds * group.fs)))

    def request(self, names: Sequence[str], group: RateGroup, start: int, stop: int) -> Future:
        """Grid samples ``[start, stop)`` of ``names``; a future of a float64 ndarray.

        The future is already done when every block was cached. Runs in the caller's
        thread; the answer is assembled on an assembler thread.
        """
        keys, waits = self._claim(tuple(names), group, start, stop)
        result: Future = Future()
        if all(f.done() for f in waits):
            self._complete(result, names, group, start, stop, keys)
            return result
        remaining = [len(waits)]
        lock = threading.Lock()

        def one_done(_f: Future) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                try:
                    self._assembler.submit(self._complete, result, names, group, start,
                                           stop, keys)
                except RuntimeError:  # assembler shut down: the server is closing
                    self._complete(result, names, group, start, stop, keys)

        for fut in waits:
            fut.add_done_callback(one_done)
        return result

    def prefetch(self, names: Sequence[str], group: RateGroup, start: int, stop: int) -> None:
        """Start reading the blocks of ``[start, stop)`` that are neither cached nor in flight."""
        if start < stop and not self._closed:
            self._claim(tuple(names), group, max(0, start), min(stop, group.n_samples))

    def _claim(self, names: tuple[str, ...], group: RateGroup, start: int,
               stop: int) -> tuple[list, list[Future]]:
        size = self.block_samples(group)
        keys = []
        waits: list[Future] = []
        to_read: dict[int, list[str]] = {}
        for block in range(start // size, (stop - 1) // size + 1):
            for name in names:
                key = (self._key, name, block)
                fut, mine = self._cache.claim(key)
                keys.append((key, fut))
                waits.append(fut)
                if mine:
                    to_read.setdefault(block, []).append(name)
        for block, chans in to_read.items():
            self._read_block(chans, group, block, size)
        return keys, waits

    def _read_block(self, names: list[str], group: RateGroup, block: int, size: int) -> None:
        first = block * size
        last = min(first + size, group.n_samples)
        keys = [(self._key, n, block) for n in names]
        try:
            fut = self._pool.read(self.path, self._password, names, first, last)
        except Exception as exc:  # pool closed
            for key in keys:
                self._cache.fail(key, exc)
            return

        def done(f: Future) -> None:  # runs in the reader pool's result thread
            exc = f.exception()
            if exc is not None:
                for key in keys:
                    self._cache.fail(key, exc)
                return
            data = f.result()
            for row, key in enumerate(keys):
                self._cache.fulfil(key, data[row].copy())
            logger.debug("block %d of %s read (%d channels)", block, self.path, len(names))

        fut.add_done_callback(done)

    def _complete(self, result: Future, names: Sequence[str], group: RateGroup, start: int,
                  stop: int, keys: list) -> None:
        size = self.block_samples(group)
        out = np.empty((len(names), stop - start), dtype=np.float64)
        try:
            i = 0
            for block in range(start // size, (stop - 1) // size + 1):
                lo = max(start, block * size)
                hi = min(stop, (block + 1) * size)
                for row in range(len(names)):
                    data = keys[i][1].result()
                    out[row, lo - start:hi - start] = data[lo - block * size:hi - block * size]
                    i += 1
        except BaseException as exc:
            result.set_exception(exc)
            return
        result.set_result(out)

    def close(self) -> None:
        """Drop this session's blocks from the cache and its handles in the readers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        dropped = self._cache.discard_where(lambda k: k[0] is self._key)
        self._pool.forget(self.path)
        logger.info("closed %s (%d cached blocks dropped)", self.path, dropped)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Recording {self.path!r} {state}, {len(self.info.channels)} channels>"
