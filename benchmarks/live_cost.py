"""How the cost of a live stream grows: latency and CPU vs followers and vs chunk size.

    python -m benchmarks.live --only cost [--quick]

Each row is one run of its own (a server process, a producer process pushing through
its handle, follower processes), 64 ch x 1 kHz float64 unless said. Printed as markdown
tables for ``benchmarks/README.md``; CPU is percent of one core over the run (a process
that waits costs nothing). The socket column runs the same followers through
``get_connection(shared_memory=False)`` (the server's callbacks).
"""
from __future__ import annotations

import numpy as np

from .live_cases import load, mef_case, once


def _cells(result) -> str:
    lat = result.latencies
    total = (result.producer_cpu or 0) + (result.server_cpu or 0) \
        + result.follower_cpu * result.followers
    return (f"{np.median(lat):.3f} | {np.percentile(lat, 99):.2f} | "
            f"{result.producer_cpu or 0:.1f} | {result.server_cpu or 0:.1f} | "
            f"{result.follower_cpu:.1f} | {total:.0f} | {'yes' if result.exact else 'NO'}")


def cost_table(quick: bool = False) -> None:
    """Print both tables (``quick``: shorter runs, fewer sizes)."""
    seconds = 4 if quick else 10
    print(f"\ncost vs followers: 64 ch x 1 kHz float64, 10-sample pushes, {seconds:g} s, "
          f"producer process through its handle ({load()})")
    print("| followers | path | median ms | p99 ms | producer CPU % | server CPU % | "
          "CPU % per follower | total CPU % | exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    counts = (1, 4, 16) if quick else (1, 4, 16, 64)
    for n in counts:
        for follow, producer in (("ring", "handle"), ("socket", "handle")):
            if follow == "socket" and n == 64 and quick:
                continue
            result = once(mef_case(64, 1000.0, "float64", 10, int(seconds * 100), n,
                                   producer, follow))
            result.followers = n
            path = "memory" if follow == "ring" else "socket"
            print(f"| {n} | {path} | {_cells(result)} |", flush=True)
    print(f"\ncost vs chunk size: 64 ch x 1 kHz float64, one memory follower, producer "
          f"process through its handle ({load()})")
    print("| samples per push | pushes/s | median ms | p99 ms | producer CPU % | "
          "server CPU % | CPU % per follower | total CPU % | exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    for chunk in (1, 10, 100, 1000):
        pushes = max(int(seconds * 1000 / chunk), 10 if quick else 30)
        result = once(mef_case(64, 1000.0, "float64", chunk, pushes, 1, "handle", "ring"))
        result.followers = 1
        print(f"| {chunk} | {1000 // chunk} | {_cells(result)} |", flush=True)
