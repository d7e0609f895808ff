"""Live streams beside LSL and ezmsg: push -> follower latency, exactness and CPU, one table.

    python -m benchmarks.live [--quick] [--only small,large,cost] [--rounds N]
                              [--seconds 60] [--pushes 2000] [--ezmsg-python PATH]

Every producer, follower and server is a process of its own (:mod:`benchmarks.live_actors`,
:mod:`benchmarks.live_peers`); times are ``time.monotonic()`` (one clock for every
process): stamped just before a push, and when the follower has the chunk (a copy) in
hand. Rows:

* **small** - 64 ch x 1 kHz float64, 10-sample pushes (``--pushes``), one follower:
  mefstream's same-host follower (``next_or_wait`` from the shared ring) with the producer
  in another process pushing through its handle, and with the server pushing; the socket
  path (``get_connection(shared_memory=False)``: the server's callback); pylsl; ezmsg
  (with ``--ezmsg-python``, a venv that has it). Ratios to LSL from the same run.
* **large** - 384 ch x 30 kHz float32, 10 ms pushes, 4 and 16 same-host followers for
  ``--seconds``: every sample once and exact, latency, producer / server / follower CPU;
  with the server pushing, and with a producer process pushing through its handle.
* **cost** - latency and CPU vs followers (1, 4, 16, 64) and vs chunk size (1, 10, 100,
  1,000 samples): see :mod:`benchmarks.live_cost`.

The machine's load average is printed with each row: pair figures only within a run.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .live_cases import Case, Result, ezmsg_case, load, lsl_case, mef_case, once


SMALL = {   # label -> how to make the case (64 ch x 1 kHz float64, 10-sample pushes)
    "mefstream, memory follower, producer process (handle)":
        lambda p, ez: mef_case(64, 1000.0, "float64", 10, p, 1, "handle", "ring"),
    "mefstream, memory follower spin=0.3 ms, producer process":
        lambda p, ez: mef_case(64, 1000.0, "float64", 10, p, 1, "handle", "ring:0.0003"),
    "mefstream, memory follower, server pushes":
        lambda p, ez: mef_case(64, 1000.0, "float64", 10, p, 1, "server", "ring"),
    "mefstream, socket: callback starts, server pushes":
        lambda p, ez: mef_case(64, 1000.0, "float64", 10, p, 1, "server", "callbacks"),
    "mefstream, socket: next_or_wait, server pushes":
        lambda p, ez: mef_case(64, 1000.0, "float64", 10, p, 1, "server", "socket"),
    "mefstream, socket: next_or_wait, producer process (socket)":
        lambda p, ez: mef_case(64, 1000.0, "float64", 10, p, 1, "socket", "socket"),
    "pylsl 1.18 (consumer spinning on pull_chunk)":
        lambda p, ez: lsl_case(64, 1000.0, 10, p, 1),
    "ezmsg 3.9 (shared memory + TCP notify)":
        lambda p, ez: ezmsg_case(ez, 64, 1000.0, 10, p, 1),
}
LSL = "pylsl 1.18 (consumer spinning on pull_chunk)"


def small_row(pushes: int, rounds: int, ezmsg_python: str | None, only: str = "") -> None:
    """Every case's processes up at once; rounds of ``pushes`` pushes, the cases taking
    turns (the starting one rotates), so each is compared with LSL's round next to it."""
    print(f"\nsmall: 64 ch x 1 kHz float64, 10-sample pushes, {rounds} rounds of {pushes} "
          f"pushes, one follower process ({load()})")
    cases: dict[str, Case | str] = {}
    try:
        for label, make in SMALL.items():
            if not only or only in label or label == LSL:
                cases[label] = make(pushes, ezmsg_python)
        running = [label for label, case in cases.items() if isinstance(case, Case)]
        got: dict[str, list[Result]] = {label: [] for label in running}
        for r in range(rounds):
            for label in running[r % len(running):] + running[:r % len(running)]:
                got[label].append(cases[label].round())
    finally:
        for case in cases.values():
            if isinstance(case, Case):
                case.close()
    base = [float(np.median(res.latencies)) for res in got.get(LSL, [])]
    for label, case in cases.items():
        if isinstance(case, str):
            print(f"  {label:58s} {case}")
            continue
        results = got[label]
        merged = Result(np.concatenate([res.latencies for res in results]),
                        all(res.exact for res in results), results[-1].lag_ms,
                        _mean([res.producer_cpu for res in results]),
                        _mean([res.server_cpu for res in results]),
                        float(np.mean([res.follower_cpu for res in results])),
                        sum((res.errors for res in results), []))
        line = f"  {label:58s} {merged.row()}"
        if base and label != LSL:
            ratios = [np.median(res.latencies) / b for res, b in zip(results, base)]
            line += (f"  ratio to LSL {np.median(ratios):.2f} (rounds {min(ratios):.2f}-"
                     f"{max(ratios):.2f})")
        print(line, flush=True)
    print(f"  ({load()}) targets: memory follower median <= 0.5x LSL and p99 <= 1 ms; "
          f"socket callback median <= 1.0x LSL")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def large_row(seconds: float, counts=(4, 16)) -> None:
    pushes = int(seconds * 100)
    print(f"\nlarge: 384 ch x 30 kHz float32, 10 ms pushes, {seconds:g} s, same-host memory "
          f"followers ({load()})")
    for producer in ("server", "handle"):
        for n in counts:
            result = once(mef_case(384, 30000.0, "float32", 300, pushes, n, producer,
                                   "ring", history=2))
            who = "the server pushes" if producer == "server" else "producer process (handle)"
            print(f"  {n:2d} followers, {who:26s} {result.row()}  lag at end "
                  f"{result.lag_ms:.2f} ms", flush=True)
    print("  target: every sample once and exact, p99 <= 2 ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--only", default="small,large,cost",
                        help="rows to run: small, large, cost (comma-separated)")
    parser.add_argument("--pushes", type=int, default=None,
                        help="pushes of the small row, all rounds (default 2000: 20 s)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds of the large row (default 60)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the small row, the cases taking turns (default 5)")
    parser.add_argument("--cases", default="", help="small row: only cases naming this")
    parser.add_argument("--ezmsg-python", default=None,
                        help="python of a venv with ezmsg 3.9 (e.g. /work/venv-shm/bin/python)")
    args = parser.parse_args(argv)
    rows = set(args.only.split(","))
    pushes = args.pushes or (500 if args.quick else 2000)
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    print(f"python -m benchmarks.live {' '.join(argv if argv is not None else sys.argv[1:])}")
    if "small" in rows:
        rounds = args.rounds or (2 if args.quick else 5)
        small_row(max(1, pushes // rounds), rounds, args.ezmsg_python, args.cases)
    if "large" in rows:
        large_row(seconds)
    if "cost" in rows:
        from .live_cost import cost_table
        cost_table(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
