"""MEF3 access: the only module that imports pymef and mef_tools.

It runs inside reader processes (pymef holds the GIL and keeps process-global state), never
in the server process. :class:`MefSessionFile` reads any slice of the sample grid of a rate
group bit-exactly as ``MefReader.get_data(channels, start_uutc, end_uutc)`` would place it
in a whole-recording read::

    block table (TOC) --> grid offset of every MEF block (pymef's own rounding)
    one sample-range read per channel --> blocks copied to their offsets --> x ufact

Reading windows with ``get_data(t0, t1)`` instead would not do: pymef re-rounds each block's
offset against ``t0`` (a block at exactly x.5 samples moves by one when ``t0`` changes) and
drops a middle block that ends exactly at ``t1``.

A sample-range read decodes one block more than it returns when it ends on a block boundary
(pymef takes the block starting at the end time as the last one): 7 blocks for a 60 s read
of 10 s blocks, 15% of a reader's time. Where the blocks of a read are contiguous and on the
grid, pymef's time-range read places every sample exactly where the sample-range read would
and decodes no extra block, so :meth:`MefSessionFile.read_grid` uses it there
(:func:`_time_range` checks each condition of pymef 1.4.8's algorithm).
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
import pymef
from pymef.mef_file.pymef3_file import check_mef_password
from pymef.mef_session import MefSession

from ..errors import CorruptSessionError, NotMefSessionError, WrongPasswordError
from ..validation import as_password
from .metadata import ChannelInfo, RateGroup, SessionInfo

logger = logging.getLogger(__name__)

_MEF_SUFFIXES = (".tmet", ".tidx", ".tdat")
_UNIVERSAL_HEADER_BYTES = 1024
_INDEX_ENTRY_BYTES = 56

#: The pymef version whose time-range read :func:`_time_range` was checked against; with
#: any other version every read is a sample-range read (exact, one block slower).
TIME_READS_PYMEF = "1.4.8"


def _check_session_dir(path: str) -> None:
    if not path.endswith(".mefd") or not os.path.isdir(path):
        raise NotMefSessionError(
            f"path={path!r} is not a MEF3 session: expected a directory whose name ends in "
            f"'.mefd'. Pass the session directory itself.")
    if not any(name.endswith(".timd") for name in os.listdir(path)):
        raise NotMefSessionError(
            f"path={path!r} holds no time-series channel ('*.timd' directory); it is not a "
            f"MEF3 session with signal data.")


def _check_password(path: str, password: str | None) -> bool:
    """Refuse a password that would not decode the data (pymef crashes on level 1).

    Returns whether the session is encrypted.
    """
    levels = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name.endswith(_MEF_SUFFIXES):
                file = os.path.join(root, name)
                if os.path.getsize(file) < _UNIVERSAL_HEADER_BYTES:
                    raise CorruptSessionError(
                        f"{file!r} is shorter than a MEF3 header ({_UNIVERSAL_HEADER_BYTES} "
                        f"bytes): the session is truncated or damaged; copy it again.")
                levels.append(check_mef_password(file, password))
    if not levels:
        raise CorruptSessionError(f"path={path!r} contains no MEF3 data files.")
    hint = "pass the level-2 (data) password of the session as password=..."
    if min(levels) < 0:
        what = "no password" if password is None else "the password given"
        raise WrongPasswordError(f"{what} does not open session {path!r}: {hint}")
    if 1 in levels:
        raise WrongPasswordError(
            f"the password given opens only the level-1 metadata of {path!r}; reading "
            f"samples needs the level-2 password: {hint}")
    return max(levels) > 0


def _check_data_files(path: str, session_md: dict) -> None:
    """Refuse a session whose files are shorter than its metadata says.

    pymef does not check file sizes: it reads a truncated ``.tidx`` past its end (garbage
    block offsets), silently skips a segment whose ``.tdat`` holds only a header, and
    crashes (SIGSEGV) reading a block of a truncated ``.tdat``. These checks turn each case
    into a :class:`CorruptSessionError` when the session is opened.
    """
    hint = "the session is truncated or damaged; copy it again."
    for channel, meta in session_md["time_series_channels"].items():
        folder = os.path.join(path, f"{channel}.timd")
        on_disk = {n[:-5] for n in os.listdir(folder) if n.endswith(".segd")}
        missing = sorted(on_disk - set(meta["segments"]))
        if missing:
            raise CorruptSessionError(f"segment {missing[0]!r} of channel {channel!r} in "
                                      f"{path!r} could not be read: {hint}")
        for segment, seg in meta["segments"].items():
            index = seg["indices"]
            base = os.path.join(folder, f"{segment}.segd", segment)
            sizes = {}
            for ext in (".tidx", ".tdat"):
                try:
                    sizes[ext] = os.path.getsize(base + ext)
                except OSError:
                    sizes[ext] = -1
            needed = {".tidx": _UNIVERSAL_HEADER_BYTES + _INDEX_ENTRY_BYTES * len(index)}
            if sizes[".tidx"] >= needed[".tidx"] and len(index):
                needed[".tdat"] = int((index["file_offset"].astype(np.int64)
                                       + index["block_bytes"].astype(np.int64)).max())
            for ext, size in needed.items():
                if sizes[ext] < size:
                    raise CorruptSessionError(f"{base + ext!r} holds {max(sizes[ext], 0)} bytes "
                                              f"but the session's metadata needs {size}: {hint}")


def _channel_gaps(toc: np.ndarray, fs: float) -> tuple[tuple[int, int], ...]:
    """Discontinuities between consecutive MEF blocks, as (start_uutc, stop_uutc) pairs."""
    n, times = toc[1], toc[3]
    ends = times[:-1] + np.round(n[:-1] * 1e6 / fs).astype(np.int64)
    period = 1e6 / fs
    idx = np.nonzero(times[1:] - ends >= period)[0]
    return tuple((int(ends[i]), int(times[i + 1])) for i in idx)


class _ChannelLayout:
    """Where each MEF block of one channel lands on the grid of its rate group."""

    __slots__ = ("name", "ufact", "offsets", "n", "first_sample", "kept", "times", "fs",
                 "segment", "segment_bounds", "increasing")

    def __init__(self, name: str, ufact: float, toc: np.ndarray, time_shift: int,
                 group: RateGroup, segment_sizes: Sequence[int]) -> None:
        self.name = name
        self.ufact = ufact
        self.fs = group.fs
        self.n = toc[1].astype(np.int64)
        self.first_sample = toc[2].astype(np.int64)
        times = toc[3].astype(np.int64) + time_shift
        self.times = times
        # TOC column -> segment, and each segment's first and last column
        self.segment = np.repeat(np.arange(len(segment_sizes)), segment_sizes)
        ends = np.cumsum(segment_sizes)
        self.segment_bounds = np.stack([ends - np.asarray(segment_sizes), ends - 1], axis=1)
        self.increasing = bool(np.all(np.diff(times) > 0))
        x = ((times - group.start_uutc) / 1000000.0) * group.fs
        self.offsets = np.where(x >= 0, x + 0.5, x - 0.5).astype(np.int64)
        # pymef skips a middle block that reaches the end of the read window; in the
        # whole-recording read this can only hit a malformed file, but we mirror it.
        ends = times + (self.n / group.fs) * 1e6
        kept = ends < group.end_uutc
        if kept.size:
            kept[0] = kept[-1] = True
        self.kept = kept


def _time_range(layout: _ChannelLayout, hit: np.ndarray) -> tuple[int, int] | None:
    """``(start_uutc, end_uutc)`` whose time-range read equals the sample-range read of the
    blocks ``hit``, or None where that is not certain.

    Follows ``read_mef_ts_data`` of pymef 1.4.8 with ``times_specified``: one segment is
    chosen, the first block is the last one starting at or before ``start_uutc``, every
    block lands at ``int((t - start_uutc) / 1e6 * fs + 0.5)``, a middle block ending at or
    after ``end_uutc`` stops the middle loop and is decoded as the last block.
    """
    h0, hk = int(hit[0]), int(hit[-1])
    if hk - h0 + 1 != hit.size or hit.size < 2 or not layout.increasing:
        return None  # a skipped block inside, a single block (no gain), or blocks out of order
    seg = int(layout.segment[h0])
    if int(layout.segment[hk]) != seg:
        return None
    seg_first, seg_last = (int(v) for v in layout.segment_bounds[seg])
    n_segments = len(layout.segment_bounds)
    # a neighbouring segment touching the range would take part in pymef's segment search
    if (h0 == seg_first and seg > 0) or (hk == seg_last and seg < n_segments - 1):
        return None
    fs, n, times = layout.fs, layout.n[h0:hk + 1], layout.times[h0:hk + 1]
    rel = layout.first_sample[h0:hk + 1] - layout.first_sample[h0]
    if not np.array_equal(rel[1:], np.cumsum(n[:-1])):
        return None  # stored samples not contiguous
    t0 = int(times[0])
    if not np.array_equal(((times - t0) / 1000000.0 * fs + 0.5).astype(np.int64), rel):
        return None  # pymef would place a block elsewhere
    span = int(rel[-1] + n[-1])
    t1 = int(times[-1]) + int(round(n[-1] * 1000000.0 / fs))
    if int((t1 - t0) / 1000000.0 * fs + 0.5) != span:
        return None  # pymef would return another number of samples
    if hk < seg_last and layout.times[hk + 1] < t1:
        return None  # the next block would start inside the range
    if np.any(times[1:-1] + (n[1:-1] / fs) * 1e6 >= t1):
        return None  # a middle block would end the middle loop early
    return t0, t1


class MefSessionFile:
    """An open MEF3 session inside one reader process.

    Not thread-safe, and pymef keeps global state: use one per process, from one thread.

    Parameters
    ----------
    path : str
        Path of the ``.mefd`` session directory.
    password : str, optional
        Level-2 (data) password; ``None`` for an unencrypted session.
    time_reads : bool, optional
        Use pymef's time-range read where it is exact (see the module docstring); False
        makes every read a sample-range read. Ignored with a pymef other than
        :data:`TIME_READS_PYMEF`.

    Raises
    ------
    NotMefSessionError
        ``path`` is not a MEF3 session directory.
    WrongPasswordError
        The password is missing, wrong, only the level-1 password, or longer than a MEF3
        password can be.
    CorruptSessionError
        pymef could not read the metadata.
    """

    def __init__(self, path: str, password: str | None = None, time_reads: bool = True) -> None:
        self.path = os.path.abspath(path)
        _check_session_dir(self.path)
        password = as_password("password", password)  # pymef overflows a 16-byte buffer
        encrypted = _check_password(self.path, password)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._session = MefSession(self.path, password, True, check_all_passwords=False)
                basic = self._session.read_ts_channel_basic_info()
                tocs = {b["name"]: self._session.get_channel_toc(b["name"]) for b in basic}
        except (OSError, RuntimeError, KeyError, ValueError, IndexError, TypeError) as exc:
            raise CorruptSessionError(
                f"session {self.path!r} could not be read ({exc}); check that no file of it "
                f"is truncated or damaged.") from exc
        _check_data_files(self.path, self._session.session_md)
        channels = []
        self._time_shift: dict[str, int] = {}
        for b in basic:
            name, toc = b["name"], tocs[b["name"]]
            if len(b["fsamp"]) != 1 or toc.shape[1] == 0:
                raise CorruptSessionError(
                    f"channel {name!r} of {self.path!r} has {len(b['fsamp'])} sampling rates "
                    f"and {toc.shape[1]} blocks; mefstream needs one rate and some data.")
            fs = float(b["fsamp"][0])
            start, end = int(b["start_time"][0]), int(b["end_time"][0])
            # TOC times carry the recording time offset when the file has one; the basic
            # info does not. The first block starts at the channel start by definition.
            self._time_shift[name] = start - int(toc[3, 0])
            shifted = toc.copy()
            shifted[3] += self._time_shift[name]
            unit = b["unit"][0]
            channels.append(ChannelInfo(
                name=name, fs=fs, start_uutc=start, end_uutc=end,
                units=unit.decode(errors="replace") if isinstance(unit, bytes) else str(unit),
                ufact=float(b["ufact"][0]), n_stored=int(b["nsamp"][0]),
                gaps=_channel_gaps(shifted, fs)))
        self.info = SessionInfo(path=self.path, channels=tuple(channels), encrypted=encrypted)
        self._tocs = tocs
        self._segment_sizes = {
            name: [self._session.session_md["time_series_channels"][name]["segments"][seg]
                   ["TOC"].shape[1]
                   for seg in sorted(self._session.session_md["time_series_channels"][name]
                                     ["segments"])]
            for name in tocs}
        self.time_reads = time_reads and pymef.__version__ == TIME_READS_PYMEF
        self.reads = {"time": 0, "sample": 0}
        self._layouts: dict[tuple[str, float], _ChannelLayout] = {}
        self._groups: dict[float, RateGroup] = {}

    def _layout(self, name: str) -> tuple[_ChannelLayout, RateGroup]:
        ch = self.info.channel(name)
        group = self._groups.get(ch.fs)
        if group is None:
            group = self._groups[ch.fs] = self.info.group(ch.fs)
        key = (name, ch.fs)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = _ChannelLayout(
                name, ch.ufact, self._tocs[name], self._time_shift[name], group,
                self._segment_sizes[name])
        return layout, group

    def read_grid(self, names: Sequence[str], start: int, stop: int,
                  out: np.ndarray | None = None) -> np.ndarray:
        """Read grid samples ``[start, stop)`` of channels sharing one sampling rate.

        Parameters
        ----------
        names : sequence of str
            Channel names, all of one sampling rate.
        start, stop : int
            Grid indices with ``0 <= start < stop <= n_samples`` of the rate group.
        out : numpy.ndarray, optional
            float64 array of that shape to write into (a reader's landing region).

        Returns
        -------
        numpy.ndarray
            float64 array of shape ``(len(names), stop - start)``, NaN where there is no
            data, equal to the same slice of ``MefReader.get_data(names, start_uutc,
            end_uutc)``.
        """
        if out is None:
            out = np.empty((len(names), stop - start))
        for row, name in enumerate(names):
            layout, group = self._layout(name)
            if not 0 <= start < stop <= group.n_samples:
                raise ValueError(f"grid range [{start}, {stop}) outside [0, {group.n_samples})")
            self._fill(out[row], layout, start, stop, group.n_samples)
        return out

    def _fill(self, dest: np.ndarray, layout: _ChannelLayout, start: int, stop: int,
              n_grid: int) -> None:
        offsets, n = layout.offsets, layout.n
        hit = np.nonzero((offsets < stop) & (offsets + n > start) & layout.kept)[0]
        if hit.size == 0:
            dest[:] = np.nan
            return
        first = int(layout.first_sample[hit[0]])
        last = int(layout.first_sample[hit[-1]] + n[hit[-1]])
        times = _time_range(layout, hit) if self.time_reads else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if times is not None:
                self.reads["time"] += 1
                stored = self._session.read_ts_channels_uutc(layout.name, list(times))
            else:
                self.reads["sample"] += 1
                stored = self._session.read_ts_channels_sample(layout.name, [first, last])
        if stored is None or len(stored) != last - first:
            raise CorruptSessionError(
                f"channel {layout.name!r} of {self.path!r}: expected {last - first} stored "
                f"samples from {first}, got {0 if stored is None else len(stored)}; the "
                f"session's data files look truncated.")
        if not layout.increasing:  # blocks out of time order: holes may lie anywhere
            dest[:] = np.nan
        cursor = 0  # dest[:cursor] is written; what no block covers is NaN
        for i in hit:
            off, count = int(offsets[i]), int(n[i])
            lo, hi = max(off, start, 0), min(off + count, stop, n_grid)
            if lo >= hi:
                continue
            if lo - start > cursor:
                dest[cursor:lo - start] = np.nan
            src = int(layout.first_sample[i]) - first + (lo - off)
            # the same operation as mef_tools: float64(raw) * ufact
            np.multiply(stored[src:src + hi - lo], layout.ufact, out=dest[lo - start:hi - start])
            cursor = max(cursor, hi - start)
        dest[cursor:] = np.nan

    def close(self) -> None:
        """Release pymef's metadata for this session (idempotent)."""
        session = getattr(self, "_session", None)
        if session is not None:
            session.close()
            self._session = None

    def __enter__(self) -> MefSessionFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if getattr(self, "_session", None) is None else "open"
        return f"<MefSessionFile {self.path!r} {state}, {len(self.info.channels)} channels>"
