"""pymef's sample read over a window of blocks, without pymef loading any block table.

pymef (1.4.8) reads samples through a C ``CHANNEL`` struct whose segments hold their whole
``.tidx`` in memory (56 bytes a block in every process), and its Python metadata adds a
4 x int64 TOC per block on top. Here the metadata is read from a *shadow* of the session (a
temporary tree of symbolic links whose ``.tidx`` files hold one entry), so pymef's C structs
cost O(channels x segments); the shadow is removed right after. For each read
:meth:`PymefChannel.read` points one segment's index at a small array of just the blocks
wanted (rebased to start at sample 0), sets the segment's sample and block counts and the
data file's length to match, makes the channel that one segment, calls pymef's
``read_mef_ts_data`` for all of it, and restores every field. pymef then decodes exactly
these blocks into consecutive samples; it cannot add a block (as a plain sample-range read
that ends on a block boundary does).

The struct offsets follow meflib.h (packed structs) and pymef's own dtypes, and are checked
on every channel at open against what the structs must hold (file names, header pointers);
any mismatch raises :class:`~software.errors.CorruptSessionError` naming the pymef version.
"""
from __future__ import annotations

import ctypes
import os
import warnings

import numpy as np
import pymef
from pymef.mef_file import pymef3_file as _mef

from ..errors import CorruptSessionError
from .block_table import ENTRY, ENTRY_BYTES, HEADER_BYTES
from .scratch import SHADOW_PREFIX, OwnedDir

_SEG = _mef.create_segment_dtype()
_CH = _mef.create_channel_dtype()
_PATH = _SEG.fields["path"][0].itemsize  # MEF_FULL_FILE_NAME_BYTES
# FILE_PROCESSING_STRUCT fields (meflib packs its structs: #pragma pack(1))
_FPS_FILE_LENGTH = _PATH + 12
_FPS_UNIVERSAL_HEADER = _PATH + 24
_FPS_TS_INDICES = _PATH + 90
_FPS_RAW_DATA_BYTES = _PATH + 130
_FPS_RAW_DATA = _PATH + 138
_SEG_METADATA_FPS = _SEG.fields["metadata_fps"][1]
_SEG_DATA_FPS = _SEG.fields["time_series_data_fps"][1]
_SEG_INDICES_FPS = _SEG.fields["time_series_indices_fps"][1]
_CH_NUMBER_OF_SEGMENTS = _CH.fields["number_of_segments"][1]
_CH_SEGMENTS = _CH.fields["segments"][1]


def _u64(address: int) -> ctypes.c_uint64:
    return ctypes.c_uint64.from_address(address)


def _i64(address: int) -> ctypes.c_int64:
    return ctypes.c_int64.from_address(address)


def _address(arr: np.ndarray) -> int:
    return arr.ctypes.data


def build_shadow(path: str) -> tuple[OwnedDir, str]:
    """A temporary copy of the tree of ``path``: links to every file, one-entry ``.tidx``.

    Returns the locked scratch directory (remove it when done; a reader killed before
    that leaves it to :func:`~software.mef3.scratch.sweep_owned`) and the session's copy
    in it.
    """
    shadow = OwnedDir.create(SHADOW_PREFIX)
    try:
        dest = os.path.join(shadow.path, os.path.basename(path))
        for root, _dirs, files in os.walk(path):
            here = os.path.join(dest, os.path.relpath(root, path))
            os.makedirs(here, exist_ok=True)
            for name in files:
                src, dst = os.path.join(root, name), os.path.join(here, name)
                if name.endswith(".tidx"):
                    with open(src, "rb") as fh:
                        head = bytearray(fh.read(HEADER_BYTES + ENTRY_BYTES))
                    if len(head) == HEADER_BYTES + ENTRY_BYTES:
                        head[32:40] = (1).to_bytes(8, "little", signed=True)  # entries
                    with open(dst, "wb") as fh:
                        fh.write(head)
                else:
                    os.symlink(src, dst)
    except BaseException:
        shadow.remove()
        raise
    return shadow, dest


