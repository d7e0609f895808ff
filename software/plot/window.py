"""A window of a stream drawn the way an EEG viewer shows it.

Stacked traces (first channel on top) at one common spacing in the session's units,
channel names on the left, UTC clock time below, a scale bar on the right ("100 µV"), and
gaps shaded grey and labelled: stretches the session lists as gaps, and samples that are
NaN in every channel (a NaN run of one channel shades only that channel's row). Long
windows are drawn as a min/max envelope per pixel column, which looks the same as every
sample. Figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot state), so
drawing works headless and in threads; notebooks display them.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
from typing import Iterator

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter
from matplotlib.transforms import blended_transform_factory

from .. import decode_segment
from ..errors import InvalidArgumentError, InvalidTypeError
from .marks import draw_records, window_records

#: Colours: traces, gap shading, gap labels, grid.
TRACE_COLOR = "#141414"
GAP_COLOR = "#d9d9d9"
GAP_TEXT_COLOR = "#555555"
GRID_COLOR = "#e6e6e6"
#: Margins of the axes in inches (left, right, bottom, top): room for names, scale bar, time.
MARGINS = (0.9, 1.0, 0.6, 0.45)
#: Figure width, and height per channel plus the margins, in inches; dots per inch.
WIDTH, ROW_HEIGHT, DPI = 11.0, 0.42, 100
#: Tick spacings of the time axis, seconds (multiples of them fall on round clock times).
TICK_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
              1800, 3600, 7200, 10800, 21600, 43200, 86400)


def figure_size(n_channels: int) -> tuple[float, float]:
    """Default (width, height) in inches of a window of ``n_channels`` traces."""
    return WIDTH, MARGINS[2] + MARGINS[3] + ROW_HEIGHT * max(n_channels, 3)


def new_figure(n_channels: int, figure_class=Figure, **kwargs):
    """A figure of the default size with one axes inside :data:`MARGINS`; returns (fig, ax)."""
    width, height = figure_size(n_channels)
    fig = figure_class(figsize=(width, height), dpi=DPI, **kwargs)
    left, right, bottom, top = MARGINS
    ax = fig.add_axes((left / width, bottom / height, 1 - (left + right) / width,
                       1 - (bottom + top) / height))
    return fig, ax


def nice_length(limit: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most ``limit``."""
    if not limit > 0 or not math.isfinite(limit):
        return 1.0
    power = 10.0 ** math.floor(math.log10(limit))
    return max(m * power for m in (1, 2, 5) if m * power <= limit * (1 + 1e-9))


def display_units(unit: str) -> str:
    """``uV`` -> ``µV`` (MEF3 writes the micro sign as u)."""
    unit = str(unit).strip() or "units"
    return "µ" + unit[1:] if unit[:1] == "u" and len(unit) <= 3 else unit


