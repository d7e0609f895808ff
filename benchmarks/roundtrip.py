"""Small cached segment vs ``conn.ping()``: wall time, server CPU and where it goes.

    python -m benchmarks.roundtrip [--requests 3000] [--repeats 3]

One server (``benchmarks.timed_server``: ``start.py`` with per-stage CPU clocks) per kind
of call; on one ``get_connection`` client, ``--requests`` calls of ``conn.ping()`` or of a
cached 64 ch x 256 ``get_stream_segment`` + ``decode_segment`` (the method bound once),
repeated and alternated. Printed: median wall time per call, server-process CPU per call
(psutil), the client's CPU per call, the ratio small / ping (target <= 2.0x) and, per
stage, the serving thread's CPU per call (``time.thread_time``; the stages nest).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time

from .common import ServerProcess, ensure_recording, machine_info, warmup_dataset
from .scaling import SCALE_ROOT, SMALL, big_dataset


def _cpu(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(kind: str, requests: int) -> dict:
    """One fresh timed server; ``requests`` calls of ``kind`` ("ping" or "small")."""
    import psutil

    from software import decode_segment
    ds = big_dataset()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    os.environ["MEFSTREAM_TIMINGS"] = path
    try:
        with ServerProcess(ds.root, prefetch=0, cache_mb=256, workers=2,
                           module="benchmarks.timed_server") as srv:
            conn = srv.connect()
            get = conn.root.open_file(ds.name).get_stream_segment
            start = int(60 * ds.fs)
            call = conn.ping if kind == "ping" else \
                (lambda: decode_segment(get(SMALL, start)))
            for _ in range(200):
                call()
            srv.proc.send_signal(signal.SIGUSR1)  # zero the server's stage clocks
            time.sleep(0.3)
            server, me = psutil.Process(srv.proc.pid), psutil.Process()
            s0, c0 = _cpu(server), _cpu(me)
            lat = []
            perf = time.perf_counter
            for _ in range(requests):
                t = perf()
                call()
                lat.append(perf() - t)
            s1, c1 = _cpu(server), _cpu(me)
            conn.close()
            load = os.getloadavg()[0]
        with open(path) as fh:
            stages = json.load(fh)
    finally:
        os.environ.pop("MEFSTREAM_TIMINGS", None)
        os.unlink(path)
    return {"wall_us": statistics.median(lat) * 1e6, "server_us": (s1 - s0) / requests * 1e6,
            "client_us": (c1 - c0) / requests * 1e6, "stages": stages, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for label, value in machine_info():
        print(f"- {label}: {value}")
    ensure_recording(big_dataset())
    ensure_recording(warmup_dataset(SCALE_ROOT), log=lambda *_: None)
    runs = {"ping": [], "small": []}
    for rep in range(args.repeats):
        for kind in runs:
            r = measure(kind, args.requests)
            runs[kind].append(r)
            print(f"  {kind:5} repeat {rep + 1}: {r['wall_us']:.0f} us wall, server CPU "
                  f"{r['server_us']:.0f} us, client CPU {r['client_us']:.0f} us per call; "
                  f"load {r['load']:.2f}", flush=True)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall_us", "server_us",
                                                                 "client_us")}
           for k, v in runs.items()}
    ratios = [s["wall_us"] / p["wall_us"] for s, p in zip(runs["small"], runs["ping"])]
    print("\n| call | wall per call (us) | server CPU (us) | client CPU (us) |")
    print("|---|---|---|---|")
    for kind in runs:
        print(f"| {kind} | {med[kind]['wall_us']:.0f} | {med[kind]['server_us']:.0f} | "
              f"{med[kind]['client_us']:.0f} |")
    print(f"\nsmall / ping (paired per repeat, median): {statistics.median(ratios):.2f}x "
          f"(target <= 2.0x); per repeat " + ", ".join(f"{r:.2f}" for r in ratios))
    print("\nserving thread CPU per small call by stage (us; nested, median of repeats; "
          "stages of the 200 warm-up calls excluded):")
    labels = list(runs["small"][0]["stages"])
    for label in labels:
        per = [r["stages"][label][0] / max(1, args.requests) * 1e6 for r in runs["small"]
               if label in r["stages"]]
        calls = runs["small"][0]["stages"][label][1]
        ping = [r["stages"].get(label, [0, 0])[0] / args.requests * 1e6 for r in runs["ping"]]
        print(f"  {label:40} {statistics.median(per):7.1f}  (calls {calls}; ping "
              f"{statistics.median(ping):.1f})")


if __name__ == "__main__":
    main()
