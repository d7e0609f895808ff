"""The records of an export: fetched with the samples' window, written beside or into them.

A ``.csv`` or ``.npz`` export writes its records to ``X.records.csv`` beside it (one row per
record: ``time_uutc``, ``sample`` (row of the exported samples it falls on; negative
before them), ``type``, ``text``, ``duration_us``, ``channel``, ``fields`` as JSON); a
``.mefd`` export carries them as MEF3 records at their level (session or channel). Records
of channels not exported are left out. They are fetched once the samples are written (an
export interrupted while it waits for samples asks for none), and a record MEF3 cannot
store stops a ``.mefd`` export before it takes the place of ``--out``.
"""
from __future__ import annotations

import csv
import json
import os

from ..client.records import Record, all_records
from ..mef3.records import check_storable
from .common import UsageError, uutc_of

__all__ = ["check_mef", "check_output", "fetch", "records_path", "write"]


def fetch(stream, info: dict, first: int, stop: int) -> list[Record]:
    """The records overlapping samples ``[first, stop)`` of the exported channels."""
    names = set(str(n) for n in info["channels"])
    found = all_records(stream, uutc_of(info, first), uutc_of(info, stop))
    return [r for r in found if r.channel is None or r.channel in names]


def check_mef(records: list[Record]) -> None:
    """Refuse records a ``.mefd`` export cannot carry (before the export is in place).

    Raises
    ------
    UsageError
        Names ``--out`` and the record (a ``.csv`` export keeps every record).
    """
    for record in records:
        try:
            check_storable(record.type, tuple(record.fields.items()), argument="type")
        except ValueError as exc:
            raise UsageError("--out", f"the record at {record.time_uutc} ({record.text!r}) "
                             f"cannot go into a .mefd export: {exc} A .csv or .npz export "
                             f"keeps it in X.records.csv.") from None


def records_path(out: str) -> str:
    """``X.records.csv`` beside ``X.csv`` / ``X.npz``."""
    return os.path.splitext(out)[0] + ".records.csv"


def check_output(out: str, overwrite: bool) -> None:
    """Refuse an existing ``X.records.csv`` beside a ``.csv``/``.npz`` ``--out`` unless
    ``overwrite`` (checked before anything is written, as --out itself).

    Raises
    ------
    UsageError
        Names ``--out`` and the records file.
    """
    if out.lower().endswith(".mefd"):
        return
    path = records_path(out)
    if os.path.lexists(path) and not overwrite:
        raise UsageError("--out", f"{path!r} (the export's records) exists; pass --overwrite "
                         f"to replace it")


def write(out: str, records: list[Record], first: int) -> str | None:
    """Write the records of a finished export; returns where (None: nothing written).

    A ``.mefd`` export gets them as MEF3 records; a ``.csv``/``.npz`` one
    ``X.records.csv`` (written whole, then renamed); without records an ``X.records.csv``
    left by an earlier export (``--overwrite``) is removed, so none stands beside the new
    output.
    """
    if out.lower().endswith(".mefd"):
        if not records:
            return None
        from ..mef3.record_writer import write_records  # pymef: only for a MEF3 export

        have = {n[:-5] for n in os.listdir(out) if n.endswith(".timd")}
        write_records(out, [(r.time_uutc, r.type, r.text, r.duration, r.channel,
                             tuple(r.fields.items())) for r in records
                            if r.channel is None or r.channel in have])
        return out
    path = records_path(out)
    if not records:
        if os.path.lexists(path):
            os.remove(path)
        return None
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8", newline="") as file:
        rows = csv.writer(file, lineterminator="\n")
        rows.writerow(["time_uutc", "sample", "type", "text", "duration_us", "channel",
                       "fields"])
        for r in records:
            rows.writerow([r.time_uutc, r.index - first, r.type, r.text,
                           "" if r.duration is None else r.duration, r.channel or "",
                           json.dumps(r.fields, ensure_ascii=False, default=_plain)])
    os.replace(partial, path)
    return path


def _plain(value):
    return list(value) if isinstance(value, tuple) else str(value)
