"""Live streams: push -> client callback latency beside LSL, and 4 clients following 384 ch.

    python -m benchmarks.live [--seconds 20] [--pushes 2000]

Row 1: 64 ch x 1 kHz float64, 10-sample pushes, one client (another process) following
with ``next_or_wait``: push -> callback latency, median and p99; the same with pylsl
(liblsl, a numpy pull buffer, one consumer polling) in the same run, and the ratio.
Row 2: 384 ch x 30 kHz float32, 10 ms pushes, 4 client processes following with
``next_or_wait``: every sample delivered once and exact, lag at the end, p99 latency, the
server process's CPU (it also runs the producer).

Times are ``time.monotonic()`` (one clock for every process on Linux). Channel 0 of every
sample carries its index, so a consumer knows which push a chunk came from.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def signal_block(c: int, start: int, n: int, dtype) -> np.ndarray:
    """Row 0: the sample index; row r: (7 i + r) mod 4096 (exact in float32)."""
    i = np.arange(start, start + n, dtype=np.int64)
    block = ((7 * i[None, :] + np.arange(c)[:, None]) % 4096).astype(dtype)
    block[0] = i
    return block


# ---- consumers (run in their own processes) -----------------------------------------------

def mef_consumer(port: int, channels: int, chunk: int, total: int, dtype: str) -> None:
    sys.path.insert(0, ROOT)
    from software import get_connection
    from software.client.iterators import StreamSegmentIterator
    conn = get_connection(port, host="127.0.0.1")
    svc = conn.root
    it = StreamSegmentIterator(chunk, start=0)
    arrivals, exact, seen = [], True, 0
    base = signal_block(channels, 0, 4096 + chunk, np.dtype(dtype))
    print("ready", flush=True)
    while it.position < total:
        data = it.next_or_wait(svc, timeout=30)
        now = time.monotonic()
        if data is False:
            break
        first = int(data[0, 0])
        arrivals.append((first + data.shape[1], now))
        at = first % 4096
        exact &= (first == seen and data.shape[1] == chunk and np.array_equal(
            data[1:], base[1:, at:at + chunk]) and data[0, -1] == first + chunk - 1)
        seen = first + data.shape[1]
    conn.close()
    print(json.dumps({"arrivals": arrivals, "exact": bool(exact), "seen": seen}), flush=True)


def lsl_consumer(name: str, channels: int, total: int) -> None:
    import pylsl
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name, timeout=10)[0],
                              max_buflen=10, processing_flags=0)
    inlet.open_stream(timeout=10)
    buf = np.empty((1000, channels), dtype=np.float64)
    arrivals, seen = [], 0
    print("ready", flush=True)
    while seen < total:
        _, stamps = inlet.pull_chunk(timeout=0.0, max_samples=1000, dest_obj=buf)
        if stamps:
            now = time.monotonic()
            n = len(stamps)
            seen = int(buf[n - 1, 0]) + 1
            arrivals.append((seen, now))
    print(json.dumps({"arrivals": arrivals, "exact": True, "seen": seen}), flush=True)


# ---- the producer side ----------------------------------------------------------------------

def spawn(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.live", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def latencies(pushed: dict[int, float], arrivals) -> np.ndarray:
    """Arrival minus push time of the push that completed each chunk, in ms."""
    return np.array([(t - pushed[end]) * 1e3 for end, t in arrivals if end in pushed])


def paced(pushes: int, period: float, push) -> dict[int, float]:
    """Call ``push(k)`` on an absolute schedule; returns {head after push: push time}."""
    times: dict[int, float] = {}
    t0 = time.monotonic() + 0.2
    wait = threading.Event()
    for k in range(pushes):
        delay = t0 + k * period - time.monotonic()
        if delay > 0:
            wait.wait(delay)
        at = time.monotonic()
        times[push(k)] = at
    return times


def row_latency(pushes: int) -> dict:
    sys.path.insert(0, ROOT)
    from software import MefStreamServer
    from software.live.source import LiveStream
    c, n = 64, 10
    stream = LiveStream("bench", [f"c{i}" for i in range(c)], 1000.0, history_seconds=10)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        proc = spawn("mef", str(srv.port), str(c), str(n), str(pushes * n), "float64")
        pushed = paced(pushes, n / 1000.0, lambda k: stream.append_stream_segment_data(
            signal_block(c, k * n, n, np.float64)))
        out = json.loads(proc.stdout.readline())
        proc.wait(30)
    lat = latencies(pushed, out["arrivals"])
    return {"median_ms": float(np.median(lat)), "p99_ms": float(np.percentile(lat, 99)),
            "exact": out["exact"], "chunks": len(lat)}


def row_lsl(pushes: int) -> dict | None:
    try:
        import pylsl
        pylsl.library_version()
    except Exception as exc:  # noqa: BLE001 - liblsl missing: the row is unavailable
        return {"unavailable": str(exc)}
    c, n = 64, 10
    info = pylsl.StreamInfo("mefbench", "EEG", c, 1000.0, pylsl.cf_double64, "mefbench1")
    outlet = pylsl.StreamOutlet(info, chunk_size=n, max_buffered=10)
    proc = spawn("lsl", "mefbench", str(c), str(pushes * n))
    wait = threading.Event()
    deadline = time.monotonic() + 10
    while not outlet.have_consumers() and time.monotonic() < deadline:
        wait.wait(0.01)

    def push(k: int) -> int:
        outlet.push_chunk(np.ascontiguousarray(signal_block(c, k * n, n, np.float64).T))
        return (k + 1) * n

    pushed = paced(pushes, n / 1000.0, push)
    out = json.loads(proc.stdout.readline())
    proc.wait(30)
    lat = latencies(pushed, out["arrivals"])
    return {"median_ms": float(np.median(lat)), "p99_ms": float(np.percentile(lat, 99)),
            "chunks": len(lat)}


def row_many(seconds: float, clients: int = 4) -> dict:
    sys.path.insert(0, ROOT)
    import psutil

    from software import MefStreamServer
    from software.live.source import LiveStream
    c, fs, n = 384, 30000.0, 300
    pushes = int(seconds * fs / n)
    stream = LiveStream("big", [f"c{i}" for i in range(c)], fs, "float32", history_seconds=2)
    me = psutil.Process()
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        procs = [spawn("mef", str(srv.port), str(c), str(n), str(pushes * n), "float32")
                 for _ in range(clients)]
        base = signal_block(c, 0, 4096 + n, np.float32)   # (7 i + r) mod 4096 repeats

        def push(k: int) -> int:
            at = (k * n) % 4096
            block = base[:, at:at + n].copy()
            block[0] = np.arange(k * n, (k + 1) * n)
            return stream.append_stream_segment_data(block)

        cpu0, t0 = me.cpu_times(), time.monotonic()
        pushed = paced(pushes, n / fs, push)
        outs = [json.loads(p.stdout.readline()) for p in procs]
        cpu1, t1 = me.cpu_times(), time.monotonic()
        for p in procs:
            p.wait(30)
    lats = [latencies(pushed, o["arrivals"]) for o in outs]
    every = np.concatenate(lats)
    return {"clients": clients, "seconds": seconds,
            "delivered_once_exact": all(o["exact"] and o["seen"] == pushes * n for o in outs),
            "lag_at_end_ms": max(float(lat[-1]) for lat in lats),
            "median_ms": float(np.median(every)), "p99_ms": float(np.percentile(every, 99)),
            "server_cpu_percent": 100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system))
            / (t1 - t0)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "mef":
        mef_consumer(int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), argv[5])
        return 0
    if argv and argv[0] == "lsl":
        lsl_consumer(argv[1], int(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=2000, help="pushes of row 1 (10 ms each)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of row 2")
    args = parser.parse_args(argv)
    mef = row_latency(args.pushes)
    lsl = row_lsl(args.pushes)
    print(f"push -> callback, 64 ch x 1 kHz, 10-sample pushes, {args.pushes} pushes:")
    print(f"  mefstream  median {mef['median_ms']:.3f} ms  p99 {mef['p99_ms']:.3f} ms  "
          f"exact {mef['exact']}  ({mef['chunks']} chunks)")
    if "unavailable" in lsl:
        print(f"  pylsl      unavailable ({lsl['unavailable']})")
    else:
        print(f"  pylsl      median {lsl['median_ms']:.3f} ms  p99 {lsl['p99_ms']:.3f} ms")
        print(f"  ratio mefstream / LSL: median {mef['median_ms'] / lsl['median_ms']:.2f}  "
              f"p99 {mef['p99_ms'] / lsl['p99_ms']:.2f}  (target: median <= 1.0, p99 <= 2 ms)")
    many = row_many(args.seconds)
    print(f"384 ch x 30 kHz float32, 10 ms pushes, {many['clients']} clients, "
          f"{many['seconds']:g} s:")
    print(f"  delivered once and exact {many['delivered_once_exact']}  lag at end "
          f"{many['lag_at_end_ms']:.2f} ms  median {many['median_ms']:.2f} ms  p99 "
          f"{many['p99_ms']:.2f} ms  server CPU {many['server_cpu_percent']:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
