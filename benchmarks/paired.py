"""The rows of ``benchmarks.run`` for two checkouts' servers, alternating, in one run.

    python -m benchmarks.paired --other /tmp/main-base --rounds 3
    python -m benchmarks.paired --other /tmp/main-base --only cold_pass,cache_hit --quick

Each round runs ``python -m benchmarks.run --only ROWS --repeats 1`` once with this
checkout's servers and once with ``--code OTHER`` (the order alternates between rounds),
so both see the same machine load; the client code is this checkout's in both. Printed:
per row, the median over rounds of each side's first figure and their ratio (this /
other), with every round's figures. On a shared machine only the ratio is meaningful.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

from benchmarks.common import ROOT, machine_info, markdown_table

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def first_number(text: str) -> float:
    """The first figure of a table cell (``"6.39 s (first ...)"`` -> 6.39)."""
    found = _NUMBER.search(str(text))
    return float(found.group()) if found else float("nan")


def run_once(code: str | None, only: str, quick: bool, prefetch: int | None) -> list[dict]:
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, "-m", "benchmarks.run", "--only", only, "--repeats", "1",
           "--json", path]
    if quick:
        cmd.append("--quick")
    if prefetch is not None:
        cmd += ["--prefetch", str(prefetch)]
    if code:
        cmd += ["--code", code]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(path) as fh:
        rows = json.load(fh)["rows"]
    os.remove(path)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paired",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", required=True, help="the other checkout (e.g. main's)")
    parser.add_argument("--only", default="sequential,concurrent,cold_pass,cache_hit,"
                                          "callback,four_clients,memory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prefetch", type=int, default=None)
    args = parser.parse_args(argv)
    print(f"command: python -m benchmarks.paired {' '.join(sys.argv[1:])}")
    for label, value in machine_info():
        print(f"- {label}: {value}")
    other = os.path.abspath(args.other)
    figures: dict[str, dict[str, list]] = {}
    order: list[str] = []
    for rnd in range(args.rounds):
        sides = [("this", None), ("other", other)]
        if rnd % 2:
            sides.reverse()
        for side, code in sides:
            for row in run_once(code, args.only, args.quick, args.prefetch):
                name = row["name"]
                if name not in figures:
                    figures[name] = {"this": [], "other": []}
                    order.append(name)
                figures[name][side].append(first_number(row["measured"]))
        print(f"round {rnd + 1} done", flush=True)
    table = []
    for name in order:
        this, oth = figures[name]["this"], figures[name]["other"]
        if not this or not oth:
            continue
        m1, m2 = statistics.median(this), statistics.median(oth)
        table.append([name, f"{m1:.4g}", f"{m2:.4g}", f"{m1 / m2:.3f}" if m2 else "—",
                      " / ".join(f"{a:.4g}:{b:.4g}" for a, b in zip(this, oth))])
    print()
    print(markdown_table(["row (first figure of 'measured')", "this", "other",
                          "this / other", "rounds (this:other)"], table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
