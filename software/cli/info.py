"""Describe a session: channels, rates, start and end (UTC), duration, units, gaps and
records (counted by type)."""
from __future__ import annotations

import argparse
import json

from .common import add_session_arguments, connect, select_channels
from .target import open_target
from .times import format_clock, format_duration

HELP = ("describe a session: channels, rates, start/end (UTC), duration, units, gaps, "
        "records")

#: Gaps listed one per line; more are summed up.
MAX_GAPS_LISTED = 20


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``info``."""
    add_session_arguments(parser)
    parser.add_argument("--channels", default=None, metavar="A,B",
                        help="describe these channels (default: every channel of the most "
                             "common rate)")
    parser.add_argument("--json", action="store_true", help="print get_info() as JSON")


def lines(info: dict, records: dict | None = None) -> list[str]:
    """The description, one ``label  text`` line each (``records``: counts by type; a
    ``records`` line when there are some)."""
    fs = float(info["fs"])
    n = int(info["n_samples"])
    names = list(info["channels"])
    out = [("path", str(info["path"])),
           ("start", format_clock(info["start_uutc"])),
           ("end", format_clock(info["end_uutc"])),
           ("duration", f"{format_duration(n / fs)} ({n:,} samples at {fs:g} Hz)"),
           ("channels", f"{len(names)} at {fs:g} Hz: {', '.join(names)}")]
    others: dict[float, list[str]] = {}
    for name, rate in info["rates"]:
        if name not in names:
            others.setdefault(float(rate), []).append(str(name))
    for rate, group in sorted(others.items()):
        out.append(("", f"{len(group)} at {rate:g} Hz: {', '.join(group)} "
                        f"(select them with --channels)"))
    units = list(dict.fromkeys(info["units"]))
    out.append(("units", units[0] if len(units) == 1 else
                ", ".join(f"{c} {u}" for c, u in zip(names, info["units"]))))
    gaps = [(int(a), int(b)) for a, b in info["gaps"]]
    total = sum(b - a for a, b in gaps) / 1e6
    out.append(("gaps", f"{len(gaps)}, {format_duration(total)} in all" if gaps else "none"))
    for a, b in gaps[:MAX_GAPS_LISTED]:
        same_day = format_clock(a)[:10] == format_clock(b)[:10]
        out.append(("", f"{format_clock(a)} to {format_clock(b, date=not same_day)} "
                        f"({format_duration((b - a) / 1e6)})"))
    if len(gaps) > MAX_GAPS_LISTED:
        out.append(("", f"... and {len(gaps) - MAX_GAPS_LISTED} more (--json lists all)"))
    if records:                      # a session without records: no line
        out.append(("records", record_counts(records)))
    if info.get("growing"):
        out.append(("growing", "yes: a live stream, the end moves"))
    width = max(len(label) for label, _ in out)
    return [f"{label:<{width}}  {text}".rstrip() for label, text in out]


def record_counts(counts: dict) -> str:
    """``12: 8 Note, 3 EDFA, 1 Seiz`` (or ``none``)."""
    total = sum(counts.values())
    if not total:
        return "none"
    return f"{total:,}: " + ", ".join(f"{n:,} {kind}" for kind, n in counts.items())


def run(args: argparse.Namespace) -> int:
    """Print the description of ``PATH``."""
    conn = connect(args)
    try:
        stream, info = open_target(conn, args)
        info = select_channels(stream, info, args.channels)
        counts = dict(stream.get_record_counts())
    finally:
        conn.close()
    if args.json:
        print(json.dumps(dict(info, record_counts=counts), indent=1, default=list))
    else:
        print("\n".join(lines(info, counts)))
    return 0
