"""Each MEF block's minimum and maximum, from the block tables alone (no sample decoded).

Every 56-byte ``.tidx`` entry holds its block's ``maximum_sample_value`` and
``minimum_sample_value``: stored integers, in physical units after multiplying by the
channel's ``units_conversion_factor`` (``ufact``; a negative factor swaps them). Runs in a
reader process, on the tables an open :class:`~software.mef3.access.MefSessionFile` already
checked: one pass over them in chunks (bounded memory), placing every block on the sample
grid of its rate group with exactly the arithmetic of ``MefSessionFile.read_grid``::

    .tidx entries --> grid offset (pymef's rounding), kept (pymef's end-of-window rule)
       --> groups of up to G consecutive blocks without a hole between them
       --> (start, stop, low, high) per group, low = DIRTY where the stored extremes do not
           give the samples' extremes: a block overwritten by the next one, cut at the end
           of the grid, or holding RED's NaN or infinity markers

A table whose block times do not increase is one dirty group over the whole grid (the
samples decide). The server keeps the result (:mod:`software.cache.pyramid`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .block_table import SCAN_ENTRIES, ChannelTable, memory_times
from .metadata import RateGroup

__all__ = ["DIRTY", "BlockEnvelope", "block_envelopes", "channel_envelope"]

#: ``low`` of a group whose stored extremes cannot be used (the smallest int32: RED's NaN).
DIRTY = int(np.iinfo(np.int32).min)
_TOP = int(np.iinfo(np.int32).max)          # RED's +infinity
_LOW_INF = DIRTY + 1                        # RED's -infinity


@dataclass(frozen=True)
class BlockEnvelope:
    """One channel's groups of MEF blocks on its rate group's grid, in grid order.

    Attributes
    ----------
    start, stop : numpy.ndarray of int64
        Grid span ``[start, stop)`` of each group (inside ``[0, n_samples)``).
    low, high : numpy.ndarray of int32
        Stored minimum and maximum over the group's samples (times ``ufact`` in physical
        units); ``low == DIRTY``: decode the span instead.
    group_blocks : int
        Most MEF blocks in one group (1 unless the session has more blocks than the
        envelope budget).
    """

    start: np.ndarray
    stop: np.ndarray
    low: np.ndarray
    high: np.ndarray
    group_blocks: int = 1

    @property
    def nbytes(self) -> int:
        """Memory the arrays take."""
        return self.start.nbytes + self.stop.nbytes + self.low.nbytes + self.high.nbytes

    def __len__(self) -> int:
        return len(self.start)


def _whole(n_grid: int, group_blocks: int) -> BlockEnvelope:
    return BlockEnvelope(np.array([0], np.int64), np.array([n_grid], np.int64),
                         np.array([DIRTY], np.int32), np.array([_TOP], np.int32), group_blocks)


def channel_envelope(table: ChannelTable, group: RateGroup,
                     group_blocks: int = 1) -> BlockEnvelope:
    """The groups of one channel's blocks (see the module docstring).

    Parameters
    ----------
    table : ChannelTable
        The channel's scanned block table.
    group : RateGroup
        The grid of the channel's sampling rate.
    group_blocks : int
        Most blocks per group, a power of two at most :data:`SCAN_ENTRIES`.

    Returns
    -------
    BlockEnvelope
    """
    n_grid = group.n_samples
    if not table.increasing:
        return _whole(n_grid, group_blocks)
    parts: list[list[np.ndarray]] = []
    prev_end = None
    for seg in table.segments:
        for lo, e in seg.chunks():
            times = memory_times(e["start_time"], seg.time_offset) + table.time_shift
            n = e["number_of_samples"].astype(np.int64)
            number = seg.first_block + lo + np.arange(len(e))
            x = ((times - group.start_uutc) / 1000000.0) * group.fs
            off = np.where(x >= 0, x + 0.5, x - 0.5).astype(np.int64)
            # as read_grid: pymef drops a middle block that reaches the end of the window
            kept = times + (n / group.fs) * 1e6 < group.end_uutc
            kept |= (number == 0) | (number == table.n_blocks - 1)
            k = np.nonzero(kept)[0]
            if k.size == 0:
                continue
            off, n, local = off[k], n[k], lo + k
            end = off + n
            low = e["minimum_sample_value"][k].astype(np.int32)
            high = e["maximum_sample_value"][k].astype(np.int32)
            dirty = (low <= _LOW_INF) | (high == _TOP) | (off < 0) | (end > n_grid)
            dirty[:-1] |= off[1:] < end[:-1]        # the next block overwrites its tail
            if prev_end is not None and off[0] < prev_end:
                parts[-1][2][-1] = DIRTY
            new = local % group_blocks == 0
            new[0] = True
            new[1:] |= off[1:] != end[:-1]          # a hole (or overlap) starts a group
            first = np.nonzero(new)[0]
            parts.append([np.maximum(off[first], 0),
                          np.minimum(np.maximum.reduceat(end, first), n_grid),
                          np.minimum.reduceat(np.where(dirty, DIRTY, low), first),
                          np.maximum.reduceat(high, first)])
            prev_end = int(end[-1])
    if not parts:
        return BlockEnvelope(np.empty(0, np.int64), np.empty(0, np.int64),
                             np.empty(0, np.int32), np.empty(0, np.int32), group_blocks)
    start, stop, low, high = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return BlockEnvelope(start, stop, low.astype(np.int32), high.astype(np.int32),
                         group_blocks)


def blocks_per_group(n_blocks: int, max_groups: int) -> int:
    """The smallest power of two G (at most :data:`SCAN_ENTRIES`) such that
    ``n_blocks / G <= max_groups``."""
    g = 1
    while n_blocks > g * max(1, int(max_groups)) and g < SCAN_ENTRIES:
        g *= 2
    return g


def block_envelopes(session, max_groups: int) -> dict[str, BlockEnvelope]:
    """Every channel's :class:`BlockEnvelope` (runs in a reader process).

    Parameters
    ----------
    session : MefSessionFile
        The open session.
    max_groups : int
        Budget: groups kept over all channels (24 bytes each in the server). Sessions with
        more blocks combine 2, 4, ... consecutive blocks per group.

    Returns
    -------
    dict of str to BlockEnvelope
    """
    tables: dict[str, ChannelTable] = session._tables
    g = blocks_per_group(sum(t.n_blocks for t in tables.values()), max_groups)
    return {c.name: channel_envelope(tables[c.name], session.info.group(c.fs), g)
            for c in session.info.channels}
