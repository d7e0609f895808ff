"""A MEF3 session that grows by appends and is complete on disk at every moment.

Each :meth:`AppendingSession.append` is one atomic step as a reader sees it. Two copies of
the session directory share every ``.tdat`` (hard links; appends only add bytes past what
the older copy's index knows) and keep their own small ``.tmet``/``.tidx``::

    OUT.mefd                       live copy: what MefReader opens (never written to)
    .OUT.mefd.spare/OUT.mefd       spare copy: one append behind

    append:  bring the spare up to the live copy (copy .tmet, the new .tidx tail)
             -> pymef appends to the spare (data past the live end, its own index)
             -> fix the spare's min/max (pymef puts the chunk's own there) and CRCs
             -> renameat2(RENAME_EXCHANGE): spare and live swap in one system call

A SIGKILL at any moment leaves ``OUT.mefd`` as it was after the last finished append: every
channel the same length, min/max right, and the records of those appends (session-level
``.rdat``/``.ridx``, grown the same way by :mod:`software.mef3.append_records`). An append
that fails leaves nothing behind for the next one: the running min/max are updated only
once an append is in place, and the bytes it wrote past the end of the shared ``.tdat``
are cut before the next one (the spare's own record files are brought back to the live
copy's). Durability against power loss (fsync) is not attempted. Runs in the recorder's
thread; imports pymef through mef_tools.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import struct
from collections.abc import Sequence

import numpy as np
from mef_tools.io import MefWriter

from ..errors import InvalidArgumentError, SessionExistsError
from .append_records import RecordFiles
from .crc import crc_patched

__all__ = ["AppendingSession", "exchange"]

logger = logging.getLogger(__name__)

_UH_BYTES = 1024                          # MEF3 universal header
_TMET_BYTES = 16384                       # metadata file size
_MAX_AT = _UH_BYTES + 1536 + 6336         # section 2: maximum_native_sample_value (sf8)
_RED_NAN = np.int32(-2**31)               # what readers turn into NaN
_INT_LO, _INT_HI = -2**31 + 2, 2**31 - 2  # stored values exclude RED_NAN and +-infinity
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

def exchange(a: str, b: str) -> None:
    """Swap two directory entries in one system call (Linux ``renameat2``).

    Raises
    ------
    OSError
        The system or file system cannot exchange entries (then no recorder can run there).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                      _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cannot exchange {a!r} and {b!r} atomically "
                            f"({os.strerror(code)}); record onto a local Linux file system "
                            "(ext4, xfs, btrfs, tmpfs)")


