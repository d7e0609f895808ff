"""Closed loop on a replayed recording: alpha power per channel per second, and a reaction.

Replays the demo recording as a live stream (written first if missing: 16 channels x
256 Hz x 30 min with a gap), follows it with ``StreamSegmentIterator.next_or_wait`` from the
head, computes the alpha band (8-12 Hz) power of every channel over each second, and prints
when a channel's power crosses the threshold (a multiple of its median over the first
seconds)::

    python examples/closed_loop.py [--data data/demo.mefd] [--speed 1] [--seconds 60]
                                   [--factor 3]

Against a server already replaying (``python start.py data/demo.mefd --replay``), pass
``--port 18861`` instead.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))      # run from a fresh clone without installing


def alpha_power(window: np.ndarray, fs: float) -> np.ndarray:
    """Mean power (units^2) in 8-12 Hz of each row of ``window`` (NaN when it has gaps)."""
    n = window.shape[1]
    spectrum = np.fft.rfft(window * np.hanning(n), axis=1)
    freqs = np.fft.rfftfreq(n, d=1.0 / fs)
    band = (freqs >= 8.0) & (freqs <= 12.0)
    return (np.abs(spectrum[:, band]) ** 2).mean(axis=1) * 2.0 / (fs * n)


def follow(svc, seconds: float, factor: float, baseline_seconds: int = 5) -> int:
    """Follow ``svc`` for ``seconds`` of wall-clock time; returns the seconds analysed."""
    from software.client.iterators import StreamSegmentIterator
    info = dict(svc.get_info())
    fs, names = info["fs"], info["channels"]
    step = int(round(fs))
    it = StreamSegmentIterator(step, start=info["n_samples"])   # from the head: live
    print(f"following {info['path']}: {len(names)} channels at {fs:g} Hz, "
          f"replayed at {info.get('speed', 1.0):g}x", flush=True)
    history: list[np.ndarray] = []
    threshold = None
    above = np.zeros(len(names), dtype=bool)
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        window = it.next_or_wait(svc, timeout=max(0.1, deadline - time.monotonic()))
        if window is False:
            break
        done += 1
        power = alpha_power(np.asarray(window, dtype=np.float64), fs)
        t = it.position / fs
        if np.isnan(power).all():
            print(f"t={t:8.1f} s  no data (a gap in the recording)", flush=True)
            continue
        if threshold is None:
            history.append(power)
            if len(history) == baseline_seconds:
                threshold = factor * np.nanmedian(np.array(history), axis=0)
                print(f"t={t:8.1f} s  thresholds set: {factor:g} x median alpha power",
                      flush=True)
            continue
        crossed = power > threshold
        for i in np.flatnonzero(crossed & ~above):
            print(f"t={t:8.1f} s  ALPHA  {names[i]}: {power[i]:9.2f} > {threshold[i]:9.2f}",
                  flush=True)
        above = crossed
    print(f"analysed {done} s of signal", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(HERE), "data",
                                                       "demo.mefd"))
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="wall-clock run time")
    parser.add_argument("--factor", type=float, default=3.0,
                        help="threshold: this many times the median alpha power")
    parser.add_argument("--port", type=int, default=None,
                        help="follow a server already replaying instead of starting one")
    args = parser.parse_args(argv)
    from software import MefStreamServer, get_connection
    if args.port is not None:
        conn = get_connection(args.port)
        try:
            follow(conn.root, args.seconds, args.factor)
        finally:
            conn.close()
        return 0
    from software.live.replay import Replay
    path = os.path.abspath(args.data)
    if not os.path.isdir(path):
        from software.mef3.demo import write_demo_recording
        print(f"writing the demo recording {path} (a few seconds)", flush=True)
        write_demo_recording(path)

    def replay(registry):
        recording = registry.acquire(path)
        return Replay(recording, speed=args.speed, release=registry.release).start().stream

    with MefStreamServer(port=0, data_root=os.path.dirname(path), workers=1,
                         cache_mb=64, live=replay) as server:
        conn = get_connection(server.port, host="127.0.0.1")
        try:
            follow(conn.root, args.seconds, args.factor)
        finally:
            conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
