"""CPU per decoded sample: a cold pass through the service vs a direct MefReader loop.

    python -m benchmarks.reader_cpu                       # 64 ch x 256 Hz x 40 min, 3 repeats
    python -m benchmarks.reader_cpu --compare /tmp/before # + the server of another checkout

Per repeat, alternating: a direct pass (``mef_tools.io.MefReader.get_data`` of every 60 s
window, all channels, in a child process: its CPU seconds, user + system) and a cold pass
through a fresh server (``start.py``, 2 reader processes, ``StreamSegmentIterator(60 s)``
from this process): the CPU seconds of the reader processes and of the server process
during the pass (psutil, before/after), and the wall time. With ``--compare DIR`` a server
started from the checkout ``DIR`` (e.g. ``git worktree add /tmp/before COMMIT``) makes a
third column, in the same alternation. Medians of the repeats; the load average and the
foreign CPU (cores used by other processes during the repeat) are printed per repeat.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

from .common import (
    Dataset,
    ForeignCpu,
    ServerProcess,
    ensure_recording,
    machine_info,
    session_info,
    warmup_dataset,
)
from .scaling import SCALE_ROOT


def dataset(minutes: float) -> Dataset:
    return Dataset(root=SCALE_ROOT, name=f"scale_64ch_{minutes:g}min.mefd", n_channels=64,
                   minutes=minutes, seed=6)


def _cpu(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _direct(path, channels, a, b, window_s, out) -> None:
    from .run import direct_pass
    c0 = time.process_time()
    n, secs = direct_pass(path, channels, a, b, window_s)
    out.put((n, secs, time.process_time() - c0))


def direct(ds: Dataset, info: dict) -> dict:
    """A direct pass in a fresh child process: samples, wall, CPU seconds."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_direct, args=(ds.path, info["channels"], info["start_uutc"],
                                          info["end_uutc"], 60.0, out))
    p.start()
    n, secs, cpu = out.get(timeout=900)
    p.join()
    return {"samples": n, "wall": secs, "cpu": cpu}


def service(ds: Dataset, code: str | None) -> dict:
    """A cold pass through a fresh server: samples, wall, reader and server CPU seconds."""
    import psutil

    from .run import service_pass
    with ServerProcess(ds.root, prefetch=1, cache_mb=1024, workers=2, code=code) as srv:
        readers = [psutil.Process(pid) for pid in srv.reader_pids()]
        server = psutil.Process(srv.proc.pid)
        conn = srv.connect()
        svc = conn.root.open_file(ds.name)
        time.sleep(0.3)  # the open's work in the readers is done before the clocks start
        r0, s0 = sum(map(_cpu, readers)), _cpu(server)
        n, secs = service_pass(svc, int(60 * ds.fs))
        r1, s1 = sum(map(_cpu, readers)), _cpu(server)
        conn.close()
    return {"samples": n, "wall": secs, "readers": r1 - r0, "server": s1 - s0,
            "cpu": (r1 - r0) + (s1 - s0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", default=None, help="checkout of another commit")
    args = parser.parse_args()
    for label, value in machine_info():
        print(f"- {label}: {value}")
    ds = dataset(args.minutes)
    ensure_recording(ds)
    ensure_recording(warmup_dataset(ds.root), log=lambda *_: None)
    info = session_info(ds.path)
    kinds = ["direct", "service"] + (["before"] if args.compare else [])
    runs = {k: [] for k in kinds}
    for rep in range(args.repeats):
        for kind in kinds:
            with ForeignCpu() as fc:
                r = direct(ds, info) if kind == "direct" else \
                    service(ds, args.compare if kind == "before" else None)
            r["foreign"] = fc.cores
            runs[kind].append(r)
            extra = "" if kind == "direct" else \
                f" (readers {r['readers']:.2f} + server {r['server']:.2f})"
            print(f"  {kind:7} repeat {rep + 1}: {r['samples'] / r['wall'] / 1e6:.2f} M/s, wall "
                  f"{r['wall']:.2f} s, CPU {r['cpu']:.2f} s{extra}; load "
                  f"{os.getloadavg()[0]:.2f}, foreign CPU {fc.cores:.2f}", flush=True)
    n = runs["direct"][0]["samples"]
    for kind in kinds:
        bad = [r["samples"] for r in runs[kind] if r["samples"] != n]
        if bad:
            print(f"WARNING {kind}: {bad} samples, direct {n}")
    med = lambda kind, f: statistics.median(r[f] for r in runs[kind])  # noqa: E731
    d = med("direct", "cpu")
    print(f"\n{ds.n_channels} ch x {ds.fs:g} Hz x {ds.minutes:g} min ({n / 1e6:.1f} M samples),"
          f" 60 s windows; medians of {args.repeats}\n")
    print("| pass | wall (s) | M samples/s | readers CPU (s) | server CPU (s) | CPU ns/sample | "
          "readers / direct | readers + server / direct |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        wall = med(kind, "wall")
        if kind == "direct":
            print(f"| direct MefReader | {wall:.2f} | {n / wall / 1e6:.2f} | {d:.2f} (1 process) "
                  f"| — | {d / n * 1e9:.0f} | 1.00 | 1.00 |")
            continue
        rd, sv = med(kind, "readers"), med(kind, "server")
        ratios_r = [r["readers"] / x["cpu"] for r, x in zip(runs[kind], runs["direct"])]
        ratios_t = [r["cpu"] / x["cpu"] for r, x in zip(runs[kind], runs["direct"])]
        label = "service" if kind == "service" else f"service at {args.compare}"
        print(f"| {label} | {wall:.2f} | {n / wall / 1e6:.2f} | {rd:.2f} | {sv:.2f} | "
              f"{(rd + sv) / n * 1e9:.0f} | {statistics.median(ratios_r):.2f} | "
              f"{statistics.median(ratios_t):.2f} |")
    print("\nratios are paired per repeat (median); target readers + server <= 1.05x direct")


if __name__ == "__main__":
    main()
