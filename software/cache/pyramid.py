"""The min/max pyramid of one open session, shared by every view of it (server process).

Three levels answer :func:`~software.cache.envelope.file_envelope`, coarse to fine::

    MEF blocks   every block's stored min/max, read from the block tables by a reader
                 (:mod:`software.mef3.envelope`) the first time an envelope is asked for:
                 24 bytes per group of blocks, at most ``max_groups`` groups a session
    tiles        min/max of every 1024, 256 and 64 grid samples of a cache block (three
                 levels, ``tile_samples``), filled from samples as they are decoded (any
                 client's read, or an envelope's own), kept in chunks of CHUNK_BLOCKS cache
                 blocks, least recently used dropped beyond ``tile_budget`` bytes
    samples      the cache blocks themselves (Recording.gather)

Tiles are placed per cache block: tile ``j`` of block ``b`` covers grid samples
``[b*S + j*T, b*S + min((j+1)*T, S))`` (``S`` samples a cache block, ``T`` a tile of the
level; the last tile of a block is shorter when ``T`` does not divide ``S``).

Threads: :meth:`SessionPyramid.fill` runs in the reader pool's result thread (after a read
landed) and in serving threads; everything shared is under one lock, reductions outside it.
"""
from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from ..errors import ReaderError, ServiceClosedError
from ..mef3.envelope import BlockEnvelope
from ..mef3.metadata import RateGroup
from .recording import Recording

__all__ = ["CHUNK_BLOCKS", "SessionPyramid", "TileGeometry", "pyramid_of"]

logger = logging.getLogger(__name__)

#: Cache blocks whose tiles are kept (and dropped) together.
CHUNK_BLOCKS = 64
#: Defaults: block groups kept per session (24 bytes each), grid samples per tile of each
#: level (finest first), bytes of tiles kept per session.
MAX_GROUPS = 1_000_000
TILE_SAMPLES = (64, 256, 1024)
TILE_BUDGET = 64 * 2**20


