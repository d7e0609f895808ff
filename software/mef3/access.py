"""MEF3 access: the only module that reads samples with pymef.

It runs inside reader processes (pymef holds the GIL and keeps process-global state), never
in the server process. :class:`MefSessionFile` reads any slice of the sample grid of a rate
group bit-exactly as ``MefReader.get_data(channels, start_uutc, end_uutc)`` would place it
in a whole-recording read::

    block tables (.tidx, read by pread) --> grid offset of each block near the slice
    (pymef's own rounding) --> runs of consecutive blocks --> one pymef read per run
    (:mod:`.pymef_window`) --> blocks copied to their offsets as int32
    (:mod:`.samples`; read_grid then applies ufact as MefReader does)

Opening costs O(channels x segments) memory: no block table is held (see
:mod:`.block_table`); the one scan at open keeps gaps and every 256th block's time.
Reading windows with ``get_data(t0, t1)`` instead would not do: pymef re-rounds each block's
offset against ``t0`` (a block at exactly x.5 samples moves by one when ``t0`` changes) and
drops a middle block that ends exactly at ``t1``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
from pymef.mef_file.pymef3_file import check_mef_password, clean_mef_session_metadata

from ..errors import CorruptSessionError, NotMefSessionError, WrongPasswordError
from ..validation import as_password
from .block_table import ChannelTable, Segment, read_entry_count
from .metadata import ChannelInfo, RateGroup, SessionInfo
from .pymef_window import PymefChannel, read_shadow_metadata
from .samples import STORED_DTYPE, STORED_NAN, scale_into, to_stored

logger = logging.getLogger(__name__)

_MEF_SUFFIXES = (".tmet", ".tidx", ".tdat")
_UNIVERSAL_HEADER_BYTES = 1024


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


def _segment_names(folder: str, channel: str, channel_md: dict, path: str) -> list[str]:
    """The channel's segments in order; every one on disk must be in the metadata."""
    on_disk = {n[:-5] for n in os.listdir(folder) if n.endswith(".segd")}
    names = sorted(channel_md["segments"])
    missing = sorted(on_disk - set(names))
    if missing:
        raise CorruptSessionError(f"segment {missing[0]!r} of channel {channel!r} in "
                                  f"{path!r} could not be read: the session is truncated or "
                                  f"damaged; copy it again.")
    return names


def _channel_table(path: str, channel: str, channel_md: dict, names: list[str],
                   fs: float, start_uutc: int) -> ChannelTable:
    """Scan the block tables of one channel (bounded memory) into a ChannelTable."""
    folder = os.path.join(path, f"{channel}.timd")
    segments, first = [], 0
    for name in names:
        base = os.path.join(folder, f"{name}.segd", name)
        tidx, tdat = base + ".tidx", base + ".tdat"
        n_blocks = read_entry_count(tidx)
        st_idx, st_dat = os.stat(tidx), os.stat(tdat)
        needed = _UNIVERSAL_HEADER_BYTES + 56 * n_blocks
        if n_blocks < 0 or st_idx.st_size < needed:
            raise CorruptSessionError(
                f"{tidx!r} holds {st_idx.st_size} bytes but its header lists {n_blocks} "
                f"blocks ({needed} bytes): the session is truncated or damaged; copy it again.")
        s2 = channel_md["segments"][name]["section_2"]
        offset = int(channel_md["segments"][name]["section_3"]["recording_time_offset"][0])
        segments.append(Segment(tidx, tdat, n_blocks, int(s2["start_sample"][0]), first,
                                offset, (st_idx.st_ino, st_idx.st_size, st_idx.st_mtime_ns),
                                (st_dat.st_ino, st_dat.st_size, st_dat.st_mtime_ns)))
        first += n_blocks
    table = ChannelTable(channel, segments, fs, 0)
    if table.n_blocks:
        # the first block starts at the channel start by definition (pymef's TOC times and
        # the channel's start time can differ by the recording time offset)
        first_time = int(segments[0].entries(0, 1)["start_time"][0]) if segments[0].n_blocks \
            else int(next(s for s in segments if s.n_blocks).entries(0, 1)["start_time"][0])
        table.time_shift = start_uutc - first_time
        table.scan()
    return table


