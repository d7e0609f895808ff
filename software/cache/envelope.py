"""Envelopes of an open session: the min and max of every bin, exactly, mostly undecoded.

:func:`file_envelope` answers ``n_bins`` bins over grid samples ``[start, stop)`` from the
coarsest level of the session's pyramid (:mod:`software.cache.pyramid`) that is exact for
the bins, and chooses the bin edges so that such a level exists::

    even split of [start, stop) --> bins at least a block group wide: inner edges moved to
        the nearest boundary of a MEF block group of the first channel (blocks level)
        else bins >= 2 tiles wide: inner edges moved to the nearest tile boundary of the
             coarsest tile level that fits (tiles of 1024, 256 or 64 samples)
        else the even split itself (samples: the cache blocks, reduced per bin)

A group (or tile) lying wholly inside one bin gives its min/max; what is left (a group cut
by an edge, the window's ends, a dirty group, a channel whose blocks lie elsewhere) comes
from tiles, which are read (decoded) where missing, and the samples of tiles cut by an
edge. Every value is one of the samples' own values, so the result equals ``numpy``'s
``nanmin``/``nanmax`` of ``MefReader`` data over each returned bin; a bin without any
sample is NaN.

Runs in the calling thread (a connection's serving thread); waits for reads at most
``timeout`` seconds each.
"""
from __future__ import annotations

from collections import defaultdict, deque
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from ..errors import ReaderError
from ..mef3.envelope import DIRTY, BlockEnvelope
from ..mef3.metadata import RateGroup
from .pyramid import SessionPyramid, TileGeometry, pyramid_of
from .recording import Recording

__all__ = ["MAX_GATHER_BYTES", "even_edges", "file_envelope", "reduce_bins"]

#: Largest stretch of samples one envelope holds at once (float64 bytes).
MAX_GATHER_BYTES = 64 * 2**20


