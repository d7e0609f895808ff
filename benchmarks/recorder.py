"""Does the crash-safe recorder keep up with 64 ch x 30 kHz? (run by hand)

    python -m benchmarks.recorder [--channels 64] [--fs 30000] [--seconds 10]

Appends ``--seconds`` one-second chunks of EEG-like float64 data through
:class:`software.mef3.append.AppendingSession` and prints the write time per second of
data (median, p90, max: must stay below 1 s), the cost of each step of an append, and the
``.tdat`` size against the same samples written at once with ``write_session``. The data is
generated before timing starts; the temporary sessions are removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from software.mef3 import append as mefappend
from software.mef3.append import AppendingSession
from software.mef3.writer import write_session

START = 1_600_000_000_000_000


def _signals(n_ch: int, fs: float, seconds: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(fs) * seconds
    walk = np.cumsum(rng.normal(scale=0.5, size=(n_ch, n)), axis=1)
    t = np.arange(n) / fs
    alpha = 20.0 * np.sin(2 * np.pi * 10.0 * t)
    return np.round(walk - walk.mean(axis=1, keepdims=True) + alpha, 2)


def _tdat_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files
                     if f.endswith(".tdat"))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--fs", type=float, default=30000.0)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    n_ch, fs, seconds = args.channels, args.fs, args.seconds
    data = _signals(n_ch, fs, seconds)
    names = [f"ch{c:02d}" for c in range(n_ch)]
    per = int(fs)
    steps = {"sync": 0.0, "append": 0.0, "extrema": 0.0, "exchange": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                steps[name] += time.perf_counter() - t
        return wrapper

    tmp = tempfile.mkdtemp(prefix="recorder-bench-")
    try:
        session = AppendingSession(os.path.join(tmp, "rec.mefd"), names, fs, START)
        session._sync_spare = timed("sync", session._sync_spare)
        session._fix_extrema = timed("extrema", session._fix_extrema)
        mefappend.exchange = timed("exchange", mefappend.exchange)
        times = []
        for k in range(seconds):
            t = time.perf_counter()
            session.append(data[:, k * per:(k + 1) * per])
            times.append(time.perf_counter() - t)
        session.close()
        rest = times[1:] if len(times) > 1 else times
        total = sum(rest)
        steps["append"] = total - steps["sync"] - steps["extrema"] - steps["exchange"]
        whole = write_session(os.path.join(tmp, "whole.mefd"),
                              dict(zip(names, data)), fs, START, precision=2)
        ratio = _tdat_bytes(session.path) / _tdat_bytes(whole)
        q = np.percentile(rest, [50, 90, 100])
        print(f"recorder {n_ch} ch x {fs:g} Hz, {seconds} x 1 s appends")
        print(f"  first append (creates the channels): {times[0]:.3f} s")
        print(f"  write time per second of data: median {q[0]:.3f} s, p90 {q[1]:.3f} s, "
              f"max {q[2]:.3f} s  (goal < 1 s: {'met' if q[2] < 1 else 'MISSED'})")
        print("  per append, by step: " + ", ".join(
            f"{name} {1e3 * value / len(rest):.1f} ms" for name, value in steps.items()))
        print(f"  .tdat size vs one write_session of the same samples: {ratio:.3f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