def read_shadow_metadata(path: str, password: str | None) -> dict:
    """pymef's session metadata read from a shadow of ``path`` (removed before returning)."""
    shadow, dest = build_shadow(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _mef.read_mef_session_metadata(dest, password, map_indices_flag=False)
    finally:
        shadow.remove()


class PymefChannel:
    """One channel's C structs (from the shadow metadata), re-pointed for each read.

    Parameters
    ----------
    name : str
        Channel name.
    channel_md : dict
        ``session_md['time_series_channels'][name]`` of the shadow metadata.
    segment_names : list of str
        Segment names in order.
    real_folder : str
        The channel's ``.timd`` directory in the real session.
    """

    def __init__(self, name: str, channel_md: dict, segment_names: list[str],
                 real_folder: str) -> None:
        self.name = name
        self._csm = channel_md["channel_specific_metadata"]
        self._ch = _address(self._csm)
        self._n_segments = _i64(self._ch + _CH_NUMBER_OF_SEGMENTS).value
        self._segments_ptr = _u64(self._ch + _CH_SEGMENTS).value
        seg_size = channel_md["segments"][segment_names[0]]["segment_specific_metadata"] \
            .strides[0]
        self._s2, self._seg, self._idx_fps, self._data_fps = [], [], [], []
        for k, seg_name in enumerate(segment_names):
            seg_md = channel_md["segments"][seg_name]
            seg = self._segments_ptr + k * seg_size
            self._check(seg == _address(seg_md["segment_specific_metadata"]), "segment array")
            idx_fps, data_fps = _u64(seg + _SEG_INDICES_FPS).value, _u64(seg + _SEG_DATA_FPS).value
            self._check(_u64(seg + _SEG_METADATA_FPS).value != 0 and idx_fps and data_fps,
                        "segment pointers")
            idx_name = ctypes.string_at(idx_fps, _PATH).split(b"\0")[0]
            data_name = ctypes.string_at(data_fps, _PATH).split(b"\0")[0]
            self._check(idx_name.endswith(f"{seg_name}.tidx".encode())
                        and data_name.endswith(f"{seg_name}.tdat".encode()), "file names")
            raw = _u64(idx_fps + _FPS_RAW_DATA).value
            self._check(_u64(idx_fps + _FPS_UNIVERSAL_HEADER).value == raw
                        and _u64(idx_fps + _FPS_TS_INDICES).value == raw + HEADER_BYTES
                        and _i64(idx_fps + _FPS_RAW_DATA_BYTES).value
                        == HEADER_BYTES + ENTRY_BYTES, "index file struct")
            real = os.path.join(real_folder, f"{seg_name}.segd", f"{seg_name}.tdat")
            self._check(os.path.getsize(real) == _i64(data_fps + _FPS_FILE_LENGTH).value,
                        "data file length")
            encoded = real.encode()
            if len(encoded) >= _PATH:
                raise CorruptSessionError(f"path {real!r} is longer than MEF3 allows")
            ctypes.memmove(data_fps, encoded + b"\0", len(encoded) + 1)  # the shadow is gone
            self._seg.append(seg)
            self._s2.append(seg_md["section_2"])
            self._idx_fps.append(idx_fps)
            self._data_fps.append(data_fps)

    def _check(self, ok: bool, what: str) -> None:
        if not ok:
            raise CorruptSessionError(
                f"channel {self.name!r}: pymef {pymef.__version__}'s C structs do not have "
                f"the layout mefstream expects ({what}); mefstream supports pymef 1.4.8.")

    def read(self, segment: int, entries: np.ndarray) -> np.ndarray:
        """Decode the blocks ``entries`` (consecutive in the ``.tdat``) of ``segment``.

        Returns their samples as float64 (stored integers, NaN for RED's NaN), in order.
        """
        e = np.array(entries, dtype=ENTRY)  # own, contiguous copy: pymef reads it
        e["start_sample"] -= e["start_sample"][0]
        count = int(e["number_of_samples"].astype(np.int64).sum())
        end = int(e["file_offset"][-1]) + int(e["block_bytes"][-1])
        s2 = self._s2[segment]
        saved = (int(s2["start_sample"][0]), int(s2["number_of_samples"][0]),
                 int(s2["number_of_blocks"][0]))
        idx_ptr = _u64(self._idx_fps[segment] + _FPS_TS_INDICES)
        length = _i64(self._data_fps[segment] + _FPS_FILE_LENGTH)
        n_segs, seg_ptr = _i64(self._ch + _CH_NUMBER_OF_SEGMENTS), _u64(self._ch + _CH_SEGMENTS)
        saved_ptrs = (idx_ptr.value, length.value)
        try:
            s2["start_sample"], s2["number_of_samples"], s2["number_of_blocks"] = 0, count, len(e)
            idx_ptr.value, length.value = _address(e), end
            n_segs.value, seg_ptr.value = 1, self._seg[segment]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = _mef.read_mef_ts_data(self._csm, 0, count)
        finally:
            n_segs.value, seg_ptr.value = self._n_segments, self._segments_ptr
            idx_ptr.value, length.value = saved_ptrs
            s2["start_sample"], s2["number_of_samples"], s2["number_of_blocks"] = saved
        bad = [str(w.message) for w in caught if "fewer" in str(w.message)
               or "CRC" in str(w.message)]
        if out is None or len(out) != count or bad:
            raise CorruptSessionError(
                f"channel {self.name!r}: pymef decoded {0 if out is None else len(out)} of "
                f"{count} samples from byte {int(e['file_offset'][0])} "
                f"({'; '.join(bad) or 'no warning'}); the data file looks truncated or "
                f"damaged.")
        return out