def even_edges(start: int, stop: int, n_bins: int) -> np.ndarray:
    """``n_bins + 1`` edges splitting ``[start, stop)`` evenly (rounded to samples).

    Requires ``1 <= n_bins <= stop - start``; edges are strictly increasing int64.
    """
    length = stop - start
    k = np.arange(n_bins + 1, dtype=np.int64)
    if length < 2**62 // max(n_bins, 1):
        return start + (k * length + n_bins // 2) // n_bins
    edges = start + np.floor(k * (length / n_bins) + 0.5).astype(np.int64)
    edges[-1] = stop
    return np.maximum.accumulate(np.maximum(edges, start + k))  # strictly increasing


def reduce_bins(data: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """NaN-aware min and max of ``data`` (rows x samples) per bin: (2, rows, bins) float64.

    ``edges`` are strictly increasing offsets into the samples, from 0 to their count.
    """
    starts = np.asarray(edges[:-1], dtype=np.intp)
    out = np.empty((2, data.shape[0], len(starts)))
    if data.shape[1] == 0 or len(starts) == 0:
        out[:] = np.nan
        return out
    out[0] = np.fmin.reduceat(data, starts, axis=1)
    out[1] = np.fmax.reduceat(data, starts, axis=1)
    return out


class _Bins:
    """Pieces of bins gathered, folded into one (2, rows, bins) array."""

    def __init__(self, rows: int, bins: int) -> None:
        self.shape = (rows, bins)
        self._parts: list[tuple] = []      # (row, bins, lows, highs): bins may repeat
        self._runs: list[tuple] = []       # (rows, bins, lows, highs): distinct bins

    def add(self, row: int, bins: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> None:
        """Values of one row; several may fall in one bin."""
        if len(bins):
            self._parts.append((np.full(len(bins), row, np.intp), bins, lows, highs))

    def add_runs(self, rows, bins: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> None:
        """Values of several rows (rows x len(bins)) in distinct, ascending ``bins``."""
        if len(bins):
            self._runs.append((np.asarray(rows, np.intp), bins, lows, highs))

    def result(self) -> np.ndarray:
        out = np.full((2,) + self.shape, np.nan)
        for rows, bins, lows, highs in self._runs:
            at = np.ix_(rows, bins)
            out[0][at] = np.fmin(out[0][at], lows)
            out[1][at] = np.fmax(out[1][at], highs)
        if self._parts:
            rows, bins, lows, highs = (np.concatenate([p[i] for p in self._parts])
                                       for i in range(4))
            np.fmin.at(out[0], (rows, bins), lows)
            np.fmax.at(out[1], (rows, bins), highs)
        return out

    def fold(self, rows, where: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> None:
        """Values of several rows (rows x len(where)) in bins ``where`` (ascending)."""
        if len(where):
            starts = np.concatenate(([0], np.flatnonzero(np.diff(where)) + 1))
            self.add_runs(rows, where[starts], np.fmin.reduceat(lows, starts, axis=1),
                          np.fmax.reduceat(highs, starts, axis=1))


def _bin_of(edges: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, positions, side="right") - 1


def _window(env: BlockEnvelope, stop_max: np.ndarray, start: int, stop: int) -> slice:
    """The groups that may meet ``[start, stop)``."""
    i0 = int(np.searchsorted(stop_max, start, side="right"))
    i1 = int(np.searchsorted(env.start, stop, side="left"))
    return slice(i0, max(i0, i1))


def _snap(nominal: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray | None:
    """Inner edges lying strictly inside ``[lows, highs)`` move to the nearer end."""
    inner = nominal[1:-1]
    inside = (lows < inner) & (inner < highs)
    moved = np.where(inner - lows <= highs - inner, lows, highs)
    edges = nominal.copy()
    edges[1:-1] = np.where(inside, moved, inner)
    return edges if np.all(np.diff(edges) > 0) else None


def _snap_to_groups(nominal: np.ndarray, env: BlockEnvelope) -> np.ndarray | None:
    if len(env) == 0:
        return nominal
    i = np.clip(np.searchsorted(env.start, nominal[1:-1], side="right") - 1, 0, len(env) - 1)
    return _snap(nominal, env.start[i], env.stop[i])


def _snap_to_tiles(nominal: np.ndarray, geo: TileGeometry) -> np.ndarray | None:
    inner = nominal[1:-1]
    base = inner // geo.block * geo.block
    j = np.clip((inner - base) // geo.tile, 0, geo.per_block - 1)
    lows = base + geo.rel_start[j]
    highs = np.minimum(base + geo.rel_stop[j], geo.n_samples)
    return _snap(nominal, lows, highs)


def _assembled(future, start: int, stop: int, timeout: float) -> np.ndarray:
    """The samples of a ``Recording.gather`` future, waited for at most ``timeout`` s."""
    try:
        blocks = future.result(timeout=timeout)
    except FutureTimeout:
        raise ReaderError(f"no data after {timeout:g} s for samples [{start}, {stop}) of "
                          f"the envelope; the reader processes are overloaded. Try again "
                          f"or ask for a shorter stretch.") from None
    return blocks.assemble()


def _from_blocks(bins: _Bins, rows: list[int], envs: list[BlockEnvelope],
                 stop_max: np.ndarray, ufacts: list[float],
                 edges: np.ndarray) -> list[tuple[int, int, int]]:
    """Rows whose groups lie alike: groups wholly inside one bin -> bins; the rest (cut by
    an edge or the window, or dirty) -> needs ``(row, lo, hi)``."""
    start, stop = int(edges[0]), int(edges[-1])
    lead = envs[0]
    w = _window(lead, stop_max, start, stop)
    gs, ge = lead.start[w], lead.stop[w]
    meets = np.nonzero((ge > start) & (gs < stop) & (ge > gs))[0]
    gs, ge = gs[meets], ge[meets]
    first, last = _bin_of(edges, gs), _bin_of(edges, ge - 1)
    whole = (gs >= start) & (ge <= stop) & (first == last)
    cols = w.start + meets[whole]
    low = np.stack([env.low[cols] for env in envs])
    high = np.stack([env.high[cols] for env in envs])
    dirty = low == DIRTY
    factor = np.asarray(ufacts, dtype=np.float64)[:, None]
    lows = low.astype(np.float64) * factor            # as read_grid: float64(raw) * ufact
    highs = high.astype(np.float64) * factor
    flip = factor[:, 0] < 0
    lows[flip], highs[flip] = highs[flip], lows[flip].copy()
    lows[dirty] = np.nan
    highs[dirty] = np.nan
    bins.fold(rows, first[whole], lows, highs)
    needs = [(row, max(int(a), start), min(int(b), stop)) for a, b in
             zip(gs[~whole].tolist(), ge[~whole].tolist()) for row in rows]
    for k, i in zip(*np.nonzero(dirty)):
        needs.append((rows[k], int(gs[whole][i]), int(ge[whole][i])))
    return needs


def _layouts(envelopes: dict, names) -> list[list[int]]:
    """Rows grouped by identical group spans (channels written alike share them)."""
    found: list[list[int]] = []
    for row, name in enumerate(names):
        env = envelopes[name]
        for rows in found:
            other = envelopes[names[rows[0]]]
            if other is env or (len(other) == len(env) and np.array_equal(
                    other.start, env.start) and np.array_equal(other.stop, env.stop)):
                rows.append(row)
                break
        else:
            found.append([row])
    return found


def _merged(needs: list[tuple[int, int, int]]) -> dict[int, list[list[int]]]:
    by_row: dict[int, list[list[int]]] = defaultdict(list)
    for row, lo, hi in sorted(needs):
        ranges = by_row[row]
        if ranges and lo <= ranges[-1][1]:
            ranges[-1][1] = max(ranges[-1][1], hi)
        else:
            ranges.append([lo, hi])
    return by_row


def _runs(blocks: list[int], most: int) -> list[tuple[int, int]]:
    """Consecutive blocks as ``(first, last)`` runs of at most ``most`` blocks."""
    runs: list[list[int]] = []
    for b in blocks:
        if runs and b == runs[-1][1] + 1 and b - runs[-1][0] < most:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return [(a, b) for a, b in runs]


def _read_missing(recording: Recording, pyramid: SessionPyramid, names, group: RateGroup,
                  level: int, entries: list, missing: dict[int, set[int]],
                  timeout: float) -> None:
    """Decode the blocks whose tiles are missing (two stretches in flight at a time), fill
    the pyramid, and patch the entries' tile copies."""
    size = pyramid.geometry(group).block
    wanted = sorted(set().union(*missing.values())) if missing else []
    rows_all = sorted(r for r in missing if missing[r])
    most = max(1, MAX_GATHER_BYTES // (8 * size * max(1, len(rows_all))))
    runs = iter(_runs(wanted, most))
    in_flight: deque = deque()

    def submit() -> None:
        run = next(runs, None)
        if run is not None:
            b0, b1 = run
            rows = [r for r in rows_all if any(b0 <= b <= b1 for b in missing[r])]
            in_flight.append((b0, b1, rows, recording.gather(
                tuple(names[r] for r in rows), group, b0 * size,
                min((b1 + 1) * size, group.n_samples))))

    submit()
    submit()
    while in_flight:
        b0, b1, rows, fut = in_flight.popleft()
        data = _assembled(fut, b0 * size, (b1 + 1) * size, timeout)
        submit()
        lows, highs = pyramid.fill([names[r] for r in rows], group, b0, data)[level]
        del data
        for row, _lo, _hi, e0, e_lows, e_highs, e_filled in entries:
            a, b = max(b0, e0), min(b1, e0 + len(e_filled) - 1)
            if row in rows and a <= b:
                k = rows.index(row)
                e_lows[a - e0:b - e0 + 1] = lows[k, a - b0:b - b0 + 1]
                e_highs[a - e0:b - e0 + 1] = highs[k, a - b0:b - b0 + 1]
                e_filled[a - e0:b - e0 + 1] = True


def _resolve(bins: _Bins, recording: Recording, pyramid: SessionPyramid, names,
             group: RateGroup, level: int, edges: np.ndarray, needs, timeout: float) -> None:
    """Answer the needs from tiles of ``level`` (read where missing) and the samples of
    tiles cut by an edge."""
    geo = pyramid.geometry(group, level)
    size = geo.block
    entries = []          # (row, lo, hi, b0, lows, highs, filled)
    missing: dict[int, set[int]] = defaultdict(set)
    for row, ranges in _merged(needs).items():
        for lo, hi in ranges:
            b0, b1 = lo // size, (hi - 1) // size
            lows, highs, filled = pyramid.tiles(names[row], group, b0, b1, level)
            entries.append((row, lo, hi, b0, lows, highs, filled))
            if not filled.all():
                missing[row].update((b0 + np.nonzero(~filled)[0]).tolist())
    if missing:
        _read_missing(recording, pyramid, names, group, level, entries, missing, timeout)
    same_range: dict[tuple, list] = defaultdict(list)   # rows needing the same stretch
    for entry in entries:
        same_range[(entry[1], entry[2], entry[3], len(entry[6]))].append(entry)
    cut: dict[tuple[int, int], list[int]] = defaultdict(list)   # (lo, hi) -> rows
    for (lo, hi, b0, nb), group_entries in same_range.items():
        ts, te = (x.ravel() for x in geo.spans(b0, b0 + nb - 1))
        valid = te > ts
        first, last = _bin_of(edges, ts), _bin_of(edges, te - 1)
        inside = valid & (ts >= lo) & (te <= hi) & (first == last)
        cols = np.nonzero(inside)[0]
        rows = [e[0] for e in group_entries]
        filled = np.stack([np.repeat(e[6], geo.per_block)[cols] for e in group_entries])
        lows = np.stack([e[4].ravel()[cols] for e in group_entries])
        highs = np.stack([e[5].ravel()[cols] for e in group_entries])
        if not filled.all():          # tiles lost meanwhile: their samples are read below
            lows[~filled] = np.nan
            highs[~filled] = np.nan
        bins.fold(rows, first[cols], lows, highs)   # ascending: tiles lie in grid order
        partial = valid & (ts < hi) & (te > lo) & ~inside
        for a, b in zip(np.maximum(ts[partial], lo).tolist(),
                        np.minimum(te[partial], hi).tolist()):
            cut[(a, b)].extend(rows)
        for k in np.nonzero(~filled.all(axis=0))[0]:
            cut[(int(ts[cols[k]]), int(te[cols[k]]))].extend(
                rows[i] for i in np.nonzero(~filled[:, k])[0])
    for (a, b), rows in cut.items():
        data = _assembled(recording.gather(tuple(names[r] for r in rows), group, a, b),
                          a, b, timeout)
        where = _bin_of(edges, np.arange(a, b))
        for k, row in enumerate(rows):
            bins.add(row, where, data[k], data[k])


def _from_samples(recording: Recording, names, group: RateGroup, edges: np.ndarray,
                  timeout: float) -> np.ndarray:
    """Bins narrower than two tiles: the samples themselves, a stretch at a time."""
    out = np.empty((2, len(names), len(edges) - 1))
    most = max(1, MAX_GATHER_BYTES // (8 * len(names)))
    k0 = 0
    while k0 < len(edges) - 1:
        k1 = int(np.searchsorted(edges, edges[k0] + most, side="right")) - 1
        k1 = min(max(k1, k0 + 1), len(edges) - 1)
        a, b = int(edges[k0]), int(edges[k1])
        data = _assembled(recording.gather(tuple(names), group, a, b), a, b, timeout)
        out[:, :, k0:k1] = reduce_bins(data, edges[k0:k1 + 1] - edges[k0])
        k0 = k1
    return out


def file_envelope(recording: Recording, names, group: RateGroup, start: int, stop: int,
                  n_bins: int, timeout: float) -> tuple[np.ndarray, np.ndarray]:
    """The envelope of grid samples ``[start, stop)`` of ``names`` in about ``n_bins`` bins.

    Parameters
    ----------
    recording : Recording
        The open session.
    names : sequence of str
        Channels of one rate.
    group : RateGroup
        Their grid.
    start, stop : int
        ``0 <= start < stop <= group.n_samples``.
    n_bins : int
        ``1 <= n_bins <= stop - start``.
    timeout : float
        Seconds to wait for each read.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(2, len(names), n_bins)`` float64 (``[0]`` minima, ``[1]`` maxima, NaN for a
        bin without data) and the ``n_bins + 1`` int64 edges: bin ``k`` is grid samples
        ``[edges[k], edges[k + 1])``; ``edges[0] == start``, ``edges[-1] == stop``.
    """
    names = tuple(names)
    pyramid = pyramid_of(recording)
    nominal = even_edges(start, stop, n_bins)
    width = (stop - start) / n_bins
    envelopes = pyramid.blocks(timeout)
    lead = envelopes[names[0]]
    w = _window(lead, pyramid.stop_max(names[0], lead), start, stop)
    span = int((lead.stop[w] - lead.start[w]).max()) if w.stop > w.start else 0
    edges = _snap_to_groups(nominal, lead) if width >= span else None
    bins = _Bins(len(names), n_bins)
    if edges is not None:
        needs = []
        for rows in _layouts(envelopes, names):
            first = names[rows[0]]
            needs += _from_blocks(bins, rows, [envelopes[names[r]] for r in rows],
                                  pyramid.stop_max(first, envelopes[first]),
                                  [recording.info.channel(names[r]).ufact for r in rows],
                                  edges)
        _resolve(bins, recording, pyramid, names, group, 0, edges, needs, timeout)
        return bins.result(), edges
    for level in reversed(range(pyramid.levels)):   # the coarsest tiles that fit the bins
        geo = pyramid.geometry(group, level)
        edges = _snap_to_tiles(nominal, geo) if width >= 2 * geo.tile else None
        if edges is not None:
            needs = [(row, start, stop) for row in range(len(names))]
            _resolve(bins, recording, pyramid, names, group, level, edges, needs, timeout)
            return bins.result(), edges
    return _from_samples(recording, names, group, nominal, timeout), nominal
