"""A bounded ring of samples per live stream: every channel's recent history, by index.

Sample index 0 is the first sample pushed; indices keep growing. Channel ``r`` holds
``counts[r]`` samples in all, of which the ring keeps the last :attr:`Ring.capacity`. The
stream's head is the smallest count: where every channel has samples.

Rows pushed one at a time (``append_stream_row_data``) may run ahead of the head by at most
:attr:`Ring.slack` samples, so that a request of at most :attr:`Ring.history` samples that
ends past the head is never overwritten before the head reaches its end.

Writers (one producer at a time: :class:`~software.live.source.LiveStream` holds its lock)
announce the highest index they are about to write (:attr:`Ring.reserved`) before writing,
so that a reader copying without the lock can tell afterwards whether the samples it
copied were overwritten meanwhile (:meth:`Ring.copy` then returns False).
"""
from __future__ import annotations

import numpy as np

__all__ = ["DTYPES", "Ring"]

#: Sample types a live stream may hold (rigs produce int16).
DTYPES = ("float64", "float32", "int16", "int32")


class Ring:
    """Samples of ``n_channels`` channels, the last ``history + slack`` of each.

    Parameters
    ----------
    n_channels : int
        Channels (rows).
    history : int
        Samples every channel keeps at least (the longest request that can wait).
    dtype : str
        One of :data:`DTYPES`.
    """

    def __init__(self, n_channels: int, history: int, dtype: str = "float64") -> None:
        self.history = int(history)
        self.slack = max(1, self.history // 4)
        self.capacity = self.history + self.slack
        self.dtype = np.dtype(dtype)
        self._data = np.zeros((int(n_channels), self.capacity), dtype=self.dtype)
        self.counts = np.zeros(int(n_channels), dtype=np.int64)
        self.head = 0
        #: highest count any row has or is being written to (readers check it after a copy)
        self.reserved = 0

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return self._data.shape[0]

    @property
    def nbytes(self) -> int:
        """Memory the samples take."""
        return self._data.nbytes

    @property
    def first_available(self) -> int:
        """The oldest index every channel still holds."""
        return max(0, self.reserved - self.capacity)

    def write(self, block: np.ndarray, rows: slice | int = slice(None)) -> None:
        """Append ``block`` (rows x n, already of the ring's dtype) at the rows' counts.

        Every row written must have the same count (a segment: all rows at the head; a
        row push: one row). At most :attr:`capacity` samples are written per call.
        """
        n = block.shape[-1]
        if n == 0:
            return
        at = int(self.counts[rows] if isinstance(rows, int) else self.counts[rows][0])
        self.reserved = max(self.reserved, at + n)
        lo = at % self.capacity
        first = min(n, self.capacity - lo)
        self._data[rows, lo:lo + first] = block[..., :first]
        if first < n:
            self._data[rows, :n - first] = block[..., first:]
        self.counts[rows] += n
        self.head = int(self.counts.min())

    def copy(self, rows, start: int, stop: int, out: np.ndarray) -> bool:
        """Copy samples ``[start, stop)`` of ``rows`` into ``out`` (len(rows) x n).

        Safe without the writer's lock: returns False when a write overwrote some of them
        before or during the copy (the caller then reports them dropped; ``out`` holds
        nothing usable). The caller checked that ``stop <= head``.
        """
        lo = start % self.capacity
        n = stop - start
        first = min(n, self.capacity - lo)
        data = self._data
        out[:, :first] = data[rows, lo:lo + first]
        if first < n:
            out[:, first:] = data[rows, :n - first]
        return start >= self.reserved - self.capacity
