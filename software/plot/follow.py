"""A window that scrolls as a stream advances: live streams, replays, or a file played back.

:func:`windows` yields the successive windows (the newest ``seconds`` of data, moving by
what arrived), woken by the server's callbacks through
:meth:`~software.StreamSegmentIterator.next_or_wait`; for a growing stream it starts at the
newest data and waits for more, for a file it runs from ``start`` to the end.
:func:`follow` draws them: a matplotlib animation in a window, or, headless (no display,
or ``frames=DIR``), one PNG per window.
"""
from __future__ import annotations

import itertools
import logging
import os
import sys

import numpy as np

from .. import decode_segment
from ..client.iterators import StreamSegmentIterator
from .marks import window_records
from .window import draw_window, new_figure, robust_spacing, save, start_index

logger = logging.getLogger(__name__)


def has_display() -> bool:
    """Whether a window can be opened (macOS and Windows always; X11/Wayland if set)."""
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def windows(stream, seconds: float = 10.0, step: float = 1.0, start=None,
            timeout: float | None = None):
    """Yield ``(first_index, data)``: the window, each time the stream has advanced.

    Parameters
    ----------
    stream : StreamService
        Its active channels are the rows.
    seconds : float
        Window length.
    step : float
        Seconds read per wait: the window moves by this much (less at a live edge).
    start : float, datetime or None
        First window's start (seconds from the start or a UTC clock time); None: the
        start of a file, the newest data of a growing stream.
    timeout : float, optional
        Stop when no data arrived for this long (default: wait as long as it takes).

    Yields
    ------
    (int, numpy.ndarray)
        Grid index of the window's first sample, and channels x window samples (NaN
        where nothing has arrived yet). The array is the generator's own: copy it to keep
        it past the next step.
    """
    info = dict(stream.get_info())
    fs = float(info["fs"])
    width = max(1, int(round(seconds * fs)))
    chunk = max(1, int(round(step * fs)))
    n = int(info["n_samples"])
    if start is None:
        first = max(0, n - width) if info.get("growing") else 0
    else:
        first = max(0, start_index(start, info))
    buffer = np.full((len(info["channels"]), width), np.nan)
    filled = 0
    if first < n:
        got = decode_segment(stream.get_stream_segment(min(width, n - first), first))
        if got is not False:
            filled = int(got.shape[-1])
            buffer[:, :filled] = got
    yield first, buffer
    iterator = StreamSegmentIterator(_range=chunk, start=first + filled)
    while True:
        got = iterator.next_or_wait(stream, timeout=timeout)
        if got is False:  # the end of a file, or nothing arrived within timeout
            return
        got = np.asarray(got)
        end = first + filled + got.shape[-1]        # grid index after the newest sample
        newest = max(first, end - width)            # the window's new first sample
        shift = newest - first
        if shift >= filled:                         # nothing old stays in view
            buffer[:] = np.nan
            buffer[:, :end - newest] = got[:, got.shape[-1] - (end - newest):]
        else:                                       # scroll, then append
            buffer[:, :filled - shift] = buffer[:, shift:filled].copy()
            buffer[:, filled - shift:end - newest] = got
        first, filled = newest, end - newest
        yield first, buffer


def follow(stream, seconds: float = 10.0, step: float = 1.0, channels=None, start=None,
           frames: str | None = None, max_frames: int | None = None,
           timeout: float | None = None) -> list[str]:
    """Show a window that scrolls with the stream; headless, write one PNG per window.

    Parameters
    ----------
    stream : StreamService
        A live, replayed or file stream.
    seconds, step, start, timeout
        As for :func:`windows`.
    channels : sequence of str, optional
        Make these the stream's active channels first.
    frames : str, optional
        Directory to write ``frame_00000.png``... into instead of opening a window (also
        used, as ``frames/``, when there is no display).
    max_frames : int, optional
        Stop after this many windows.

    Returns
    -------
    list of str
        The frames written (empty after an interactive window is closed).
    """
    if channels is not None:
        stream.set_active_channels(tuple(channels))
    info = dict(stream.get_info())
    growing = bool(info.get("growing"))
    names, units, fs = info["channels"], info["units"], float(info["fs"])
    title = str(info["path"])
    source = windows(stream, seconds, step, start, timeout)
    if max_frames is not None:
        source = itertools.islice(source, int(max_frames))
    spacing: list[float] = []

    def draw(ax, first: int, data: np.ndarray) -> None:
        nonlocal info
        if not spacing:  # one scale for the whole run, or the traces would jump
            spacing.append(robust_spacing(data))
        if growing:      # new gaps appear as the stream grows
            info = dict(stream.get_info())
        start_uutc = int(info["start_uutc"]) + first * 1e6 / fs
        end = None if growing else int(info["end_uutc"])
        draw_window(data, start_uutc, fs, names, units, gaps=info["gaps"],
                    recording=(int(info["start_uutc"]), end), ax=ax, spacing=spacing[0],
                    title=title, records=window_records(
                        stream, start_uutc, start_uutc + data.shape[1] * 1e6 / fs))

    if frames is None and has_display():
        import matplotlib.pyplot as plt
        from matplotlib.animation import FuncAnimation
        fig, ax = new_figure(len(names), figure_class=plt.figure)
        interval = 50 if growing else int(step * 1000)  # a file is played at real time
        animation = FuncAnimation(fig, lambda window: draw(ax, *window), frames=source,
                                  interval=interval, repeat=False, cache_frame_data=False)
        plt.show()
        del animation
        return []
    frames = frames or "frames"
    os.makedirs(frames, exist_ok=True)
    fig, ax = new_figure(len(names))
    written = []
    for number, (first, data) in enumerate(source):
        draw(ax, first, data)
        path = os.path.join(frames, f"frame_{number:05d}.png")
        save(fig, path)
        written.append(path)
        logger.debug("frame %s: window from sample %d", path, first)
    return written