class AppendingSession:
    """A MEF3 session written by appends, each one atomic for readers (see module doc).

    Parameters
    ----------
    path : str or os.PathLike
        Session directory to create; must end in ``.mefd``.
    channels : sequence of str
        Channel names (every append gives one row per channel, in this order).
    fs : float
        Sampling rate in Hz.
    start_uutc : int
        Time of sample 0 in microseconds.
    precision : int, optional
        Decimal digits kept (samples are stored as integers times ``10**-precision``).
    units : str, optional
        Units of the samples.
    overwrite : bool, optional
        Remove an existing session at ``path`` first.

    Raises
    ------
    SessionExistsError
        ``path`` exists and ``overwrite`` is False.
    ValueError
        A bad path, channel list, rate or precision.
    """

    def __init__(self, path, channels: Sequence[str], fs: float, start_uutc: int, *,
                 precision: int = 2, units: str = "uV", overwrite: bool = False) -> None:
        path = os.path.abspath(os.fspath(path))
        if not path.endswith(".mefd"):
            raise InvalidArgumentError(f"path={path!r} must end in '.mefd'")
        names = tuple(str(c) for c in channels)
        if not names or len(set(names)) != len(names) or any("/" in n or not n for n in names):
            raise InvalidArgumentError(f"channels={names!r} must be distinct non-empty names "
                                       f"without '/'")
        if not (float(fs) > 0):
            raise InvalidArgumentError(f"fs must be a positive rate in Hz; {fs!r} is invalid")
        if not (0 <= int(precision) <= 9):
            raise InvalidArgumentError(f"precision must be an integer 0..9; {precision!r} is "
                                       f"invalid")
        if os.path.exists(path):
            if not overwrite:
                raise SessionExistsError(f"{path!r} exists; choose another name or pass "
                                      "overwrite=True to replace it")
            shutil.rmtree(path)
        parent, name = os.path.split(path)
        os.makedirs(parent, exist_ok=True)
        self.path = path
        self.channels = names
        self.fs = float(fs)
        self.start_uutc = int(start_uutc)
        self.precision = int(precision)
        self.units = str(units)
        self.n_samples = 0            # grid samples covered (written or gap) from sample 0
        self._spare_root = os.path.join(parent, f".{name}.spare")
        self._spare = os.path.join(self._spare_root, name)   # same base name: same session
        shutil.rmtree(self._spare_root, ignore_errors=True)  # left by a killed recorder
        self._scale = 10.0 ** self.precision
        self._ufact = float(np.round(0.1 ** self.precision, self.precision))
        self._extrema: list[tuple[int, int] | None] = [None] * len(names)
        self._tdat_sizes: list[int] = [0] * len(names)   # each .tdat after the last append
        self._writer: MefWriter | None = None
        self._block = 0
        self._clipped = False
        self.closed = False

    # ---- public ---------------------------------------------------------------------

    def uutc(self, index: int) -> int:
        """Time stamp of grid sample ``index`` in microseconds."""
        return self.start_uutc + int(round(index * 1e6 / self.fs))

    def append(self, data: np.ndarray, first: int | None = None,
               records: Sequence[tuple] = ()) -> None:
        """Append samples of every channel as one atomic step.

        Parameters
        ----------
        data : numpy.ndarray
            ``(channels, n)`` samples (NaN is stored as MEF's NaN value).
        first : int, optional
            Grid index of ``data[:, 0]``; default right after the samples written so far.
            A later index leaves a gap (read back as NaN).
        records : sequence of tuple, optional
            Session-level records ``(time_uutc, type, text, duration, None, fields)``
            written in the same atomic step (see :mod:`software.mef3.append_records`).

        Raises
        ------
        ValueError
            Wrong shape, ``first`` before the end already written, or a record MEF3
            cannot store (nothing is written).
        """
        if self.closed:
            raise InvalidArgumentError(f"{self.path!r} is closed; open a new AppendingSession")
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] != len(self.channels):
            raise InvalidArgumentError(f"data has shape {data.shape}; give "
                                       f"({len(self.channels)}, n)")
        first = self.n_samples if first is None else int(first)
        if first < self.n_samples:
            raise InvalidArgumentError(f"first={first} is before sample {self.n_samples}, the end "
                             "already written; appends only move forward")
        n = data.shape[1]
        if n == 0:
            return
        records = tuple(records)
        RecordFiles.check(records)
        ints = self._to_int32(data)
        extrema = self._merged_extrema(ints)   # kept only once this append is in place
        start, end = self.uutc(first), self.uutc(first + n)
        if self._writer is None:
            self._create(ints, start, end, extrema, records)
        else:
            self._sync_spare()
            self._records.sync_spare()
            session = self._writer.session
            for row, name in enumerate(self.channels):
                session.append_mef_ts_segment_data(name, 0, None, None, start, end,
                                                   self._block, ints[row],
                                                   discontinuity_flag=first > self.n_samples)
            self._fix_extrema(extrema)
            self._records.write_spare(records)
            exchange(self._spare, self.path)
        self._extrema = extrema
        self._tdat_sizes = [os.path.getsize(self._files(self.path, name) + ".tdat")
                            for name in self.channels]
        self.n_samples = first + n
        logger.debug("appended samples [%d, %d) to %s", first, first + n, self.path)

    def close(self) -> None:
        """Drop the spare copy; the live session stays as the last append left it."""
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.session.close()
        shutil.rmtree(self._spare_root, ignore_errors=True)
        logger.info("closed %s (%d samples of %d channels)", self.path, self.n_samples,
                    len(self.channels))

    def __enter__(self) -> AppendingSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (f"<AppendingSession {self.path!r} {len(self.channels)} ch @ {self.fs} Hz, "
                f"{self.n_samples} samples, {state}>")

    # ---- steps ----------------------------------------------------------------------

    def _to_int32(self, data: np.ndarray) -> np.ndarray:
        """Scaled and rounded samples, NaN as RED_NAN."""
        nan = np.isnan(data)
        scaled = np.rint(np.where(nan, 0.0, data) * self._scale)
        if not self._clipped and (scaled.min() < _INT_LO or scaled.max() > _INT_HI):
            self._clipped = True
            logger.warning("%s: values beyond the int32 range at precision %d were clipped;"
                           " record with a smaller precision", self.path, self.precision)
        ints = np.clip(scaled, _INT_LO, _INT_HI).astype(np.int32)
        ints[nan] = _RED_NAN
        return ints

    def _merged_extrema(self, ints: np.ndarray) -> list[tuple[int, int] | None]:
        """Every channel's (min, max) over what is written and ``ints`` (RED_NAN aside);
        the running extrema are not touched (an append that fails adds nothing)."""
        merged = list(self._extrema)
        for row in range(ints.shape[0]):
            valid = ints[row][ints[row] != _RED_NAN]
            if valid.size:
                lo, hi = int(valid.min()), int(valid.max())
                old = merged[row]
                merged[row] = (lo, hi) if old is None else (min(lo, old[0]), max(hi, old[1]))
        return merged

    def _files(self, root: str, name: str) -> str:
        return os.path.join(root, f"{name}.timd", f"{name}-000000.segd", f"{name}-000000")

    def _create(self, ints: np.ndarray, start: int, end: int,
                extrema: list[tuple[int, int] | None], records: tuple = ()) -> None:
        """The first append: segments written into the spare, moved into place, mirrored."""
        os.makedirs(self._spare_root, exist_ok=True)
        writer = MefWriter(self._spare, overwrite=False)
        writer.data_units = self.units
        self._block = int(writer.get_mefblock_len(self.fs))
        section3 = dict(writer.section3_dict, recording_time_offset=writer.record_offset)
        section2 = dict(writer.section2_ts_dict, sampling_frequency=self.fs, start_sample=0,
                        recording_duration=int(end - start),
                        units_conversion_factor=self._ufact,
                        units_description=self.units.encode())
        for row, name in enumerate(self.channels):
            writer.session.write_mef_ts_segment_metadata(name, 0, None, None, start, end,
                                                         dict(section2), dict(section3))
            writer.session.write_mef_ts_segment_data(name, 0, None, None, self._block,
                                                     np.ascontiguousarray(ints[row]))
        self._writer = writer
        self._fix_extrema(extrema)
        self._records = RecordFiles(self.path, self._spare,
                                    os.path.join(self._spare_root, "stage"), writer.session)
        self._records.write_spare(records)
        os.rename(self._spare, self.path)       # the session appears whole
        for name in self.channels:              # the spare: shared .tdat, own small files
            live, spare = self._files(self.path, name), self._files(self._spare, name)
            os.makedirs(os.path.dirname(spare))
            os.link(live + ".tdat", spare + ".tdat")
            shutil.copyfile(live + ".tmet", spare + ".tmet")
            shutil.copyfile(live + ".tidx", spare + ".tidx")
        self._records.copy_to_spare()           # copies: never links (see append_records)

    def _sync_spare(self) -> None:
        """Make the spare (one append behind) equal to the live copy: O(one append).

        The shared ``.tdat`` loses the bytes an append that failed wrote past the live
        copy's end (pymef would append after them and index the new blocks wrongly).
        """
        for name, size in zip(self.channels, self._tdat_sizes):
            live, spare = self._files(self.path, name), self._files(self._spare, name)
            if os.path.getsize(live + ".tdat") > size:   # no reader's index reaches there
                os.truncate(live + ".tdat", size)
            with open(live + ".tmet", "rb") as f:
                tmet = f.read()
            with open(spare + ".tmet", "r+b") as f:
                f.write(tmet)
            have = os.path.getsize(spare + ".tidx")
            with open(live + ".tidx", "rb") as f:
                header = f.read(_UH_BYTES)
                f.seek(have)
                tail = f.read()
            with open(spare + ".tidx", "r+b") as f:
                f.write(header)
                f.seek(have)
                f.write(tail)

    def _fix_extrema(self, extrema: list[tuple[int, int] | None]) -> None:
        """Put every spare channel's min/max over all samples into its .tmet, CRCs too."""
        for row, name in enumerate(self.channels):
            ext = extrema[row]
            lo, hi = (ext[0] * self._ufact, ext[1] * self._ufact) if ext else (np.nan, np.nan)
            path = self._files(self._spare, name) + ".tmet"
            with open(path, "r+b") as f:
                raw = bytearray(f.read())
                if len(raw) != _TMET_BYTES:
                    raise OSError(errno.EIO, f"{path!r} has {len(raw)} bytes, not "
                                             f"{_TMET_BYTES}: not a MEF3 metadata file")
                old, new = bytes(raw[_MAX_AT:_MAX_AT + 16]), struct.pack("<dd", hi, lo)
                if old == new:
                    continue
                raw[_MAX_AT:_MAX_AT + 16] = new
                body_crc = struct.unpack_from("<I", raw, 4)[0]
                body_crc2 = crc_patched(body_crc, old, new, _TMET_BYTES - _MAX_AT - 16)
                head_crc = struct.unpack_from("<I", raw, 0)[0]
                head_crc2 = crc_patched(head_crc, struct.pack("<I", body_crc),
                                        struct.pack("<I", body_crc2), _UH_BYTES - 8)
                struct.pack_into("<II", raw, 0, head_crc2, body_crc2)
                f.seek(0)
                f.write(raw)
