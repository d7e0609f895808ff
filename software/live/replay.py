"""Replay: a MEF3 recording pushed into a live stream at X times real time.

:class:`Replay` reads the recording through the file service (the reader processes and the
block cache, one window of about a second at a time with the next one read ahead; never
the whole file) and pushes it into a :class:`~software.live.source.LiveStream` in chunks
of at most 10 ms of recording time and at most 1,000 samples. The pace follows an absolute
wall-clock schedule (chunk ``k`` is due at ``anchor + samples / (fs x speed)``), so lateness
never accumulates into drift; pause, seek and a speed change set a new anchor.

Sample index ``i`` of the stream is file sample ``p + (i - first_index)`` of the stretch
``(first_index, file_uutc)`` it lies in (``p`` the file grid index of ``file_uutc``): a new
stretch begins at each seek and each loop. Samples equal ``MefReader.get_data`` of the
recording's channels at the default rate, NaN in gaps. The file's records are pushed as
markers at their samples (:mod:`software.live.replay_markers`), in every stretch.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

from ..cache.recording import Recording
from ..errors import InvalidRangeError, ServiceClosedError
from ..mef3.metadata import grid_offset
from ..stream.source import FileSource
from ..validation import as_positive_float
from .replay_markers import ReplayMarkers
from .source import LiveStream

__all__ = ["MAX_SPEED", "MIN_SPEED", "Replay", "check_speed", "chunk_samples"]

logger = logging.getLogger(__name__)

#: Seconds of recording read from the file service at a time.
WINDOW_SECONDS = 1.0
#: Replay speeds allowed, in times real time.
MIN_SPEED, MAX_SPEED = 1e-3, 1e6
#: Longest single wait of the pushing thread, in seconds (it checks its schedule again).
LONGEST_WAIT = 60.0


def check_speed(name: str, value: object) -> float:
    """``value`` as a replay speed, from :data:`MIN_SPEED` to :data:`MAX_SPEED`.

    Parameters
    ----------
    name : str
        How the caller named it (``x``, ``speed``, ``--speed``), for the error.

    Raises
    ------
    InvalidTypeError, InvalidArgumentError, InvalidRangeError
        Not a number, not > 0, or outside the range (the message names it).
    """
    speed = as_positive_float(name, value, maximum=MAX_SPEED)
    if speed < MIN_SPEED:
        raise InvalidRangeError(f"{name}={speed:g} is too slow: a replay runs at "
                                f"{MIN_SPEED:g} to {MAX_SPEED:g} times real time; pass e.g. "
                                f"{name}=0.5 (or pause the replay).")
    return speed


def chunk_samples(fs: float) -> int:
    """Samples per push: at most 10 ms of recording time and at most 1,000 (at least 1)."""
    return max(1, min(1000, int(fs * 0.01)))


class Replay:
    """Push a recording's default-rate channels into a live stream.

    Parameters
    ----------
    recording : Recording
        The opened session (from the server's registry; given back with ``release``).
    speed : float
        Times real time, :data:`MIN_SPEED` to :data:`MAX_SPEED`.
    loop : bool
        Start again from the beginning at the end (a new stretch); otherwise stop there.
    history_seconds : float
        History of the stream's ring, in seconds of recording time.
    release : callable, optional
        Called with ``recording`` on :meth:`close` (the registry's ``release``).
    name : str, optional
        The stream's name (default: the session's file name).

    Attributes
    ----------
    stream : LiveStream
        The stream it pushes into (float64; ``stream.controller`` is this replay).
    """

    def __init__(self, recording: Recording, speed: float = 1.0, loop: bool = False,
                 history_seconds: float = 60.0, release=None, name: str | None = None) -> None:
        speed = check_speed("speed", speed)       # before anything is made
        self._recording = recording
        self._release = release
        info = recording.info
        self._group = group = recording.groups[info.default_fs]
        self._names = group.channels
        self._fs = group.fs
        self._n = group.n_samples
        self._file = FileSource(recording)
        self._chunk = chunk_samples(self._fs)
        self._window = self._chunk * max(1, int(round(WINDOW_SECONDS * self._fs / self._chunk)))
        self.stream = LiveStream(name or os.path.basename(recording.path.rstrip(os.sep)),
                                 self._names, self._fs, "float64", history_seconds,
                                 units=info.channel(self._names[0]).units)
        self.stream.controller = self
        self.stream.describe_with(self.describe)
        self._markers = ReplayMarkers(recording, group)
        self._speed = speed
        self._loop = bool(loop)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._paused = False
        self._position = 0
        self._anchor = (time.monotonic(), 0)      # (wall clock, file position) of the schedule
        self._stretches = [(0, group.start_uutc)]
        self._buffer: tuple[int, np.ndarray] | None = None   # (first file index, samples)
        self._ahead = None                                    # (first index, future)
        self._closed = False
        self._thread: threading.Thread | None = None

    # ---- controls (any thread) --------------------------------------------------------

    def start(self) -> Replay:
        """Start pushing on a background thread (idempotent); returns self."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._anchor = (time.monotonic(), self._position)
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"replay-{self.stream.name}")
                self._thread.start()
        return self

    def pause(self) -> None:
        """Stop pushing until :meth:`resume`."""
        with self._lock:
            self._paused = True
        self._wake.set()

    def resume(self) -> None:
        """Continue pushing, on a schedule that starts now."""
        with self._lock:
            if self._paused:
                self._paused = False
                self._anchor = (time.monotonic(), self._position)
        self._wake.set()

    def seek(self, uutc: int) -> int:
        """Continue from file time ``uutc`` (snapped to the grid): a new stretch.

        Returns
        -------
        int
            The stream index where the new stretch begins.

        Raises
        ------
        InvalidRangeError
            ``uutc`` lies outside the recording.
        """
        group = self._group
        index = grid_offset(int(uutc), group.start_uutc, self._fs)
        if not 0 <= index < self._n:
            raise InvalidRangeError(f"uutc={uutc} is outside the recording "
                                    f"[{group.start_uutc}, {group.end_uutc}); seek inside it.")
        with self._lock:
            first = self._new_stretch(index)
            self._anchor = (time.monotonic(), index)
        self._wake.set()
        return first

    def set_speed(self, x: float) -> float:
        """Push at ``x`` times real time from now on; returns the speed.

        Raises
        ------
        InvalidRangeError
            ``x`` is outside :data:`MIN_SPEED` .. :data:`MAX_SPEED` (nothing changes).
        """
        x = check_speed("x", x)
        with self._lock:
            self._speed = x
            self._anchor = (time.monotonic(), self._position)
        self._wake.set()
        return self._speed

    def describe(self) -> tuple[tuple[str, object], ...]:
        """``speed``, ``paused``, ``position_uutc``, ``stretches``, ``loop``, ``replaying``."""
        with self._lock:
            self._forget_stretches()
            return (("speed", self._speed), ("paused", self._paused),
                    ("position_uutc", self._group.sample_uutc(self._position)),
                    ("stretches", tuple(self._stretches)), ("loop", self._loop),
                    ("replaying", self.stream.name))

    @property
    def position(self) -> int:
        """File grid index of the next sample to push."""
        return self._position

    @property
    def stretches(self) -> tuple[tuple[int, int], ...]:
        """``(first_index, file_uutc)`` of the stretches the ring still holds samples of
        (older ones are forgotten as a new stretch begins)."""
        with self._lock:
            self._forget_stretches()
            return tuple(self._stretches)

    # ---- the pushing thread -------------------------------------------------------------

    def _new_stretch(self, index: int) -> int:
        """Move to file index ``index`` (holding the lock); returns the stretch's first index."""
        self._position = index
        first = self.stream.head
        entry = (first, self._group.sample_uutc(index))
        stretches = self._stretches
        if stretches and stretches[-1][0] == first:
            stretches[-1] = entry            # nothing was pushed from the previous one
        else:
            stretches.append(entry)
        self._forget_stretches()
        return first

    def _forget_stretches(self) -> None:
        """Drop the stretches the ring holds no sample of any more (holding the lock)."""
        stretches, oldest = self._stretches, self.stream.first_available
        while len(stretches) > 1 and stretches[1][0] <= oldest:
            del stretches[0]

    def _due(self) -> tuple[float | None, int, int]:
        """(seconds to wait or None for 'until woken', position, samples) under the lock."""
        p = self._position
        if self._paused or p >= self._n:
            return None, p, 0
        m = min(self._chunk, self._n - p)
        wall, at = self._anchor
        due = wall + (p + m - at) / (self._fs * self._speed)
        return due - time.monotonic(), p, m

    def _run(self) -> None:
        while not self._closed:
            try:
                if not self._step():
                    return
            except Exception:   # never let one bad step end the replay for good
                logger.exception("replay of %s: a step failed; going on in a second",
                                 self.stream.name)
                self._wake.wait(1.0)

    def _step(self) -> bool:
        """Push the next chunk when it is due, or wait; False once the stream closed."""
        self._wake.clear()
        with self._lock:
            wait, p, m = self._due()
        if wait is None or wait > 0:
            self._wake.wait(None if wait is None else min(wait, LONGEST_WAIT))
            return True
        try:
            data = self._samples(p, p + m)
            self._markers.load()        # read once, outside the lock
        except Exception:
            logger.exception("replay of %s: reading samples [%d, %d) failed; retrying",
                             self.stream.name, p, p + m)
            self._wake.wait(1.0)
            return True
        with self._lock:
            if self._closed or self._position != p or self._paused:
                return True       # a seek or pause came while reading
            try:   # the file's records become markers at their samples
                self._markers.push(self.stream, data, p)
            except ServiceClosedError:   # the stream was closed: so is this replay
                return False
            self._position = p + m
            if self._position >= self._n and self._loop:
                wall, at = self._anchor
                self._anchor = (wall, at - self._n)   # the schedule goes on unbroken
                self._new_stretch(0)
        return True

    def _samples(self, start: int, stop: int) -> np.ndarray:
        """File samples ``[start, stop)`` from the current window (read ahead)."""
        buffer = self._buffer
        if buffer is None or not buffer[0] <= start or stop > buffer[0] + buffer[1].shape[1]:
            ahead = self._ahead
            if ahead is not None and ahead[0] == start:
                future, end = ahead[1], ahead[2]
            else:
                end = min(self._n, start + self._window)
                future = self._file.gather(self._names, self._group, start, end)
            buffer = self._buffer = (start, future.result(timeout=120).assemble())
            nxt = min(self._n, end + self._window)
            self._ahead = (end, self._file.gather(self._names, self._group, end, nxt), nxt) \
                if end < self._n else None
            self._file.read_ahead(self._names, self._group, start, end, 1, 1)
        first, values = buffer
        return values[:, start - first:stop - first]

    def close(self) -> None:
        """Stop pushing, close the stream and give the recording back (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.stream.close()
        if self._release is not None:
            self._release(self._recording)

    def __enter__(self) -> Replay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Replay {self.stream.name!r} at {self._speed:g}x, position {self._position}"
                f"/{self._n}{' paused' if self._paused else ''}>")
