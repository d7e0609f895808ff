"""A replay's markers: the file's records pushed as markers at their sample positions.

Each push of file samples ``[p, p + m)`` is cut at the records whose grid index lies in
it; before the samples of a record's position are pushed, the record becomes a marker at
the stream's head (its text, or its type when it has none; its duration; its channel), so
a follower gets it with the chunk that holds its sample. Seeks and loops need nothing
more: what is pushed is looked up by file position, every push::

    Replay._run --> ReplayMarkers.push(stream, samples, p)
        --> RecordTable.by_index(group, p, p + m) (read once, cached by the Recording)
        --> pushes cut at those positions, stream.append_marker(...) between them

Runs in the replay's pushing thread.
"""
from __future__ import annotations

import logging

import numpy as np

from ..cache.recording import Recording
from ..mef3.metadata import RateGroup
from ..mef3.records import MAX_MARKER_SECONDS, marker_text

__all__ = ["ReplayMarkers"]

logger = logging.getLogger(__name__)

#: Seconds the replay waits for a reader to read the file's records the first time.
RECORDS_TIMEOUT = 120.0


class ReplayMarkers:
    """The records of a replayed file, turned into markers as their samples are pushed.

    Parameters
    ----------
    recording : Recording
        The replayed session.
    group : RateGroup
        The replayed channels' grid (file positions are its indices).
    """

    def __init__(self, recording: Recording, group: RateGroup) -> None:
        self._recording = recording
        self._group = group
        self._table = None
        self.pushed = 0

    def load(self) -> None:
        """Read the file's records now (the first time; the replay's thread, no lock held)."""
        self._records()

    def _records(self):
        if self._table is None:
            try:
                self._table = self._recording.records.table(timeout=RECORDS_TIMEOUT)
            except Exception:  # the samples go on; only the markers are missing
                logger.exception("replay of %s: its records could not be read; replaying "
                                 "without markers", self._recording.path)
                from ..cache.records import RecordTable
                self._table = RecordTable(())
        return self._table

    def push(self, stream, data: np.ndarray, p: int) -> int:
        """Push file samples ``data`` (channels x m, from file index ``p``) with markers.

        Returns
        -------
        int
            The stream's head after the push.
        """
        table = self._records()
        m = data.shape[1]
        positions = table.by_index(self._group, p, p + m) if len(table) else ()
        if len(positions) == 0:
            return stream.append_stream_segment_data(data)
        done = 0
        for wire in table.answer(positions, self._group):
            at = wire[1] - p
            if at > done:
                stream.append_stream_segment_data(data[:, done:at])
                done = at
            duration = min(max(wire[4] or 0, 0) / 1e6, MAX_MARKER_SECONDS)
            stream.append_marker(marker_text(wire[3] or wire[2]), duration=duration,
                                 channel=wire[5])
            self.pushed += 1
        if done < m:
            return stream.append_stream_segment_data(data[:, done:])
        return stream.head
