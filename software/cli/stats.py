"""Print the server's counters (the root service's ``get_stats()``) as a table."""
from __future__ import annotations

import argparse
import math

from .. import errors
from .common import connect
from .ls import optional_call

HELP = "print the server's counters (cache, readers, connections) as a table"


def configure(parser: argparse.ArgumentParser) -> None:
    """``stats`` has no options of its own."""


def format_value(value) -> str:
    """Numbers with thousands separators (floats to 3 decimals), the rest as text."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value) or value == int(value):
            return f"{value:,.0f}" if math.isfinite(value) else str(value)
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, tuple):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def run(args: argparse.Namespace) -> int:
    """Print ``name  value`` lines, names aligned."""
    conn = connect(args)
    try:
        stats = optional_call(conn.root, "get_stats")
        if stats is None:
            raise errors.StreamError(f"the server on {args.host} has no get_stats() (an older "
                                     f"mefstream, or one serving a single file)")
        rows = [(str(name), format_value(value)) for name, value in stats]
    finally:
        conn.close()
    width = max((len(name) for name, _ in rows), default=0)
    vwidth = max((len(value) for _, value in rows), default=0)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}")
    return 0