class TileGeometry:
    """Where the tiles of a cache block lie: ``rel_start``/``rel_stop`` within a block.

    Parameters
    ----------
    block_samples : int
        ``S``: grid samples of a cache block.
    tile_samples : int
        ``T``: grid samples of a tile (at most ``S``).
    n_samples : int
        Length of the grid (tiles are cut there).
    """

    def __init__(self, block_samples: int, tile_samples: int, n_samples: int) -> None:
        self.block = int(block_samples)
        self.tile = max(1, min(int(tile_samples), self.block))
        self.n_samples = int(n_samples)
        self.per_block = -(-self.block // self.tile)
        self.rel_start = np.arange(self.per_block, dtype=np.int64) * self.tile
        self.rel_stop = np.minimum(self.rel_start + self.tile, self.block)

    def spans(self, b0: int, b1: int) -> tuple[np.ndarray, np.ndarray]:
        """Grid ``[start, stop)`` of every tile of blocks ``b0..b1`` (arrays (blocks, k))."""
        base = np.arange(b0, b1 + 1, dtype=np.int64)[:, None] * self.block
        return base + self.rel_start, np.minimum(base + self.rel_stop, self.n_samples)

    def reduce(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tile minima and maxima of whole blocks: ``data`` (rows, nb x S or less at the
        grid's end) -> two arrays (rows, nb, k); tiles past the data are NaN."""
        rows, length = data.shape
        nb = -(-length // self.block)
        lows = np.full((rows, nb, self.per_block), np.nan)
        highs = np.full((rows, nb, self.per_block), np.nan)
        whole = length // self.block
        if whole:
            shaped = data[:, :whole * self.block].reshape(rows, whole, self.block)
            lows[:, :whole] = np.fmin.reduceat(shaped, self.rel_start, axis=2)
            highs[:, :whole] = np.fmax.reduceat(shaped, self.rel_start, axis=2)
        rest = length - whole * self.block
        if rest:
            starts = self.rel_start[self.rel_start < rest]
            tail = data[:, whole * self.block:]
            lows[:, whole, :len(starts)] = np.fmin.reduceat(tail, starts, axis=1)
            highs[:, whole, :len(starts)] = np.fmax.reduceat(tail, starts, axis=1)
        return lows, highs


class SessionPyramid:
    """Block and tile minima/maxima of one :class:`~software.cache.recording.Recording`.

    Made by :func:`pyramid_of` (one per recording). Registers itself to see every read
    the recording's readers land, so tiles fill as clients read.

    Parameters
    ----------
    recording : Recording
        The open session.
    pool : ReaderPool
        Its reader processes (for the block tables).
    max_groups, tile_samples, tile_budget
        See the module constants (``tile_samples``: one size per level, finest first).
    """

    def __init__(self, recording: Recording, pool, max_groups: int = MAX_GROUPS,
                 tile_samples=TILE_SAMPLES, tile_budget: int = TILE_BUDGET) -> None:
        self._recording = weakref.ref(recording)
        self._path = recording.path
        self._password = recording._password
        self._pool = pool
        self.max_groups = int(max_groups)
        self.tile_samples = tuple(sorted(int(t) for t in tile_samples))
        self.tile_budget = int(tile_budget)
        self._lock = threading.Lock()
        self._blocks: Future | None = None
        self._stop_max: dict[str, np.ndarray] = {}
        self._geometry: dict[tuple[float, int], TileGeometry] = {}
        # (fs, level, name, chunk) -> [lows, highs, filled]
        self._chunks: OrderedDict = OrderedDict()
        self._bytes = 0
        self._builder = None
        self.tiles_filled = 0

    # ---- MEF block level ----------------------------------------------------------

    def blocks(self, timeout: float) -> dict[str, BlockEnvelope]:
        """Every channel's block groups, read once by a reader (the first call waits).

        Raises
        ------
        ReaderError
            No answer within ``timeout`` seconds (the next call asks again).
        """
        with self._lock:
            fut = self._blocks
            if fut is None:
                fut = self._blocks = self._pool.block_envelopes(self._path, self._password,
                                                                self.max_groups)
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            raise ReaderError(f"the block tables of {self._path!r} were not read within "
                              f"{timeout:g} s; the readers are busy. Try again.") from None
        except BaseException:
            with self._lock:       # a failed read is asked again next time
                if self._blocks is fut:
                    self._blocks = None
            raise

    def stop_max(self, name: str, envelope: BlockEnvelope) -> np.ndarray:
        """Running maximum of the groups' stops (sorted even where blocks overlap)."""
        got = self._stop_max.get(name)
        if got is None:
            got = self._stop_max[name] = np.maximum.accumulate(envelope.stop) \
                if len(envelope) else envelope.stop
        return got

    # ---- tile level -----------------------------------------------------------------

    @property
    def levels(self) -> int:
        """Number of tile levels."""
        return len(self.tile_samples)

    def geometry(self, group: RateGroup, level: int = 0) -> TileGeometry:
        """The tile layout of ``group``'s grid at ``level`` (0: the finest tiles)."""
        geo = self._geometry.get((group.fs, level))
        if geo is None:
            recording = self._recording()
            size = recording.block_samples(group) if recording is not None else 1
            geo = self._geometry[(group.fs, level)] = TileGeometry(
                size, self.tile_samples[level], group.n_samples)
        return geo

    def fill(self, names, group: RateGroup, first_block: int,
             data: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Store the tiles of every level of whole cache blocks ``first_block, ...`` of
        ``data`` (rows in ``names`` order, starting at the grid index of ``first_block``).

        Returns
        -------
        list of (numpy.ndarray, numpy.ndarray)
            Per level, the tiles' minima and maxima, (rows, blocks, tiles per block).
        """
        data = np.asarray(data, dtype=np.float64)
        reduced = [self.geometry(group, level).reduce(data) for level in range(self.levels)]
        nb = reduced[0][0].shape[1]
        last = first_block + nb
        with self._lock:
            for level, (lows, highs) in enumerate(reduced):
                geo = self.geometry(group, level)
                for row, name in enumerate(names):
                    b = first_block
                    while b < last:
                        chunk = self._chunk((group.fs, level, name, b // CHUNK_BLOCKS), geo)
                        hi = min(last, (b // CHUNK_BLOCKS + 1) * CHUNK_BLOCKS)
                        at = slice(b % CHUNK_BLOCKS, b % CHUNK_BLOCKS + hi - b)
                        chunk[0][at] = lows[row, b - first_block:hi - first_block]
                        chunk[1][at] = highs[row, b - first_block:hi - first_block]
                        chunk[2][at] = True
                        b = hi
            self.tiles_filled += len(names) * nb
            self._evict()
        return reduced

    def on_decoded(self, names, group: RateGroup, first_block: int, data: np.ndarray) -> None:
        """:meth:`fill` for the recording's landed reads: never raises into the read.

        Only float64 samples in physical units are taken (a read landing in another form,
        such as stored integers, leaves the tiles to the envelopes' own reads)."""
        if getattr(data, "dtype", None) != np.float64:
            return
        try:
            self.fill(names, group, first_block, data)
        except Exception:  # noqa: BLE001 - a read must not fail because of its tiles
            logger.exception("tiles of %s blocks from %d not filled", self._path, first_block)

    def _chunk(self, key: tuple, geo: TileGeometry) -> list:
        chunk = self._chunks.get(key)
        if chunk is None:
            shape = (CHUNK_BLOCKS, geo.per_block)
            chunk = self._chunks[key] = [np.full(shape, np.nan), np.full(shape, np.nan),
                                         np.zeros(CHUNK_BLOCKS, dtype=bool)]
            self._bytes += 2 * chunk[0].nbytes + CHUNK_BLOCKS
        else:
            self._chunks.move_to_end(key)
        return chunk

    def _evict(self) -> None:
        while self._bytes > self.tile_budget and len(self._chunks) > 1:
            _key, chunk = self._chunks.popitem(last=False)
            self._bytes -= 2 * chunk[0].nbytes + CHUNK_BLOCKS

    def tiles(self, name: str, group: RateGroup, b0: int, b1: int, level: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the tiles of blocks ``b0..b1`` of ``name`` at ``level``: lows, highs
        (blocks, k) and which blocks are filled (blocks,)."""
        geo = self.geometry(group, level)
        nb = b1 - b0 + 1
        lows = np.full((nb, geo.per_block), np.nan)
        highs = np.full((nb, geo.per_block), np.nan)
        filled = np.zeros(nb, dtype=bool)
        with self._lock:
            for c in range(b0 // CHUNK_BLOCKS, b1 // CHUNK_BLOCKS + 1):
                key = (group.fs, level, name, c)
                chunk = self._chunks.get(key)
                if chunk is None:
                    continue
                self._chunks.move_to_end(key)
                lo, hi = max(b0, c * CHUNK_BLOCKS), min(b1 + 1, (c + 1) * CHUNK_BLOCKS)
                src = slice(lo - c * CHUNK_BLOCKS, hi - c * CHUNK_BLOCKS)
                lows[lo - b0:hi - b0] = chunk[0][src]
                highs[lo - b0:hi - b0] = chunk[1][src]
                filled[lo - b0:hi - b0] = chunk[2][src]
        return lows, highs, filled

    # ---- building in the background ------------------------------------------------

    def build(self, names, group: RateGroup, start: int, stop: int, timeout: float):
        """Fill the tiles of ``names`` over ``[start, stop)`` in a background thread (a
        build already running stops first); returns its :class:`TileBuilder`."""
        from .builder import TileBuilder  # one job, one module

        recording = self._recording()
        if recording is None or recording.closed:
            raise ServiceClosedError(f"{self._path!r} was closed; open it again")
        builder = TileBuilder(recording, self, names, group, start, stop, timeout)
        with self._lock:
            old, self._builder = self._builder, builder
        if old is not None:
            old.close()
        return builder.start()

    def close(self) -> None:
        """Stop a background build (idempotent); the levels stay until the recording goes."""
        with self._lock:
            builder, self._builder = self._builder, None
        if builder is not None:
            builder.close()

    def __enter__(self) -> SessionPyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def tile_bytes(self) -> int:
        """Bytes of tiles kept."""
        return self._bytes

    def __repr__(self) -> str:
        state = "blocks read" if self._blocks is not None and self._blocks.done() else \
            "blocks not read"
        return (f"<SessionPyramid {self._path!r} {state}, {len(self._chunks)} tile chunks, "
                f"{self._bytes} bytes>")


_pyramids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_pyramids_lock = threading.Lock()


def pyramid_of(recording: Recording) -> SessionPyramid:
    """The pyramid of ``recording``, made on first use (it lives as long as the recording).

    From then on every read the recording's readers land fills its tiles.
    """
    with _pyramids_lock:
        pyramid = _pyramids.get(recording)
        if pyramid is None:
            pyramid = _pyramids[recording] = SessionPyramid(recording, recording._pool)
            recording.decoded_listener = pyramid.on_decoded
    return pyramid
