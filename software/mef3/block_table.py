"""MEF block tables read where they lie: ``.tidx`` entries by ``os.pread``, never all loaded.

A segment's ``.tidx`` holds a 1024-byte universal header and one 56-byte entry per MEF
block. Opening a session scans every table once in chunks of :data:`SCAN_ENTRIES` entries
(bounded memory) and keeps per channel only what is O(channels x segments) or sparse: the
gaps, whether block times increase, and the grid offset of every :data:`COARSE`-th block.
A read looks up its blocks in the coarse offsets and reads just those entries.

No table is memory-mapped: a mapped file truncated under a reader raises SIGBUS. ``pread``
returns a short read instead, and every lookup checks the file's identity (inode, size,
modification time) against the one scanned at open, so a table truncated or rewritten while
the session is open gives :class:`~software.errors.CorruptSessionError`, never wrong blocks.
The page cache shares the tables between processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptSessionError

HEADER_BYTES = 1024
ENTRY_BYTES = 56
#: One 56-byte ``TIME_SERIES_INDEX`` entry (MEF 3 specification, little-endian).
ENTRY = np.dtype([("file_offset", "<i8"), ("start_time", "<i8"), ("start_sample", "<i8"),
                  ("number_of_samples", "<u4"), ("block_bytes", "<u4"),
                  ("maximum_sample_value", "<i4"), ("minimum_sample_value", "<i4"),
                  ("rest", "V16")])
assert ENTRY.itemsize == ENTRY_BYTES
#: Entries read at a time when a table is scanned at open.
SCAN_ENTRIES = 16384
#: Every COARSE-th block's grid offset is kept in memory (8 bytes per COARSE blocks).
COARSE = 256

_HINT = "the session changed or is damaged; reopen it (or copy it again)."


#: MEF3's "no entry" time (also "no recording time offset").
NO_ENTRY = -(2 ** 63)


def memory_times(stored: np.ndarray, offset: int) -> np.ndarray:
    """Block start times as meflib holds them in memory (its remove-on-input rule).

    A stored time below zero has the recording time ``offset`` applied and negated;
    meflib negates it back and adds the offset (none when the offset is NO_ENTRY).
    """
    t = stored.astype(np.int64)
    neg = (t < 0) & (t != NO_ENTRY)
    t[neg] = -t[neg] + (0 if offset == NO_ENTRY else offset)
    return t


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class Segment:
    """One segment's block table file and what the channel needs of it."""

    tidx: str
    tdat: str
    n_blocks: int
    start_sample: int        # first stored sample of the segment in the channel
    first_block: int         # global block number of its first block in the channel
    time_offset: int = NO_ENTRY  # the segment's recording_time_offset
    identity: tuple = ()     # (ino, size, mtime_ns) of the .tidx at open
    data_identity: tuple = ()

    def check(self) -> None:
        """Raise CorruptSessionError if either file differs from the one opened."""
        for path, want in ((self.tidx, self.identity), (self.tdat, self.data_identity)):
            try:
                have = _identity(os.stat(path))
            except OSError as exc:
                raise CorruptSessionError(f"{path!r} cannot be read any more ({exc}): "
                                          f"{_HINT}") from exc
            if have != want:
                raise CorruptSessionError(
                    f"{path!r} was truncated or rewritten after the session was opened "
                    f"(inode, size, mtime {want} -> {have}): {_HINT}")

    def chunks(self):
        """Yield ``(first, view)`` over all entries, SCAN_ENTRIES at a time, through one
        reused buffer (views are valid until the next one; start times as stored)."""
        buf = bytearray(SCAN_ENTRIES * ENTRY_BYTES)
        fd = os.open(self.tidx, os.O_RDONLY)
        try:
            if _identity(os.fstat(fd)) != self.identity:
                self.check()
            for lo in range(0, self.n_blocks, SCAN_ENTRIES):
                k = min(SCAN_ENTRIES, self.n_blocks - lo)
                view = memoryview(buf)[:k * ENTRY_BYTES]
                got = os.preadv(fd, [view], HEADER_BYTES + lo * ENTRY_BYTES)
                if got != len(view):
                    raise CorruptSessionError(f"{self.tidx!r} ended inside block entry "
                                              f"{lo + got // ENTRY_BYTES}: {_HINT}")
                yield lo, np.frombuffer(view, dtype=ENTRY)
        finally:
            os.close(fd)

    def entries(self, lo: int, hi: int) -> np.ndarray:
        """Entries ``[lo, hi)`` of this segment (local block numbers), checked, with their
        start times as meflib holds them (:func:`memory_times`)."""
        want = (hi - lo) * ENTRY_BYTES
        try:
            fd = os.open(self.tidx, os.O_RDONLY)
        except OSError as exc:
            raise CorruptSessionError(f"{self.tidx!r} cannot be opened ({exc}): {_HINT}") \
                from exc
        try:
            if _identity(os.fstat(fd)) != self.identity:
                self.check()  # raises with the details
            raw = os.pread(fd, want, HEADER_BYTES + lo * ENTRY_BYTES)
        finally:
            os.close(fd)
        if len(raw) != want:
            raise CorruptSessionError(f"{self.tidx!r} ended after {len(raw)} of {want} bytes "
                                      f"of block entries {lo}..{hi - 1}: {_HINT}")
        e = np.frombuffer(raw, dtype=ENTRY).copy()
        e["start_time"] = memory_times(e["start_time"], self.time_offset)
        return e


