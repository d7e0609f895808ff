"""Records drawn on a window: a labelled line per instant, a shaded span per duration.

A session-level record (or a live marker) spans every trace; a channel-level one only its
channel's row (and is left out when that channel is not drawn). Labels sit at the top of
what the mark spans, left-aligned just after its start, cut to :data:`LABEL_CHARS`.
"""
from __future__ import annotations

import logging

from matplotlib.transforms import blended_transform_factory

from ..client.records import Record, as_record

__all__ = ["LABEL_CHARS", "MARK_COLOR", "SPAN_COLOR", "draw_records", "window_records"]

logger = logging.getLogger(__name__)

#: Colours: the line of an instant (and every label), the shading of a duration.
MARK_COLOR = "#c2185b"
SPAN_COLOR = "#f8d7e6"
#: A label's background: the traces behind it fade, so it stays legible.
_BOX = {"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 0.5}
#: Characters of a record's text shown in its label.
LABEL_CHARS = 28


def window_records(stream, start_uutc: float, stop_uutc: float) -> list[Record]:
    """The records overlapping a window, or none when the stream gives none.

    Parameters
    ----------
    stream : StreamService, RemoteStream or proxy
        Anything with ``get_records(start_uutc, stop_uutc)``; an object without it (or a
        server that refuses it) gives no records, and the window is drawn without.
    start_uutc, stop_uutc : float
        The window, in microseconds.
    """
    get = getattr(stream, "get_records", None)
    if get is None:
        return []
    try:
        return [as_record(r) for r in get(int(start_uutc), int(stop_uutc) + 1)]
    except (AttributeError, NotImplementedError) as exc:
        logger.debug("no records for the window: %r", exc)
        return []


def _label(record: Record) -> str:
    text = record.text or record.type
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


def draw_records(ax, records, names, offsets, spacing: float, x0: float, x1: float) -> int:
    """Draw ``records`` on a window's axes (x in seconds since the epoch).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The window's axes.
    records : iterable of Record or wire tuples
        What to draw.
    names : sequence of str
        The channels of the rows, top to bottom.
    offsets : sequence of float
        The rows' vertical positions.
    spacing : float
        Distance between rows.
    x0, x1 : float
        The window.

    Returns
    -------
    int
        Marks drawn.
    """
    rows = {str(n): i for i, n in enumerate(names)}
    top = ax.get_ylim()[1]
    drawn = 0
    pad = (x1 - x0) * 0.003
    for record in map(as_record, records):
        a = record.time_uutc / 1e6
        b = record.end_uutc / 1e6
        if b < x0 or a > x1:
            continue
        if record.channel is None:
            low, high = None, top
        elif record.channel in rows:
            centre = offsets[rows[record.channel]]
            low, high = centre - spacing / 2, centre + spacing / 2
        else:
            continue                       # a channel that is not drawn
        if b > a:
            if low is None:
                ax.axvspan(max(a, x0), min(b, x1), color=SPAN_COLOR, lw=0, zorder=1.5)
            else:
                ax.fill_between((max(a, x0), min(b, x1)), low, high, color=SPAN_COLOR, lw=0,
                                zorder=1.5)
        if x0 <= a <= x1:
            if low is None:
                ax.axvline(a, color=MARK_COLOR, lw=1.2, zorder=2.5)
            else:
                ax.plot((a, a), (low, high), color=MARK_COLOR, lw=1.2, zorder=2.5)
        where = max(a, x0)
        if low is None:
            ax.text(where + pad, 0.985, _label(record), transform=blended_transform_factory(
                ax.transData, ax.transAxes), ha="left", va="top", fontsize=8,
                color=MARK_COLOR, zorder=3.5, clip_on=True, bbox=_BOX)
        else:
            ax.text(where + pad, high, _label(record), ha="left", va="top", fontsize=7,
                    color=MARK_COLOR, zorder=3.5, clip_on=True, bbox=_BOX)
        drawn += 1
    return drawn
