"""MEF3 sessions with records, written with mef_tools' ``MefWriter.write_annotations``."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pandas as pd

from software.mef3.writer import MefWriter, write_session
from tests.util import FS, START

#: Length of the events session in samples (2 minutes at 256 Hz).
N_EVENTS = int(120 * FS)


def at(seconds: float) -> int:
    """uUTC of ``seconds`` after START."""
    return START + int(round(seconds * 1e6))


def sample_time(index: int, fs: float = FS) -> int:
    """uUTC of grid sample ``index``."""
    return START + int(round(index * 1e6 / fs))


#: Session-level records: (time, type, text, duration in us or 0).
SESSION_NOTES = [
    (at(-1.0), "Note", "before the start", 0),
    (at(1.0), "Note", "eyes closed", 0),
    (sample_time(1000), "Note", "on sample 1000", 0),
    (at(5.0), "EDFA", "seizure onset", 2_000_000),
    (at(30.5), "EDFA", "long artefact", 10_000_000),
    (at(60.0), "Note", "eyes open", 0),
    (at(60.0), "EDFA", "same time as a note", 250_000),
    (at(119.0), "Note", "near the end", 0),
    (at(125.0), "Note", "after the end", 0),
]
#: A seizure record (session level), with its channels.
SEIZURE = {"time": at(80.0), "type": "Seiz", "earliest_onset": at(80.0),
           "latest_offset": at(95.0), "duration": 15_000_000, "number_of_channels": 1,
           "onset_code": 2, "marker_name_1": "onset", "marker_name_2": "offset",
           "annotation": "focal seizure", "channels": [
               {"name": "a", "onset": at(80.0), "offset": at(95.0)}]}
#: Channel-level records by channel.
CHANNEL_NOTES = {
    "a": [(at(3.0), "EDFA", "spike train", 500_000), (at(45.0), "Note", "electrode pop", 0)],
    "b": [(at(7.0), "Note", "b flat", 0)],
}


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame({"time": [r[0] for r in rows], "type": [r[1] for r in rows],
                         "text": [r[2] for r in rows], "duration": [r[3] for r in rows]})


def write_annotations(writer: MefWriter, frame: pd.DataFrame, channel=None) -> None:
    """``MefWriter.write_annotations`` without its prints on stdout."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        writer.write_annotations(frame, channel=channel)


def write_events_session(path: str) -> str:
    """``events.mefd``: channels ``index`` (sample index / 100), ``a``, ``b`` at 256 Hz for
    2 minutes, with the records above at session and channel level."""
    index = np.arange(N_EVENTS, dtype=np.float64) / 100.0
    rng = np.random.default_rng(11)
    write_session(path, {"index": index, "a": np.round(rng.normal(0, 30, N_EVENTS), 2),
                         "b": np.round(rng.normal(0, 30, N_EVENTS), 2)}, FS, START)
    writer = MefWriter(path, overwrite=False)
    try:
        write_annotations(writer, _frame(SESSION_NOTES))
        write_annotations(writer, pd.DataFrame([SEIZURE]))
        for channel, rows in CHANNEL_NOTES.items():
            write_annotations(writer, _frame(rows), channel=channel)
    finally:
        writer.session.close()
    return path


def write_many_records(path: str, n_records: int, seconds: float, fs: float = 256.0,
                       n_channels: int = 2, seed: int = 5) -> str:
    """A session of ``seconds`` (zeros) with ``n_records`` session-level Notes and EDFAs
    spread over it at random times."""
    n = int(seconds * fs)
    write_session(path, {f"c{k}": np.zeros(n) for k in range(n_channels)}, fs, START)
    rng = np.random.default_rng(seed)
    times = np.sort(START + rng.integers(0, int(seconds * 1e6), n_records))
    kinds = np.where(rng.random(n_records) < 0.5, "Note", "EDFA")
    durations = np.where(kinds == "EDFA", rng.integers(1, 30_000_000, n_records), 0)
    frame = pd.DataFrame({"time": times, "type": kinds,
                          "text": [f"event {k}" for k in range(n_records)],
                          "duration": durations})
    writer = MefWriter(path, overwrite=False)
    try:
        write_annotations(writer, frame)
    finally:
        writer.session.close()
    return path
