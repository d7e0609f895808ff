"""Pictures of streams: :func:`plot_window` (one window, for notebooks and ``plot``),
:func:`plot_overview` (min/max bands of a whole recording, ``plot --overview``) and
:func:`follow` (a window that scrolls as a live or replayed stream advances).

matplotlib is imported only by this package; :func:`plot_window` draws on a plain
:class:`~matplotlib.figure.Figure` (no pyplot), so it works headless.
"""
from .follow import follow, windows
from .overview import draw_overview, plot_overview
from .window import draw_window, plot_window

__all__ = ["draw_overview", "draw_window", "follow", "plot_overview", "plot_window",
           "windows"]
