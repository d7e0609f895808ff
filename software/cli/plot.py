"""Draw a window of a session as an EEG viewer does, into a PNG (or SVG, PDF).

Stacked traces with channel names, UTC clock time, a scale bar in the session's units and
gaps shaded. With --overview each channel is a min/max band over the whole recording (or
--start/--seconds), from the server's envelope: hours in milliseconds. With --follow the
window scrolls through a live or replayed stream (from --start, --step seconds at a time):
in a window on a display, otherwise as PNG frames in --frames DIR.
"""
from __future__ import annotations

import argparse
import os

from .common import (
    UsageError,
    add_session_arguments,
    argument,
    connect,
    sample_index,
    select_channels,
)
from .target import open_target
from .times import parse_seconds

HELP = "draw a window of a session (traces, clock time, scale bar, gaps) into a PNG"

#: Extensions matplotlib's Agg, SVG and PDF backends write.
FORMATS = (".png", ".svg", ".pdf")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``plot``."""
    add_session_arguments(parser)
    parser.add_argument("--start", default=None, metavar="T",
                        help="UTC clock time or seconds from the start (default the start; "
                             "with --follow on a live stream, the newest data)")
    parser.add_argument("--seconds", default=None, metavar="S",
                        help="length of the window (default 10; with --overview: to the "
                             "end of the recording)")
    parser.add_argument("--channels", default=None, metavar="A,B",
                        help="channels, top to bottom (default: every channel of the most "
                             "common rate)")
    parser.add_argument("--spacing", type=float, default=None, metavar="UNITS",
                        help="distance between traces in the session's units (default from "
                             "the data)")
    parser.add_argument("--out", default="window.png", metavar="FILE",
                        help="picture to write: .png, .svg or .pdf (default window.png)")
    parser.add_argument("--overview", action="store_true",
                        help="draw each channel's min/max band (gaps shaded) instead of "
                             "traces; for hours of recording")
    parser.add_argument("--follow", action="store_true",
                        help="scroll through the stream as it advances (window, or frames)")
    parser.add_argument("--step", default="1", metavar="S",
                        help="with --follow: seconds the window moves per frame (default 1)")
    parser.add_argument("--frames", default=None, metavar="DIR",
                        help="with --follow: write PNG frames into DIR instead of a window "
                             "(the default without a display: ./frames)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="with --follow: stop after N frames")


def _seconds(text: str, option: str) -> float:
    with argument(option):
        value = parse_seconds(text)
    if not value > 0:
        raise UsageError(option, f"{text!r} must be more than 0 seconds")
    return value


def run(args: argparse.Namespace) -> int:
    """Write the picture (or the frames, or show the scrolling window)."""
    seconds = _seconds(args.seconds or "10", "--seconds")
    if args.overview and args.follow:
        raise UsageError("--overview", "cannot be combined with --follow")
    step = _seconds(args.step, "--step")
    ext = os.path.splitext(args.out)[1].lower()
    if not args.follow and ext not in FORMATS:
        raise UsageError("--out", f"{args.out!r} has an unknown extension; use one of "
                         f"{', '.join(FORMATS)}")
    if args.spacing is not None and not 0 < args.spacing < float("inf"):
        raise UsageError("--spacing", f"{args.spacing:g} must be > 0 and finite")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError("--max-frames", f"{args.max_frames} must be >= 1")
    import matplotlib
    if not args.follow or args.frames is not None:
        matplotlib.use("Agg")          # a file only: no display needed
    from ..plot import follow, plot_window
    from ..plot.window import save
    conn = connect(args)
    try:
        stream, info = open_target(conn, args)
        info = select_channels(stream, info, args.channels)
        start = None
        if args.start is not None:
            first = sample_index(args.start, "--start", info)
            if not (0 <= first < int(info["n_samples"]) or info.get("growing")):
                raise UsageError("--start", f"{args.start!r} is outside the recording")
            start = first / float(info["fs"])
        if args.follow:
            written = follow(stream, seconds=seconds, step=step, start=start,
                             frames=args.frames, max_frames=args.max_frames)
            if written:
                print(f"wrote {len(written)} frames: {written[0]} ... {written[-1]}")
            return 0
        if args.overview:
            from ..plot import plot_overview
            seconds = None if args.seconds is None else seconds
            figure = plot_overview(stream, start=start, seconds=seconds, spacing=args.spacing)
        else:
            figure = plot_window(stream, start=start, seconds=seconds, spacing=args.spacing)
    finally:
        conn.close()
    try:
        save(figure, args.out)
    except OSError as exc:
        raise OSError(f"cannot write --out {args.out!r}: {exc.strerror or exc}") from None
    width, height = figure.get_size_inches() * figure.dpi
    shown = f"{seconds:g} s" if seconds is not None else (
        "the whole recording" if args.start is None else "to the end")
    kind = "min/max overview of " if args.overview else ""
    print(f"wrote {args.out} ({int(round(width))} x {int(round(height))} px, "
          f"{len(info['channels'])} channels, {kind}{shown})")
    return 0
