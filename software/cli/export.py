"""Export a stretch of a session to .npz, .csv or .mefd, read through the service in segments.

Never holds more than one segment (``--segment-seconds``, default 60 s) in memory: each is
read from the server and appended to the output before the next is asked for (the server
reads ahead meanwhile). A MEF3 export read back with MefReader equals the service's samples
rounded to ``--precision`` decimals.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .. import decode_segment, errors
from .common import (
    UsageError,
    add_session_arguments,
    connect,
    positive_seconds,
    sample_range,
    select_channels,
    uutc_of,
)
from . import record_export
from .formats import SINKS
from .target import open_target
from .times import format_clock, format_duration

HELP = "export a stretch of a session to .npz, .csv or .mefd (streamed in segments)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``export``."""
    add_session_arguments(parser)
    parser.add_argument("--channels", default=None, metavar="A,B",
                        help="channels in this order (default: every channel of the most "
                             "common rate)")
    parser.add_argument("--start", default=None, metavar="T",
                        help="UTC clock time (2024-01-01T00:05:00) or seconds from the start "
                             "(300, 300s); default the start")
    parser.add_argument("--stop", default=None, metavar="T",
                        help="end of the export, exclusive (same forms); default the end")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="X.npz, X.csv or X.mefd (the extension chooses the format)")
    parser.add_argument("--precision", type=int, default=2,
                        help="decimal digits kept in a .mefd export (default 2)")
    parser.add_argument("--segment-seconds", type=float, default=60.0, metavar="S",
                        help="read and write this much at a time (default 60)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def check_output(args: argparse.Namespace) -> type:
    """Validate --out, --precision and --segment-seconds; returns the sink class."""
    out = args.out.rstrip("/" + os.sep)
    ext = os.path.splitext(out)[1].lower()
    if ext not in SINKS:
        raise UsageError("--out", f"{args.out!r} has an unknown extension; use one of "
                         f"{', '.join(SINKS)}")
    if os.path.lexists(out) and not args.overwrite:
        raise UsageError("--out", f"{args.out!r} exists; pass --overwrite to replace it")
    if not 0 <= args.precision <= 9:
        raise UsageError("--precision", f"{args.precision} must be between 0 and 9 digits")
    positive_seconds("--segment-seconds", args.segment_seconds, maximum=86400.0)
    args.out = out
    return SINKS[ext]


def progress_bar(total_seconds: float, label: str):
    """A tqdm bar in seconds of recording, on a terminal only (stderr)."""
    from tqdm import tqdm
    return tqdm(total=round(total_seconds, 3), unit="s", desc=label, leave=False,
                disable=not sys.stderr.isatty(),
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                           "[{elapsed}<{remaining}]")


def run(args: argparse.Namespace) -> int:
    """Export ``[--start, --stop)`` of ``PATH`` into ``--out``."""
    sink_class = check_output(args)
    conn = connect(args)
    try:
        stream, info = open_target(conn, args)
        info = select_channels(stream, info, args.channels)
        first, stop = sample_range(args, info)
        fs, names = float(info["fs"]), tuple(info["channels"])
        record_export.check_output(args.out, args.overwrite)
        step = max(1, int(round(args.segment_seconds * fs)))
        if info.get("growing"):   # a live stream: its newest history, a ring at a time
            if args.start is None:  # (the oldest samples are the next to be overwritten)
                history = int(round(float(info["history_seconds"]) * fs))
                first = max(first, int(info["first_available"]), stop - history)
            step = min(step, int(info["segment_samples"]))
        get = stream.get_stream_segment          # one round trip per call, not two
        # an existing --out (with --overwrite) is replaced by the finished export only:
        # every sink writes beside it and renames at the end
        try:
            sink = sink_class(args.out, names, fs, uutc_of(info, first), stop - first,
                              info["units"], args.precision)
        except OSError as exc:
            raise OSError(f"cannot write --out {args.out!r}: {exc.strerror or exc}") from None
        try:
            with progress_bar((stop - first) / fs, os.path.basename(args.out)) as bar:
                for index in range(first, stop, step):
                    count = min(step, stop - index)
                    chunk = decode_segment(get(count, index))
                    if chunk is False or chunk.shape[-1] != count:
                        raise errors.StreamError(
                            f"the server returned {0 if chunk is False else chunk.shape[-1]} "
                            f"samples at index {index} instead of {count}")
                    try:
                        sink.write(np.asarray(chunk, dtype=np.float64))
                    except OverflowError as exc:
                        raise UsageError("--precision", str(exc)) from None
                    bar.update(count / fs)
                # the records of the stretch: a .mefd export refuses, before it is in
                # place, one that MEF3 cannot store
                records = record_export.fetch(stream, info, first, stop)
                if sink_class is SINKS[".mefd"]:
                    record_export.check_mef(records)
                sink.finish()
            records_out = record_export.write(args.out, records, first)
        except OSError as exc:
            sink.abort()
            raise OSError(f"cannot write --out {args.out!r}: {exc.strerror or exc}") from None
        except BaseException:
            sink.abort()
            raise
    finally:
        conn.close()
    print(f"wrote {args.out}: {len(names)} channels x {stop - first:,} samples at {fs:g} Hz, "
          f"{format_duration((stop - first) / fs)} from {format_clock(uutc_of(info, first))}")
    if records_out is not None:
        print(f"wrote {len(records):,} records to {records_out}")
    return 0
