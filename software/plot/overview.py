"""An overview of a whole recording (or a long stretch): each channel's min/max band.

:func:`plot_overview` asks the server for ``get_envelope`` in about one bin per pixel
column (a 24 h recording comes from the MEF block tables in milliseconds, nothing
decoded) and draws every channel as a filled band between its minimum and maximum, rows
stacked as in :func:`~software.plot.window.draw_window` (names left, UTC clock below, a
scale bar right). Bins without any sample are left empty; stretches empty in every
channel, and the session's gaps, are shaded grey and labelled "gap" (or "no data" outside
the recording). The bins are drawn at the edges the server returns, so what is drawn is
exactly each bin's extremes.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

from .. import decode_segment
from ..errors import InvalidArgumentError
from .window import (GAP_TEXT_COLOR, _runs, active_channels, new_figure, shade_gaps,
                     start_index, style_axes)

__all__ = ["BAND_COLOR", "draw_overview", "envelope_of", "plot_overview"]

#: Colour of the min/max bands.
BAND_COLOR = "#2b4c7e"


def envelope_of(stream, start: int, stop: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``stream.get_envelope`` as arrays, from a RemoteStream or a plain RPyC view."""
    value = stream.get_envelope(int(start), int(stop), int(n_bins))
    if value is False:
        raise InvalidArgumentError(f"no data from grid sample {start} on: nothing to draw")
    env, edges = value
    if not isinstance(env, np.ndarray):
        env, edges = decode_segment(env), decode_segment(edges)
    return np.asarray(env, dtype=np.float64), np.asarray(edges, dtype=np.int64)


def draw_overview(env: np.ndarray, edges_uutc: np.ndarray, names, units, *, gaps=(),
                  recording: tuple[int, int | None] | None = None, ax=None,
                  spacing: float | None = None, title: str | None = None):
    """Draw an envelope already fetched: one min/max band per channel.

    Parameters
    ----------
    env : numpy.ndarray
        (2, channels, bins): minima and maxima, NaN for a bin without samples.
    edges_uutc : numpy.ndarray
        bins + 1 bin edges, microseconds since the epoch.
    names, units : sequence of str
        Channel names and units, one per row.
    gaps : sequence of (int, int)
        ``(start_uutc, stop_uutc)`` stretches without data (the session's gaps).
    recording : (int, int or None), optional
        Start and end of the recording: empty stretches outside it say "no data".
    ax : matplotlib.axes.Axes, optional
        Draw here (cleared first); default a new figure.
    spacing : float, optional
        Distance between rows in the session's units; default from the bands.
    title : str, optional
        Shown above the bands, left.

    Returns
    -------
    matplotlib.figure.Figure
    """
    env = np.asarray(env, dtype=np.float64)
    n_rows, n_bins = env.shape[1], env.shape[2]
    if ax is None:
        fig, ax = new_figure(n_rows)
    else:
        fig = ax.figure
        ax.clear()
    x = np.asarray(edges_uutc, dtype=np.float64) / 1e6
    x0, x1 = float(x[0]), float(x[-1])
    empty = np.isnan(env[0]) | np.isnan(env[1])
    if spacing is None and not empty.all():   # 1.25 x a typical channel's wide bands
        with np.errstate(invalid="ignore"):
            widths = np.nanpercentile(np.where(empty, np.nan, env[1] - env[0]), 90, axis=1)
        spacing = 1.25 * float(np.nanmedian(widths)) if np.isfinite(widths).any() else 0.0
    spacing = float(spacing) if spacing and spacing > 0 else 1.0
    offsets = -spacing * np.arange(n_rows)
    for row in range(n_rows):
        lows, highs = env[0, row], env[1, row]
        finite = ~empty[row]
        centre = float(np.median((lows[finite] + highs[finite]) / 2)) if finite.any() else 0.0
        # each bin spans [edges[k], edges[k+1]): draw it as a step over that span
        xs = np.repeat(x, 2)[1:-1]
        ax.fill_between(xs, np.repeat(lows, 2) - centre + offsets[row],
                        np.repeat(highs, 2) - centre + offsets[row],
                        where=np.repeat(finite, 2), color=BAND_COLOR, lw=0, zorder=2,
                        interpolate=False)
    spans = [(a / 1e6, b / 1e6) for a, b in gaps if b / 1e6 > x0 and a / 1e6 < x1]
    spans += [(x[a], x[b]) for a, b in _runs(empty.all(axis=0))]
    shade_gaps(ax, fig, spans, x0, x1, recording)
    ax.set_xlim(x0, x1)
    ax.set_ylim(offsets[-1] - 0.75 * spacing, 0.75 * spacing)
    style_axes(ax, names, offsets, spacing, units, x0, x1)
    if title:
        ax.set_title(title, loc="left", fontsize=10)
    start_text = dt.datetime.fromtimestamp(x0, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    hours = (x1 - x0) / 3600
    span = f"{hours:.3g} h" if hours >= 1 else f"{(x1 - x0):.4g} s"
    ax.set_title(f"{start_text} UTC, {span}, min/max of {n_bins} bins", loc="right",
                 fontsize=9, color=GAP_TEXT_COLOR)
    return fig


def plot_overview(stream, start=None, seconds: float | None = None, channels=None, ax=None,
                  *, bins: int | None = None, spacing: float | None = None,
                  title: str | None = None):
    """Fetch an envelope from a stream and draw it (see :func:`draw_overview`).

    Parameters
    ----------
    stream : RemoteStream or StreamService
        ``conn.root.open_file(path)`` (anything with ``get_info`` and ``get_envelope``).
    start : float, datetime or None
        Seconds from the start of the recording, or a UTC clock time; None: the start.
    seconds : float, optional
        Length drawn; default to the end of the recording (or of what a live stream has).
    channels : sequence of str, optional
        Channels in this order (the stream's active channels are put back afterwards).
    ax : matplotlib.axes.Axes, optional
        Draw here instead of a new figure.
    bins : int, optional
        Number of bins; default one per pixel column of the axes.
    spacing : float, optional
        Distance between rows in the session's units.
    title : str, optional
        Default: the session's path.

    Returns
    -------
    matplotlib.figure.Figure
    """
    with active_channels(stream, channels) as info:
        fs, n = float(info["fs"]), int(info["n_samples"])
        first = start_index(start, info)
        stop = n if seconds is None else first + max(1, int(round(float(seconds) * fs)))
        first, stop = max(first, 0), min(stop, n)
        if stop <= first:
            raise InvalidArgumentError(f"start={start!r}, seconds={seconds!r} hold no "
                                       f"sample of the recording (0 .. {n / fs:g} s)")
        if ax is None:
            fig, ax = new_figure(len(info["channels"]))
        columns = int(ax.get_position().width * ax.figure.get_figwidth() * ax.figure.dpi)
        env, edges = envelope_of(stream, first, stop, bins or max(100, columns))
    origin = int(info["start_uutc"])
    edges_uutc = origin + np.round(edges * (1e6 / fs))
    end = None if info.get("growing") else int(info["end_uutc"])
    return draw_overview(env, edges_uutc, info["channels"], info["units"], gaps=info["gaps"],
                         recording=(origin, end), ax=ax, spacing=spacing,
                         title=str(info["path"]) if title is None else title)