def robust_spacing(data: np.ndarray) -> float:
    """Distance between traces: 1.1 x the median over channels of the 1-99 % range."""
    ranges = []
    for row in data:
        finite = row[np.isfinite(row)]
        if finite.size:
            low, high = np.percentile(finite, [1, 99])
            ranges.append(high - low)
    spacing = 1.1 * float(np.median(ranges)) if ranges else 0.0
    return spacing if spacing > 0 else 1.0


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` index pairs of the True runs of a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _merge(spans: list[tuple[float, float]]) -> list[list[float]]:
    merged: list[list[float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def _envelope(data: np.ndarray, times: np.ndarray, columns: int):
    """Min/max per bin when there are many more samples than pixel columns."""
    n = data.shape[1]
    if n <= 4 * columns:
        return times, data
    step = math.ceil(n / (2 * columns))
    bins = math.ceil(n / step)
    padded = np.full((data.shape[0], bins * step), np.nan)
    padded[:, :n] = data
    shaped = padded.reshape(data.shape[0], bins, step)
    out = np.empty((data.shape[0], 2 * bins))
    out[:, 0::2] = np.fmin.reduce(shaped, axis=2)   # NaN only where the bin is all NaN
    out[:, 1::2] = np.fmax.reduce(shaped, axis=2)
    starts = times[::step][:bins]
    half = step / 2 * (times[1] - times[0])
    return np.column_stack((starts, starts + half)).ravel(), out


def _clock_axis(ax, x0: float, x1: float) -> None:
    """Ticks on round UTC clock times and HH:MM:SS labels (x is seconds since the epoch)."""
    span = max(x1 - x0, 1e-6)
    step = next((s for s in TICK_STEPS if span / s <= 10 and (s >= 1 or span < 2)),
                TICK_STEPS[-1])  # whole seconds from 2 s up
    ticks = np.arange(math.ceil(x0 / step) * step, x1 + step * 1e-9, step)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    if 1 < step and span <= 60:  # a faint line every second, as on EEG paper
        ax.xaxis.set_minor_locator(FixedLocator(np.arange(math.ceil(x0), x1, 1.0)))
        ax.grid(axis="x", which="minor", color=GRID_COLOR, lw=0.5)
        ax.tick_params(axis="x", which="minor", length=0)
    digits = 0 if step >= 1 else (1 if step >= 0.1 else 2)

    def label(value, _pos=None) -> str:
        moment = dt.datetime.fromtimestamp(round(value, 6), dt.timezone.utc)
        text = moment.strftime("%H:%M:%S")
        return text + f"{moment.microsecond / 1e6:.{digits}f}"[1:] if digits else text

    ax.xaxis.set_major_formatter(FuncFormatter(label))
    day = dt.datetime.fromtimestamp(x0, dt.timezone.utc).strftime("%Y-%m-%d")
    ax.set_xlabel(f"time (UTC), {day}")


def draw_window(data: np.ndarray, start_uutc: float, fs: float, names, units, *,
                gaps=(), recording: tuple[int, int | None] | None = None, ax=None,
                spacing: float | None = None, title: str | None = None, records=()):
    """Draw samples already read (channels x samples) as stacked traces.

    Parameters
    ----------
    data : numpy.ndarray
        Samples, channels x samples; NaN where there is no data.
    start_uutc : float
        Time stamp of the first sample (microseconds since the epoch).
    fs : float
        Sampling rate in Hz.
    names, units : sequence of str
        Channel names and units, one per row.
    gaps : sequence of (int, int)
        ``(start_uutc, stop_uutc)`` stretches without data (the session's gaps).
    recording : (int, int or None), optional
        Start and end of the recording: NaN outside it is labelled "no data", not "gap".
    ax : matplotlib.axes.Axes, optional
        Draw here (cleared first); default a new figure of :func:`figure_size`.
    spacing : float, optional
        Distance between traces in the session's units; default from the data.
    title : str, optional
        Shown above the traces, left.
    records : sequence of Record, optional
        Records to mark (see :mod:`software.plot.marks`): a labelled line at each
        instant, a shaded span over each duration.

    Returns
    -------
    matplotlib.figure.Figure
    """
    data = np.asarray(data, dtype=np.float64).reshape(len(names), -1)
    if ax is None:
        fig, ax = new_figure(len(names))
    else:
        fig = ax.figure
        ax.clear()
    n_rows, n = data.shape
    x0 = float(start_uutc) / 1e6
    times = x0 + np.arange(n) / float(fs)
    x1 = x0 + n / float(fs)
    spacing = float(spacing) if spacing else robust_spacing(data)
    offsets = -spacing * np.arange(n_rows)
    columns = max(100, int(ax.get_position().width * fig.get_figwidth() * fig.dpi))
    xs, ys = _envelope(data, times, columns)
    for row in range(n_rows):
        finite = data[row][np.isfinite(data[row])]
        centre = float(np.median(finite)) if finite.size else 0.0
        ax.plot(xs, ys[row] - centre + offsets[row], color=TRACE_COLOR, lw=0.6, zorder=2,
                solid_joinstyle="round")
    # gaps: the session's, plus NaN columns (all rows: full height; one row: its band)
    nan = ~np.isfinite(data)
    spans = [(a / 1e6, b / 1e6) for a, b in gaps if b / 1e6 > x0 and a / 1e6 < x1]
    spans += [(times[a], times[b - 1] + 1 / fs) for a, b in _runs(nan.all(axis=0))]
    shade_gaps(ax, fig, spans, x0, x1, recording)
    for row in range(n_rows):
        for a, b in _runs(nan[row] & ~nan.all(axis=0)):
            ax.fill_between((times[a], times[b - 1] + 1 / fs), offsets[row] - spacing / 2,
                            offsets[row] + spacing / 2, color=GAP_COLOR, lw=0, zorder=1)
    # axes: names on the left, clock time below, a scale bar on the right
    ax.set_xlim(x0, x1)
    ax.set_ylim(offsets[-1] - 0.75 * spacing, 0.75 * spacing)
    draw_records(ax, records, names, offsets, spacing, x0, x1)
    style_axes(ax, names, offsets, spacing, units, x0, x1)
    if title:
        ax.set_title(title, loc="left", fontsize=10)
    start_text = dt.datetime.fromtimestamp(x0, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    ax.set_title(f"{start_text} UTC, {n / float(fs):g} s", loc="right", fontsize=9,
                 color=GAP_TEXT_COLOR)
    return fig


@contextlib.contextmanager
def active_channels(stream, channels) -> Iterator[dict]:
    """``stream``'s info with ``channels`` active (None: as they are); the channels that
    were active are set again on leaving."""
    info = dict(stream.get_info())
    previous = tuple(info["channels"])
    if channels is not None and tuple(channels) != previous:
        stream.set_active_channels(tuple(channels))
        info = dict(stream.get_info())
    try:
        yield info
    finally:
        if tuple(info["channels"]) != previous:
            stream.set_active_channels(previous)


def shade_gaps(ax, fig, spans, x0: float, x1: float, recording) -> None:
    """Shade ``spans`` (seconds; merged, cut to ``[x0, x1]``) and label each "gap", or
    "no data" outside ``recording`` (``(start_uutc, end_uutc or None)`` or None)."""
    for a, b in _merge([(max(a, x0), min(b, x1)) for a, b in spans]):
        ax.axvspan(a, b, color=GAP_COLOR, lw=0, zorder=1)
        outside = recording is not None and (b <= recording[0] / 1e6 or (
            recording[1] is not None and a >= recording[1] / 1e6))
        ax.text((a + b) / 2, 1 - 4 / (ax.get_position().height * fig.get_figheight() * 72),
                "no data" if outside else "gap", transform=blended_transform_factory(
                    ax.transData, ax.transAxes), ha="center", va="top", fontsize=9,
                color=GAP_TEXT_COLOR, zorder=3, clip_on=True)


def style_axes(ax, names, offsets, spacing: float, units, x0: float, x1: float) -> None:
    """Channel names on the left, clock time below, a scale bar on the right (the axes of
    a window and of an overview alike)."""
    ax.set_yticks(offsets, [str(n) for n in names])
    ax.tick_params(axis="y", length=0, labelsize=9)
    ax.tick_params(axis="x", labelsize=9)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="x", color=GRID_COLOR, lw=0.8)
    ax.set_axisbelow(True)
    _clock_axis(ax, x0, x1)
    unit_names = list(dict.fromkeys(str(u) for u in units)) or ["units"]
    length = nice_length(spacing)
    side = blended_transform_factory(ax.transAxes, ax.transData)
    y = offsets[-1]
    ax.plot((1.02, 1.02), (y - length / 2, y + length / 2), color=TRACE_COLOR, lw=2,
            transform=side, clip_on=False, solid_capstyle="butt")
    label = f"{length:g} {display_units(unit_names[0])}"
    ax.text(1.035, y, label + ("\n(mixed units)" if len(unit_names) > 1 else ""),
            transform=side, va="center", ha="left", fontsize=9, clip_on=False)


def save(fig, path: str) -> None:
    """Write the figure; a PNG of at most 256 colours (traces in greys: the usual case) is
    written with a palette, losslessly, about half the size of matplotlib's RGBA file."""
    if not str(path).lower().endswith(".png"):
        fig.savefig(path)
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image  # a dependency of matplotlib
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[:, :, :3].astype(np.uint32)
    packed = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    colours, index = np.unique(packed, return_inverse=True)
    if len(colours) > 256:
        fig.savefig(path)
        return
    image = Image.fromarray(index.reshape(packed.shape).astype(np.uint8), mode="P")
    palette = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1)
    image.putpalette(palette.astype(np.uint8).ravel().tolist())
    image.save(path, optimize=True, dpi=(fig.dpi, fig.dpi))


def start_index(start, info: dict) -> int:
    """Grid index of ``start``: None (the start; a growing stream's last window is chosen
    by the caller), seconds from the start, or a datetime / numpy.datetime64 (UTC)."""
    if start is None:
        return 0
    if isinstance(start, np.datetime64):
        uutc = int(start.astype("datetime64[us]").astype(np.int64))
    elif isinstance(start, dt.datetime):
        moment = start if start.tzinfo else start.replace(tzinfo=dt.timezone.utc)
        uutc = round((moment - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))
                     / dt.timedelta(microseconds=1))
    elif isinstance(start, (int, float, np.integer, np.floating)) and math.isfinite(start):
        return int(round(float(start) * float(info["fs"])))
    else:
        raise InvalidTypeError(f"start={start!r} must be None, seconds from the start of the "
                        f"recording, or a datetime (UTC)")
    return int(round((uutc - int(info["start_uutc"])) * float(info["fs"]) / 1e6))


def plot_window(stream, start=None, seconds: float = 10, channels=None, ax=None, *,
                spacing: float | None = None, title: str | None = None):
    """Read a window from a stream and draw it (see :func:`draw_window`).

    Parameters
    ----------
    stream : StreamService
        ``conn.root.open_file(path)`` (or any object with ``get_info`` and
        ``get_stream_segment``).
    start : float, datetime or None
        Seconds from the start of the recording, or a UTC clock time; None: the start (the
        newest ``seconds`` of a growing stream).
    seconds : float
        Length of the window.
    channels : sequence of str, optional
        Channels in this order; default the stream's active channels. The stream's active
        channels are put back afterwards.
    ax : matplotlib.axes.Axes, optional
        Draw here instead of a new figure.
    spacing : float, optional
        Distance between traces in the session's units.
    title : str, optional
        Default: the session's path.

    The stream's records (notes, annotations, live markers) in the window are marked.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise InvalidArgumentError(f"seconds={seconds!r} must be a positive number of seconds")
    with active_channels(stream, channels) as info:
        fs = float(info["fs"])
        count = max(1, int(round(seconds * fs)))
        n = int(info["n_samples"])
        first = (max(0, n - count) if start is None and info.get("growing")
                 else start_index(start, info))
        data = np.full((len(info["channels"]), count), np.nan)
        lo, hi = max(first, 0), min(first + count, n)
        if hi > lo:
            got = decode_segment(stream.get_stream_segment(hi - lo, lo))
            if got is not False:
                data[:, lo - first:lo - first + got.shape[-1]] = got
    begin = int(info["start_uutc"]) + first * 1e6 / fs
    end = None if info.get("growing") else int(info["end_uutc"])
    return draw_window(data, begin, fs, info["channels"], info["units"], gaps=info["gaps"],
                       recording=(int(info["start_uutc"]), end), ax=ax, spacing=spacing,
                       title=str(info["path"]) if title is None else title,
                       records=window_records(stream, begin, begin + count * 1e6 / fs))
