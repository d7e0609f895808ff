"""Session-level records of an :class:`~software.mef3.append.AppendingSession`, grown with
its appends: the same two copies, the same one-system-call exchange.

The live copy and the spare each have their own ``.rdat``/``.ridx`` (copies, never hard
links: a link would let a write into the spare reach the live copy). An append that
brings records::

    bring the spare's record files up to the live copy's (its header, the tail it lacks)
    -> pymef writes only the new records into a staging directory
    -> their bytes are appended to the spare's files (index offsets moved past what the
       spare holds), the universal headers updated (entries, longest entry, first and
       last time, the index's body CRC continued over the new bytes, header CRCs)
    -> the caller exchanges spare and live with the samples of the same append

So a SIGKILL leaves the live copy with the records of the appends it holds and none torn;
an append costs O(its records), not O(all records). Times are stored as pymef stores
them (the recording time offset applied, i.e. negated with offset 0), so the headers'
first/last times are compared on the real times.
"""
from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Sequence

from ..errors import InvalidArgumentError
from .crc import crc_update
from .records import check_storable, fields_dict

__all__ = ["RecordFiles"]

_UH = 1024                  # universal header bytes
_INDEX_ENTRY = 24           # RECORD_INDEX bytes
_CRC_NONE = 0


def _real(stored: int) -> int:
    """A time as pymef stores it (offset 0: negated) -> microseconds since the epoch."""
    return -stored if stored < 0 else stored


class RecordFiles:
    """The session-level record files of both copies of an appending session.

    Parameters
    ----------
    live, spare : str
        The live session directory and the spare copy (same base name).
    stage : str
        A scratch directory (inside the spare's root) for pymef's writes.
    session : pymef.mef_session.MefSession
        The writer's session (for pymef's record encoding).
    """

    def __init__(self, live: str, spare: str, stage: str, session) -> None:
        self._live = live
        self._spare = spare
        self._stage = stage
        self._session = session
        self._base = os.path.basename(live)[:-len(".mefd")]

    def _files(self, root: str) -> tuple[str, str]:
        base = os.path.join(root, self._base)
        return base + ".rdat", base + ".ridx"

    @staticmethod
    def check(records: Sequence[tuple]) -> None:
        """Refuse records MEF3 cannot store (before anything of the append is written)."""
        for record in records:
            check_storable(record[1], record[5])
            if record[4] is not None:
                raise InvalidArgumentError(
                    f"a record of channel {record[4]!r} cannot go into an appending session, "
                    f"which writes session-level records only; pass channel None.")

    def sync_spare(self) -> None:
        """Make the spare's record files equal the live copy's (O(the last append))."""
        for live, spare in zip(self._files(self._live), self._files(self._spare)):
            if not os.path.exists(live):
                return
            if not os.path.exists(spare):
                shutil.copyfile(live, spare)
                continue
            have = os.path.getsize(spare)
            with open(live, "rb") as f:
                header = f.read(_UH)
                f.seek(have)
                tail = f.read()
            if os.path.getsize(live) < have:   # an append that failed left records here
                shutil.copyfile(live, spare)
                continue
            with open(spare, "r+b") as f:
                f.write(header)
                f.seek(have)
                f.write(tail)

    def copy_to_spare(self) -> None:
        """After the first append: the new spare gets copies of the live record files."""
        for live, spare in zip(self._files(self._live), self._files(self._spare)):
            if os.path.exists(live):
                shutil.copyfile(live, spare)

    def write_spare(self, records: Sequence[tuple]) -> None:
        """Add ``records`` to the spare's record files (synced with :meth:`sync_spare`)."""
        if not records:
            return
        rdat, ridx = self._files(self._spare)
        if not os.path.exists(rdat):
            self._pymef_write(os.path.dirname(rdat), records)
        else:
            stage = os.path.join(self._stage, os.path.basename(self._live))
            shutil.rmtree(self._stage, ignore_errors=True)
            os.makedirs(stage)
            self._pymef_write(stage, records)
            new_rdat, new_ridx = (os.path.join(stage, os.path.basename(p)) for p in (rdat, ridx))
            self._splice(rdat, ridx, new_rdat, new_ridx)
            shutil.rmtree(self._stage, ignore_errors=True)

    def _pymef_write(self, directory: str, records: Sequence[tuple]) -> None:
        from pymef.mef_file.pymef3_file import write_mef_data_records
        dicts = [{"type": r[1], "time": int(r[0]), **fields_dict(r[5])} for r in records]
        times = [d["time"] for d in dicts]
        np_records = [self._session._create_np_record(d) for d in dicts]
        write_mef_data_records(directory.rstrip("/") + "/", None, None, min(times),
                               max(times), 0, np_records)

    @staticmethod
    def _splice(rdat: str, ridx: str, new_rdat: str, new_ridx: str) -> None:

        with open(new_rdat, "rb") as f:
            add_header = f.read(_UH)
            add_data = f.read()
        with open(new_ridx, "rb") as f:
            f.seek(_UH)
            add_index = bytearray(f.read())
        shift = os.path.getsize(rdat) - _UH
        for at in range(0, len(add_index), _INDEX_ENTRY):   # file_offset of each entry
            (offset,) = struct.unpack_from("<q", add_index, at + 8)
            struct.pack_into("<q", add_index, at + 8, offset + shift)
        add_start, add_end, add_n, add_max = struct.unpack_from("<qqqq", add_header, 16)
        for path, body in ((rdat, add_data), (ridx, bytes(add_index))):
            with open(path, "r+b") as f:
                header = bytearray(f.read(_UH))
                start, end, n, longest = struct.unpack_from("<qqqq", header, 16)
                if _real(add_start) < _real(start):
                    start = add_start
                if _real(add_end) > _real(end):
                    end = add_end
                if path == rdat:
                    longest = max(longest, add_max)
                struct.pack_into("<qqqq", header, 16, start, end, n + add_n, longest)
                (body_crc,) = struct.unpack_from("<I", header, 4)
                if body_crc != _CRC_NONE:    # pymef leaves the data file's at 0
                    struct.pack_into("<I", header, 4, crc_update(body, body_crc))
                struct.pack_into("<I", header, 0, crc_update(bytes(header[4:])))
                f.seek(0, os.SEEK_END)
                f.write(body)
                f.seek(0)
                f.write(header)