def read_entry_count(tidx: str) -> int:
    """``number_of_entries`` of a ``.tidx`` universal header."""
    with open(tidx, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        raise CorruptSessionError(f"{tidx!r} is shorter than a MEF3 header: {_HINT}")
    return int(np.frombuffer(head, dtype="<i8", count=1, offset=32)[0])


def _grid_offsets(times: np.ndarray, start_uutc: int, fs: float) -> np.ndarray:
    """pymef's rounding of block start times to grid indices (half away from zero)."""
    x = ((times - start_uutc) / 1000000.0) * fs
    return np.where(x >= 0, x + 0.5, x - 0.5).astype(np.int64)


class ChannelTable:
    """The blocks of one channel over all its segments (global block numbers in order).

    Parameters
    ----------
    name : str
        Channel name (for messages).
    segments : list of Segment
        In segment order, with ``first_block`` and ``start_sample`` filled in.
    fs : float
        Sampling rate.
    time_shift : int
        Added to every entry's start time (the recording time offset, see access).
    """

    def __init__(self, name: str, segments: list[Segment], fs: float, time_shift: int) -> None:
        self.name = name
        self.segments = segments
        self.fs = fs
        self.time_shift = time_shift
        self.n_blocks = sum(s.n_blocks for s in segments)
        self.increasing = True
        self.gaps: tuple[tuple[int, int], ...] = ()
        self.max_block_samples = 0
        self._coarse_times = np.empty(0, dtype=np.int64)
        self._coarse_offsets: dict[tuple[int, float], np.ndarray] = {}
        self._seg_first = np.array([s.first_block for s in segments], dtype=np.int64)

    def scan(self) -> None:
        """Read every entry once (in chunks): gaps, order, coarse times, data file sizes."""
        period = 1e6 / self.fs
        gaps, coarse = [], []
        prev_time = prev_end = None
        for seg in self.segments:
            data_needed = 0
            for lo, e in seg.chunks():
                times = memory_times(e["start_time"], seg.time_offset) + self.time_shift
                n = e["number_of_samples"].astype(np.int64)
                ends = times + np.round(n * 1e6 / self.fs).astype(np.int64)
                prev_ends = np.concatenate(([prev_end], ends[:-1])) if prev_end is not None \
                    else ends[:-1]
                nxt = times if prev_end is not None else times[1:]
                idx = np.nonzero(nxt - prev_ends >= period)[0]
                gaps.extend((int(prev_ends[i]), int(nxt[i])) for i in idx)
                all_t = np.concatenate(([prev_time], times)) if prev_time is not None else times
                if self.increasing and np.any(np.diff(all_t) <= 0):
                    self.increasing = False
                first = seg.first_block + lo
                take = np.arange((-first) % COARSE, len(e), COARSE)
                coarse.append(times[take])
                data_needed = max(data_needed, int((e["file_offset"].astype(np.int64)
                                                    + e["block_bytes"]).max()))
                self.max_block_samples = max(self.max_block_samples, int(n.max()))
                prev_time, prev_end = int(times[-1]), int(ends[-1])
            size = seg.data_identity[1]
            if size < data_needed:
                raise CorruptSessionError(f"{seg.tdat!r} holds {size} bytes but its block "
                                          f"table needs {data_needed}: {_HINT}")
        self.gaps = tuple(gaps)
        self._coarse_times = np.concatenate(coarse) if coarse else self._coarse_times

    def blocks(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Columns of global blocks ``[lo, hi)``: n, first_sample, times, segment, entries."""
        parts, segs = [], []
        s = int(np.searchsorted(self._seg_first, lo, side="right")) - 1
        while lo < hi:
            seg = self.segments[s]
            a, b = lo - seg.first_block, min(hi - seg.first_block, seg.n_blocks)
            parts.append(seg.entries(a, b))
            segs.append(np.full(b - a, s, dtype=np.int64))
            lo += b - a
            s += 1
        e = np.concatenate(parts) if len(parts) > 1 else parts[0]
        seg_idx = np.concatenate(segs) if len(segs) > 1 else segs[0]
        starts = np.array([self.segments[k].start_sample for k in range(len(self.segments))],
                          dtype=np.int64)
        return {"entries": e, "segment": seg_idx,
                "n": e["number_of_samples"].astype(np.int64),
                "first_sample": e["start_sample"].astype(np.int64) + starts[seg_idx],
                "times": e["start_time"].astype(np.int64) + self.time_shift}

    def candidates(self, start: int, stop: int, group_start: int) -> tuple[int, int]:
        """Global block range ``[lo, hi)`` holding every block that can cover grid
        ``[start, stop)`` of a grid starting at ``group_start``."""
        if not self.increasing:
            return 0, self.n_blocks  # blocks out of order: any may land anywhere
        key = (group_start, self.fs)
        off = self._coarse_offsets.get(key)
        if off is None:
            off = self._coarse_offsets[key] = _grid_offsets(self._coarse_times, group_start,
                                                            self.fs)
        i = int(np.searchsorted(off, start - self.max_block_samples, side="right")) - 1
        j = int(np.searchsorted(off, stop, side="left"))
        return max(i, 0) * COARSE, min(j * COARSE, self.n_blocks)

    def check_coarse(self, lo: int, times: np.ndarray) -> None:
        """Raise if the entries read disagree with the scan at open (a rewritten table)."""
        first = (-lo) % COARSE
        got = times[first::COARSE]
        want = self._coarse_times[(lo + first) // COARSE:(lo + first) // COARSE + len(got)]
        if not np.array_equal(got, want):
            raise CorruptSessionError(f"the block table of channel {self.name!r} changed "
                                      f"after the session was opened: {_HINT}")