class MefSessionFile:
    """An open MEF3 session inside one reader process.

    Not thread-safe, and pymef keeps global state: use one per process, from one thread.
    Opening holds O(channels x segments) memory whatever the number of blocks.

    Parameters
    ----------
    path : str
        Path of the ``.mefd`` session directory.
    password : str, optional
        Level-2 (data) password; ``None`` for an unencrypted session.
    time_reads : bool, optional
        Kept for compatibility and ignored: every read decodes exactly the blocks it needs
        (pymef's time-range read is no longer used).

    Raises
    ------
    NotMefSessionError
        ``path`` is not a MEF3 session directory.
    WrongPasswordError
        The password is missing, wrong, only the level-1 password, or longer than a MEF3
        password can be.
    CorruptSessionError
        pymef could not read the metadata, or a file is shorter than its metadata says.
    """

    def __init__(self, path: str, password: str | None = None, time_reads: bool = True) -> None:
        self.path = os.path.abspath(path)
        self._md = None
        _check_session_dir(self.path)
        password = as_password("password", password)  # pymef overflows a 16-byte buffer
        encrypted = _check_password(self.path, password)
        try:
            self._md = read_shadow_metadata(self.path, password)
            channels_md = self._md["time_series_channels"]
            names = sorted(channels_md)
        except (OSError, RuntimeError, KeyError, ValueError, IndexError, TypeError) as exc:
            raise CorruptSessionError(
                f"session {self.path!r} could not be read ({exc}); check that no file of it "
                f"is truncated or damaged.") from exc
        try:
            self._open_channels(channels_md, names, encrypted)
        except BaseException:
            self.close()
            raise
        self.time_reads = False
        self.reads = {"time": 0, "sample": 0, "blocks": 0}
        self._groups: dict[float, RateGroup] = {}

    def _open_channels(self, channels_md: dict, names: list[str], encrypted: bool) -> None:
        channels = []
        self._tables: dict[str, ChannelTable] = {}
        self._pymef: dict[str, PymefChannel] = {}
        for name in names:
            md = channels_md[name]
            s2, spec = md["section_2"], md["channel_specific_metadata"]
            folder = os.path.join(self.path, f"{name}.timd")
            seg_names = _segment_names(folder, name, md, self.path)
            fs = float(s2["sampling_frequency"][0])
            start, end = int(spec["earliest_start_time"][0]), int(spec["latest_end_time"][0])
            table = _channel_table(self.path, name, md, seg_names, fs, start)
            if table.n_blocks == 0:
                raise CorruptSessionError(
                    f"channel {name!r} of {self.path!r} has no blocks; mefstream needs some "
                    f"data in every channel.")
            self._tables[name] = table
            self._pymef[name] = PymefChannel(name, md, seg_names, folder)
            unit = s2["units_description"][0]
            channels.append(ChannelInfo(
                name=name, fs=fs, start_uutc=start, end_uutc=end,
                units=unit.decode(errors="replace") if isinstance(unit, bytes) else str(unit),
                ufact=float(s2["units_conversion_factor"][0]),
                n_stored=int(s2["number_of_samples"][0]), gaps=table.gaps))
        self.info = SessionInfo(path=self.path, channels=tuple(channels), encrypted=encrypted)

    def _group(self, name: str) -> RateGroup:
        fs = self.info.channel(name).fs
        group = self._groups.get(fs)
        if group is None:
            group = self._groups[fs] = self.info.group(fs)
        return group

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
            float64 array of that shape to write into.

        Returns
        -------
        numpy.ndarray
            float64 array of shape ``(len(names), stop - start)``, NaN where there is no
            data, equal to the same slice of ``MefReader.get_data(names, start_uutc,
            end_uutc)``.

        Raises
        ------
        CorruptSessionError
            A file of the session was truncated or rewritten since it was opened.
        """
        stored = self.read_stored(names, start, stop)
        if out is None:
            out = np.empty(stored.shape)
        return scale_into(stored, self.factors(names), out)

    def factors(self, names: Sequence[str]) -> np.ndarray:
        """The channels' units conversion factors as a ``(len(names), 1)`` float64 column."""
        return np.array([[self.info.channel(n).ufact] for n in names], dtype=np.float64)

    def read_stored(self, names: Sequence[str], start: int, stop: int,
                    out: np.ndarray | None = None) -> np.ndarray:
        """Read grid samples ``[start, stop)`` as MEF3 stores them (int32, no factor).

        Parameters
        ----------
        names, start, stop
            As for :meth:`read_grid`.
        out : numpy.ndarray, optional
            int32 array of shape ``(len(names), stop - start)`` to write into (a reader's
            landing region).

        Returns
        -------
        numpy.ndarray
            int32 array, :data:`~software.mef3.samples.STORED_NAN` where :meth:`read_grid`
            has NaN; ``read_grid`` is this times each channel's factor
            (:func:`~software.mef3.samples.scale_into`).

        Raises
        ------
        CorruptSessionError
            A file of the session was truncated or rewritten since it was opened.
        """
        if self._md is None:
            raise ValueError(f"session {self.path!r} is closed; open it again")
        if out is None:
            out = np.empty((len(names), stop - start), dtype=STORED_DTYPE)
        for row, name in enumerate(names):
            group = self._group(name)
            if not 0 <= start < stop <= group.n_samples:
                raise ValueError(f"grid range [{start}, {stop}) outside [0, {group.n_samples})")
            self._fill(out[row], name, group, start, stop)
        return out

    def _fill(self, dest: np.ndarray, name: str, group: RateGroup, start: int,
              stop: int) -> None:
        table, n_grid = self._tables[name], group.n_samples
        lo, hi = table.candidates(start, stop, group.start_uutc)
        if lo >= hi:
            dest[:] = STORED_NAN
            return
        b = table.blocks(lo, hi)
        table.check_coarse(lo, b["times"])
        n, times = b["n"], b["times"]
        x = ((times - group.start_uutc) / 1000000.0) * group.fs
        offsets = np.where(x >= 0, x + 0.5, x - 0.5).astype(np.int64)
        # pymef skips a middle block that reaches the end of the whole-recording window
        kept = times + (n / group.fs) * 1e6 < group.end_uutc
        number = np.arange(lo, hi)
        kept |= (number == 0) | (number == table.n_blocks - 1)
        hit = np.nonzero((offsets < stop) & (offsets + n > start) & kept)[0]
        if hit.size == 0:
            dest[:] = STORED_NAN
            return
        if not table.increasing:  # blocks out of time order: holes may lie anywhere
            dest[:] = STORED_NAN
        cursor = 0  # dest[:cursor] is written; what no block covers is NaN
        for run in self._runs(b, hit):
            stored = self._decode(name, b, run)
            base = int(b["first_sample"][run[0]])
            for i in run:
                off, count = int(offsets[i]), int(n[i])
                lo_, hi_ = max(off, start, 0), min(off + count, stop, n_grid)
                if lo_ >= hi_:
                    continue
                if lo_ - start > cursor:
                    dest[cursor:lo_ - start] = STORED_NAN
                src = int(b["first_sample"][i]) - base + (lo_ - off)
                # the integers as stored; the factor is applied when answers are built
                to_stored(stored[src:src + hi_ - lo_], dest[lo_ - start:hi_ - start])
                cursor = max(cursor, hi_ - start)
        dest[cursor:] = STORED_NAN

    @staticmethod
    def _runs(b: dict, hit: np.ndarray) -> list[np.ndarray]:
        """Split ``hit`` into runs pymef can decode in one read: consecutive blocks of one
        segment, back to back in the data file, in stored-sample and time order."""
        e = b["entries"]
        off = e["file_offset"].astype(np.int64)
        nbytes = e["block_bytes"].astype(np.int64)
        h = hit
        joined = ((h[1:] == h[:-1] + 1) & (b["segment"][h[1:]] == b["segment"][h[:-1]])
                  & (off[h[1:]] == off[h[:-1]] + nbytes[h[:-1]])
                  & (b["first_sample"][h[1:]] == b["first_sample"][h[:-1]] + b["n"][h[:-1]])
                  & (b["times"][h[1:]] > b["times"][h[:-1]]))
        return np.split(h, np.nonzero(~joined)[0] + 1)

    def _decode(self, name: str, b: dict, run: np.ndarray) -> np.ndarray:
        segment = int(b["segment"][run[0]])
        seg = self._tables[name].segments[segment]
        seg.check()
        stored = self._pymef[name].read(segment, b["entries"][run[0]:run[-1] + 1])
        seg.check()  # changed while pymef read it: the samples may be wrong
        self.reads["sample"] += 1
        self.reads["blocks"] += len(run)
        return stored

    def close(self) -> None:
        """Release pymef's metadata for this session (idempotent)."""
        md, self._md = self._md, None
        if md is not None:
            clean_mef_session_metadata(md["session_specific_metadata"])

    def __enter__(self) -> MefSessionFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._md is None else "open"
        return f"<MefSessionFile {self.path!r} {state}, {len(self.info.channels)} channels>"
