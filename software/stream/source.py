"""The seam between a StreamService and what it serves: a file recording, or a live ring.

A :class:`~software.stream.service.StreamService` validates a client's arguments, turns
them into grid samples ``[start, stop)`` of some channels of one rate, and asks its
:class:`Source` for them; it does not know whether a reader pool decodes them from a MEF3
session (:class:`FileSource`) or a producer pushes them into a ring (``software.live``)::

    StreamService --info / group(fs)----------> Source
                  --gather(names, group, a, b)-->  Future of an Answer (assemble(out))
                  --read_ahead(...)------------->  a hint: the client moves this way
                  --run_with(run)--------------->  the view's thread, to answer waiters in
                  --push_segment / push_row---->  live sources only
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Protocol

import numpy as np

from ..cache.recording import Recording
from ..errors import InvalidRangeError, StreamError
from ..mef3.metadata import RateGroup, SessionInfo

__all__ = ["Answer", "FileSource", "Source"]


class Answer(Protocol):
    """The samples of one request, every one available: built into an array once."""

    shape: tuple[int, int]

    def assemble(self, out=None) -> np.ndarray:
        """The answer, built into the array ``out(shape)`` returns if it returns one."""


class Source(ABC):
    """What a view serves: channels of one or more rates on a sample grid.

    Attributes
    ----------
    growing : bool
        Whether samples are still being added (a live stream). A request that reaches
        past the end of a growing source is not an error: it is not ready yet.
    dtype : numpy.dtype
        The type of every answer.
    longest : int or None
        Most samples one request may span (a live ring's history); None: no such bound.
    """

    growing: bool = False
    dtype: np.dtype = np.dtype(np.float64)
    longest: int | None = None

    @property
    @abstractmethod
    def info(self) -> SessionInfo:
        """Channels (names, rates, units), default rate and gaps."""

    @abstractmethod
    def group(self, fs: float) -> RateGroup:
        """The grid of the channels sampled at ``fs``, as it is now (a live one grows)."""

    @abstractmethod
    def gather(self, names: Sequence[str], group: RateGroup, start: int,
               stop: int) -> Future:
        """A future of the :class:`Answer` for grid samples ``[start, stop)`` of ``names``.

        The future is done at once when the samples are at hand. Cancelling a future that
        is not done withdraws the request (a view does so when it closes).

        Raises
        ------
        StreamError
            The samples can never be had (a live ring dropped them already).
        """

    def read_ahead(self, names: Sequence[str], group: RateGroup, start: int, stop: int,
                   direction: int, depth: int) -> None:
        """Hint that a client moving in ``direction`` just asked for ``[start, stop)``."""

    def extra_info(self) -> tuple[tuple[str, object], ...]:
        """Further ``(name, value)`` pairs for a view's ``get_info`` (live streams)."""
        return ()

    def push_segment(self, data: object) -> int:
        """Append samples of every channel (CREPE's ``append_stream_segment_data``)."""
        raise StreamError("this stream is read-only: its samples come from a MEF3 file. "
                          "Serve a live stream (python start.py --live NAME --channels ... "
                          "--fs ...) to push samples.")

    def push_row(self, row: object, data: object) -> int:
        """Append samples of one channel (CREPE's ``append_stream_row_data``)."""
        return self.push_segment(data)

    def check_segment(self, seconds: float, samples: int, fs: float) -> None:
        """Refuse a segment of ``seconds`` (``samples`` at ``fs``) this source can never answer.

        Raises
        ------
        InvalidRangeError
            Longer than :attr:`longest`; the message names the longest allowed.
        """
        longest = self.longest
        if longest is not None and samples > longest:
            raise InvalidRangeError(
                f"seconds={seconds:g} ({samples} samples) is longer than the "
                f"{longest / fs:g} s ({longest} samples) this stream keeps; set at most "
                f"{longest / fs:g} s.")

    def run_with(self, run: Callable[[Callable[[], None]], None]) -> None:
        """Where to run the work of answering this view's waiting requests.

        ``run(job)`` runs ``job()`` in the view's delivery thread. A live source answers
        (and copies out) its requests there when a push completes them, not in the
        producer's thread; other sources ignore it.
        """

    def close(self) -> None:
        """Withdraw this view's claims on the source (idempotent)."""


class FileSource(Source):
    """One view's access to a shared :class:`~software.cache.recording.Recording`.

    Holds the view's read-ahead plan, so that small steps inside blocks already being read
    ahead ask nothing more of the readers.

    Parameters
    ----------
    recording : Recording
        The opened session (shared by every view of it).
    """

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self._last_plan: tuple | None = None
        self._lock = threading.Lock()

    @property
    def info(self) -> SessionInfo:
        """The session's metadata."""
        return self.recording.info

    def group(self, fs: float) -> RateGroup:
        """The fixed grid of the channels at ``fs``."""
        return self.recording.groups[fs]

    def gather(self, names, group, start, stop) -> Future:
        """Blocks from the cache, read by the reader processes where missing."""
        return self.recording.gather(names, group, start, stop)

    def read_ahead(self, names, group, start, stop, direction, depth) -> None:
        """Read ahead of a client that moves through the file, in its direction.

        Ahead means ``depth`` requests of this size but at least two reader runs (2 x
        60 s), so small steps are read in efficient runs and a reader finishing one run
        has the next waiting (with one run ahead, a client with no work between requests
        left the readers idle a quarter of a cold pass); nearer parts get the better
        reader priority.
        """
        if depth <= 0:
            return
        recording, n = self.recording, group.n_samples
        size = recording.block_samples(group)
        length = stop - start
        step = max(length, recording.run_blocks * size)
        ahead = max(depth * length, 2 * step)
        lo, hi = (stop, min(stop + ahead, n)) if direction > 0 else (max(start - ahead, 0),
                                                                     start)
        spans = []  # (first block, last block, priority), nearest first
        for i, edge in enumerate(range(0, hi - lo, step), start=1):
            a, b = (lo + edge, min(lo + edge + step, hi)) if direction > 0 else \
                (max(hi - edge - step, lo), hi - edge)
            spans.append((a // size, (b - 1) // size, i))
        plan = (tuple(names), group.fs, tuple(spans))
        with self._lock:
            if plan == self._last_plan:  # small steps within the same blocks: done already
                return
            self._last_plan = plan
        for first, last_block, priority in spans:
            recording.prefetch(names, group, first * size, (last_block + 1) * size,
                               priority=priority)

    def __repr__(self) -> str:
        return f"<FileSource {self.recording!r}>"
