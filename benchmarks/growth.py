"""Cost growth of opening a session: open time and server-tree memory vs MEF blocks.

For each size a synthetic session (``benchmarks.sessions``: 8 channels at 8 Hz, 1 s blocks)
is written once under ``benchmarks/data/growth/``; a fresh server (``start.py``, 2 reader
processes) opens it through ``get_connection`` (``conn.root.open_file``, which opens it in
every reader). Measured per size, ``--repeats`` times on fresh servers, medians printed:

- open: wall time of ``open_file`` (the first call; every reader opens the session);
- PSS added: PSS of the server tree (server + readers + resource tracker, from
  ``/proc/PID/smaps_rollup``) after the open and 20 random window reads minus before;
- the random windows (60 s, all channels) are checked against the written signal.

    python -m benchmarks.growth                      # 1e4 .. 2.07e6 blocks
    python -m benchmarks.growth --sizes 10000,20000000
    python -m benchmarks.growth --rows clients,readers,sessions,connections

Rows other than ``blocks`` (the default) are in ``benchmarks.scaling``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from . import scaling
from .common import (
    DATA_DIR,
    ServerProcess,
    ensure_recording,
    process_tree_pss,
    warmup_dataset,
)
from .sessions import LongSession, ensure_long_session, signal

DEFAULT_SIZES = "10000,100000,1000000,2073600"


def measure(ls: LongSession, root: str, rng: np.random.Generator) -> dict:
    """One fresh server: open ``ls``, read 20 random windows, return the figures."""
    from software import decode_segment
    with ServerProcess(root, prefetch=0, cache_mb=64, workers=2) as server:
        conn = server.connect()
        try:
            time.sleep(0.5)  # let the warm-up's freed memory settle before the baseline
            before = process_tree_pss(server.proc.pid)
            t0 = time.perf_counter()
            svc = conn.root.open_file(ls.name)
            opened = time.perf_counter() - t0
            n = int(dict(svc.get_info())["n_samples"])
            step = int(60 * ls.fs)
            bad = 0
            for _ in range(20):
                start = int(rng.integers(0, n - step))
                got = np.asarray(decode_segment(svc.get_stream_segment(step, start)))
                for ch in (0, ls.n_channels - 1):
                    want = signal(ls, ch)[start:start + step]
                    if not np.allclose(got[ch], want, rtol=0, atol=1e-9, equal_nan=True):
                        bad += 1
            after = process_tree_pss(server.proc.pid)
        finally:
            conn.close()
    return {"open_s": opened, "pss_mib": (after - before) / 2**20, "bad_windows": bad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="blocks per session, commas")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", default="blocks",
                        help="commas, of: blocks, " + ", ".join(scaling.ROWS))
    scaling.add_arguments(parser)
    args = parser.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r != "blocks" and r not in scaling.ROWS]
    if bad:
        parser.error(f"--rows: unknown {bad}")
    scaling.run_rows([r for r in rows if r != "blocks"], args)
    if "blocks" in rows:
        blocks_row(args)


def blocks_row(args) -> None:
    root = os.path.join(DATA_DIR, "growth")
    ensure_recording(warmup_dataset(root))
    rng = np.random.default_rng(0)
    rows = []
    load0 = os.getloadavg()[0]
    for size in (int(s) for s in args.sizes.split(",")):
        ls = LongSession(root, size, gap_every=0)
        wrote = ensure_long_session(ls)
        runs = [measure(ls, root, rng) for _ in range(args.repeats)]
        opens = [r["open_s"] for r in runs]
        pss = [r["pss_mib"] for r in runs]
        rows.append((size, statistics.median(opens), min(opens), max(opens),
                     statistics.median(pss), sum(r["bad_windows"] for r in runs),
                     wrote, os.getloadavg()[0]))
        print(f"{size:>10} blocks: open {rows[-1][1]:.3f} s, +{rows[-1][4]:.1f} MiB PSS, "
              f"bad windows {rows[-1][5]}", flush=True)
    print(f"\nload average at start {load0:.2f}")
    print("| blocks | open (s), median (min-max) | server tree PSS added (MiB) | "
          "exact windows | load avg |")
    print("|---|---|---|---|---|")
    for size, med, lo, hi, pss, bad, _w, load in rows:
        print(f"| {size:,} | {med:.3f} ({lo:.3f}-{hi:.3f}) | {pss:.1f} | "
              f"{'all' if bad == 0 else f'{bad} bad'} | {load:.2f} |")


if __name__ == "__main__":
    main()
