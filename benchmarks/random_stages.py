"""Where the time of a cold random window goes, stage by stage, in the server.

    python -m benchmarks.random_stages [--windows 40] [--prefetch 1] [--code PATH]

One server (``benchmarks.stages_server``: ``start.py`` with wall-clock stamps along a
request's path) and one ``get_connection`` client that reads ``--windows`` random
10 s x 8-channel windows of the 2 h recording, channels drawn per window
(``set_active_channels`` + ``get_stream_segment``). Printed per stage: how many times it
happens per request and its median time since the service call began (ms): the cache
lookup and claim (``gather``), each reader task queued in the pool (``queued0`` demand,
``queued1``... reads ahead), handed to the executor, its result in the pool's result
thread (decode + dispatch), copied from the landing area (``copied``), the request's
blocks all there (``resolved``), assembling, sending. ``--code`` runs the server of
another checkout (it must have ``benchmarks/stages_server.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

from benchmarks.common import DATA_DIR, ServerProcess, ensure_recording, warmup_dataset
from benchmarks.run import Config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.random_stages",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--prefetch", type=int, default=1)
    parser.add_argument("--code", default=None)
    args = parser.parse_args(argv)
    from software import decode_segment
    ds = Config(quick=False, repeats=1).dataset
    ensure_recording(ds)
    ensure_recording(warmup_dataset(ds.root), log=lambda *_: None)
    fd, path = tempfile.mkstemp(suffix=".jsonl", dir=DATA_DIR)
    os.close(fd)
    os.environ["MEFSTREAM_STAGES"] = path
    names = ds.channel_names()
    n = ds.n_samples
    rng = np.random.default_rng(0)
    gets, chooses = [], []
    try:
        with ServerProcess(ds.root, prefetch=args.prefetch, cache_mb=1024,
                           module="benchmarks.stages_server", code=args.code) as srv:
            conn = srv.connect()
            svc = conn.root.open_file(ds.name)
            choose, get = svc.set_active_channels, svc.get_stream_segment
            open(path, "w").close()    # only the timed requests' stamps
            for _ in range(args.windows):
                start = int(rng.integers(0, n - 2560))
                chans = [names[c] for c in sorted(rng.choice(len(names), 8, replace=False))]
                t0 = time.perf_counter()
                choose(chans)
                t1 = time.perf_counter()
                decode_segment(get(2560, start))
                gets.append(time.perf_counter() - t1)
                chooses.append(t1 - t0)
            conn.close()
        with open(path) as fh:
            rows = [json.loads(line) for line in fh]
    finally:
        os.remove(path)
    rows = [r for r in rows if any(label == "service>" for label, _ in r)]
    stages: dict[str, list[float]] = {}
    for r in rows:
        t0 = next(t for label, t in r if label == "service>")
        for label, t in r:
            stages.setdefault(label, []).append((t - t0) * 1e3)
    print(f"{len(rows)} requests; client: set_active_channels {statistics.median(chooses) * 1e3:.2f}"
          f" ms, get_stream_segment + decode {statistics.median(gets) * 1e3:.2f} ms (medians)")
    print("| stage | per request | median ms since the service call began |\n|---|---|---|")
    for label, values in sorted(stages.items(), key=lambda kv: statistics.median(kv[1])):
        print(f"| {label} | {len(values) / len(rows):.2f} | {statistics.median(values):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
