"""One opened MEF3 session, shared by every connection that opened it.

A request for grid samples ``[start, stop)`` of some channels is cut into fixed blocks of
``block_samples``; each ``(channel, block)`` is looked up in the shared cache under one
lock. Blocks that nobody reads yet are grouped into reader tasks: runs of consecutive
blocks of up to ``run_seconds``, split by channel into one task per reader process, so
that every reader works at once and pymef's fixed cost per call (about 0.3 ms per channel)
is paid once per run rather than once per block::

    gather(names, start, stop) --> BlockCache.claim_many((channel, block) keys)
        cached ------------------------------------------------> array
        in flight ----> promote its task to demand priority --> wait on the block's future
        new -> runs x channel chunks -> ReaderPool.read(priority)
                                           --done--> cache.fulfil_many(rows)
    every block there --> Blocks --> assemble(out) in the caller's thread (a view builds
                                     an answer straight into its shared-memory area)

Reading ahead (:meth:`Recording.prefetch`) claims only blocks neither cached nor in
flight, at a lower priority than any read a client waits for.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Sequence
from concurrent.futures import Future

import numpy as np

from ..mef3.metadata import RateGroup, SessionInfo
from ..mef3.samples import STORED_NAN, scale_into
from ..readers.pool import DEMAND, ReaderPool
from .blocks import BlockCache
from .records import SessionRecords

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
    block_seconds : float
        Length of a cache block in seconds.
    run_seconds : float
        Longest stretch one reader task decodes, in seconds (whole blocks, at least one).
    """

    #: Called as ``listener(names, group, first_block, data)`` with every read that lands
    #: (in the reader pool's result thread), or None.
    decoded_listener = None

    def __init__(self, path: str, password: str | None, info: SessionInfo, pool: ReaderPool,
                 cache: BlockCache, block_seconds: float = 10.0,
                 run_seconds: float = 60.0) -> None:
        self.path = path
        self._password = password
        self.info = info
        self._pool = pool
        self._cache = cache
        self.block_seconds = float(block_seconds)
        self.run_blocks = max(1, int(round(float(run_seconds) / self.block_seconds)))
        self.groups = {c.fs: info.group(c.fs) for c in info.channels}
        self._key = object()  # identity of this opening in the shared cache
        #: The files' identity when opened (``software.cache.warm.session_identity``):
        #: a session kept warm is reused only while it is unchanged. None: never reused.
        self.identity: tuple | None = None
        self._tasks: dict[Hashable, Future] = {}  # block key -> its reader task, in flight
        self._factor_columns: dict[tuple[str, ...], np.ndarray] = {}
        #: keys of blocks holding STORED_NAN (MEF3 NaN or no data): the only ones an
        #: answer must look through for NaN (set before the block is cached)
        self._nan_blocks: set = set()
        self._closed = False
        self._lock = threading.Lock()
        #: The session's records, read once by a reader process on first use.
        self.records = SessionRecords(pool, path, password)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def block_samples(self, group: RateGroup) -> int:
        """Samples per cache block on the grid of ``group``."""
        return max(1, int(round(self.block_seconds * group.fs)))

    def gather(self, names: Sequence[str], group: RateGroup, start: int,
               stop: int) -> Future:
        """The blocks of ``[start, stop)`` of ``names``: a future of :class:`Blocks`.

        Reads the blocks nobody is reading yet (at demand priority) and moves reads ahead
        that it needs up. The future is already done when every block was cached; the
        caller assembles the answer (:meth:`Blocks.assemble`) in a thread of its choice.
        """
        names = tuple(names)
        size = self.block_samples(group)
        first = start // size
        keys = [(self._key, name, block) for block in range(first, (stop - 1) // size + 1)
                for name in names]
        values, mine = self._cache.claim_many(keys)
        if mine:
            self._read([keys[i] for i in mine], group, size, DEMAND)
        result: Future = Future()
        waits = [v for v in values if type(v) is Future and not v.done()]
        factors = self._factors(names)
        if not waits:
            _resolve(result, Blocks(len(names), start, stop, size, first, values, factors,
                                    self._nan_keys(keys)))
            return result
        claimed = set(mine)  # their tasks were just submitted at demand priority
        self._promote(keys[i] for i, v in enumerate(values)
                      if type(v) is Future and not v.done() and i not in claimed)
        remaining = [len(waits)]
        lock = threading.Lock()

        def one_done(_f: Future) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                _resolve(result, Blocks(len(names), start, stop, size, first, values,
                                        factors, self._nan_keys(keys)))

        for fut in waits:
            fut.add_done_callback(one_done)
        return result

    def _nan_keys(self, keys: list) -> tuple[int, ...]:
        """Positions in ``keys`` of blocks that hold STORED_NAN (usually none)."""
        nan_blocks = self._nan_blocks
        if not nan_blocks:
            return ()
        return tuple(i for i, key in enumerate(keys) if key in nan_blocks)

    def _factors(self, names: tuple[str, ...]) -> np.ndarray:
        """The channels' conversion factors as a float64 column (cached per selection)."""
        factors = self._factor_columns.get(names)
        if factors is None:
            factors = np.array([[self.info.channel(n).ufact] for n in names],
                               dtype=np.float64)
            if len(self._factor_columns) > 64:  # selections come and go
                self._factor_columns.clear()
            self._factor_columns[names] = factors
        return factors

    def prefetch(self, names: Sequence[str], group: RateGroup, start: int, stop: int,
                 priority: int = 1) -> None:
        """Start reading the blocks of ``[start, stop)`` that are neither cached nor in flight.

        Parameters
        ----------
        names, group, start, stop
            As for :meth:`gather`; the range is clipped to the recording.
        priority : int
            Reader priority (>= 1; reads a client waits for have 0). Use the distance
            ahead of the client, so that nearer data is read first.
        """
        start, stop = max(0, start), min(stop, group.n_samples)
        if start >= stop or self._closed:
            return
        size = self.block_samples(group)
        keys = [(self._key, name, block) for block in range(start // size, (stop - 1) // size + 1)
                for name in names]
        claimed = self._cache.claim_absent(keys)
        if claimed:
            self._read(claimed, group, size, max(1, int(priority)))

    def _promote(self, keys) -> None:
        """Move the waiting reader tasks of ``keys`` ahead of every read-ahead."""
        with self._lock:
            tasks = {id(t): t for t in (self._tasks.get(k) for k in keys) if t is not None}
        for task in tasks.values():
            self._pool.promote(task, DEMAND)

    def _read(self, keys: list, group: RateGroup, size: int, priority: int) -> None:
        """Read the claimed block ``keys``: runs of blocks x channel chunks, one task each."""
        by_block: dict[int, list[str]] = {}
        for _, name, block in keys:
            by_block.setdefault(block, []).append(name)
        runs: list[tuple[int, int, tuple[str, ...]]] = []  # (first block, last block, names)
        for block in sorted(by_block):
            names = tuple(by_block[block])
            if runs and runs[-1][1] == block - 1 and runs[-1][2] == names \
                    and block - runs[-1][0] < self.run_blocks:
                runs[-1] = (runs[-1][0], block, names)
            else:
                runs.append((block, block, names))
        workers = self._pool.workers
        for first, last, names in runs:
            n_chunks = min(workers, len(names))
            bounds = [len(names) * i // n_chunks for i in range(n_chunks + 1)]
            for lo, hi in zip(bounds, bounds[1:]):
                self._read_task(names[lo:hi], group, first, last, size, priority)

    def _read_task(self, names: tuple[str, ...], group: RateGroup, first: int, last: int,
                   size: int, priority: int) -> None:
        start = first * size
        stop = min((last + 1) * size, group.n_samples)
        keys = [(self._key, name, block) for block in range(first, last + 1) for name in names]

        def store(data) -> None:  # runs in the reader pool's result thread
            # int32 as stored (software.mef3.samples), maybe a view of the pool's landing
            # area: the cache keeps copies
            items, marked = [], []
            for block in range(first, last + 1):
                lo = block * size - start
                hi = min(lo + size, stop - start)
                for row, name in enumerate(names):
                    items.append(((self._key, name, block), data[row, lo:hi].copy()))
                if hi > lo:  # the marker is the smallest int32: a row holds it iff its min
                    for row in np.nonzero(data[:, lo:hi].min(axis=1) == STORED_NAN)[0]:
                        marked.append((self._key, names[row], block))
            if marked:
                with self._lock:
                    self._nan_blocks.update(marked)
            self._cache.fulfil_many(items)
            listener = self.decoded_listener  # the min/max pyramid (software.cache.pyramid)
            if listener is not None:  # it takes physical units: scaled as answers are
                listener(names, group, first,
                         scale_into(data, self._factors(names), np.empty(data.shape)))
            if self._closed:  # closed while reading: waiters got their data; keep nothing
                self._cache.discard(key for key, _ in items)
            logger.debug("blocks %d-%d of %s read (%d channels)", first, last, self.path,
                         len(names))

        try:
            task = self._pool.read(self.path, self._password, names, start, stop, priority,
                                   consume=store, stored=True)
        except Exception as exc:  # pool closed
            self._cache.fail_many(keys, exc)
            return
        with self._lock:
            for key in keys:
                self._tasks[key] = task

        def done(f: Future) -> None:  # runs in the reader pool's result thread
            with self._lock:
                for key in keys:
                    self._tasks.pop(key, None)
            exc = f.exception()
            if exc is not None:
                self._cache.fail_many(keys, exc)

        task.add_done_callback(done)

    def close(self) -> None:
        """Drop this session's blocks from the cache and its handles in the readers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        dropped = self._cache.discard_where(lambda k: k[0] is self._key)
        with self._lock:
            self._nan_blocks.clear()
        self._pool.forget(self.path)
        logger.info("closed %s (%d cached blocks dropped)", self.path, dropped)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Recording {self.path!r} {state}, {len(self.info.channels)} channels>"


class Blocks:
    """The blocks of one request, every one read: :meth:`assemble` builds the answer once.

    Holds the cached block arrays (never their read futures: those refer back to the
    request through their callbacks, and an answer would then live until the cyclic
    garbage collector ran; measured: ~17 assembled 7.5 MiB answers alive during a pass).
    The blocks hold int32 samples as MEF3 stores them (:mod:`software.mef3.samples`):
    assembling casts them into the float64 answer, multiplies each row by its channel's
    factor (``MefReader``'s own ``float64(stored) * ufact``, so bit-equal) and sets NaN
    where a block that holds the marker has it.
    """

    __slots__ = ("shape", "_start", "_size", "_first", "_values", "_factors", "_nan_at")

    def __init__(self, n: int, start: int, stop: int, size: int, first: int,
                 values: list, factors: np.ndarray, nan_at: tuple[int, ...] = ()) -> None:
        self.shape = (n, stop - start)
        self._start, self._size, self._first = start, size, first
        self._values = values
        self._factors = factors
        self._nan_at = nan_at   # positions in values of blocks holding the marker

    def assemble(self, out=None) -> np.ndarray:
        """The float64 answer, built into ``out(shape)`` if that gives an array."""
        n, length = self.shape
        dest = out(self.shape) if out is not None else None
        if dest is None:
            dest = np.empty(self.shape, dtype=np.float64)
        values, start, size, factors = self._values, self._start, self._size, self._factors
        stop = start + length
        if len(values) == n and dest.flags.c_contiguous:  # within one block: end to end
            a = start - self._first * size
            # concatenate skips np.stack's per-row expand_dims; it casts int32 -> float64
            np.concatenate([v[a:a + length] for v in values], out=dest.reshape(-1))
            np.multiply(dest, factors, out=dest)
        else:
            for i in range(0, len(values), n):   # one block of every channel at a time
                block = self._first + i // n
                lo = max(start, block * size)
                hi = min(stop, (block + 1) * size)
                a, b = lo - block * size, hi - block * size
                part = dest[:, lo - start:hi - start]
                np.stack([v[a:b] for v in values[i:i + n]], out=part)
                np.multiply(part, factors, out=part)   # while the block is in the cache
        for i in self._nan_at:
            block = self._first + i // n
            lo = max(start, block * size)
            hi = min(stop, (block + 1) * size)
            a, b = lo - block * size, hi - block * size
            row = dest[i % n, lo - start:hi - start]
            row[values[i][a:b] == STORED_NAN] = np.nan
        values.clear()  # the cache keeps the blocks it still wants
        return dest


def _resolve(result: Future, blocks: Blocks) -> None:
    """Complete ``result`` with ``blocks`` once their reads are done (or with an error)."""
    values = blocks._values
    try:
        values[:] = [v.result() if type(v) is Future else v for v in values]
    except BaseException as exc:  # noqa: BLE001 - a failed read: the caller hears of it
        values.clear()
        result.set_exception(exc)
        return
    result.set_result(blocks)

