"""Cached segments over shared memory vs the socket, side by side (issue 4, "Speed").

Run: ``python -m benchmarks.shm_probe [--repeat N] [--quick]``. Starts ``python start.py``
on the benchmark recording (64 ch x 256 Hz x 2 h, written once by ``benchmarks.run``),
fills the cache, then times ``decode_segment(svc.get_stream_segment(...))`` end to end
(request, assembly from cached blocks, delivery, decode) for cached segments of 1, 8 and
40 MiB, a 60 s window (``get_time_segment``, 7.5 MiB at 64 ch) and a 64 x 256 segment,
once over a connection that negotiated shared memory and once over the socket
(``get_connection(shared_memory=False)``). Medians of ``--repeat`` calls; 1 MB = 1e6 bytes.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    import os
    import sys
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(_root)
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.shm_probe", *sys.argv[1:]])

import argparse
import os
import statistics
import time

import numpy as np

from benchmarks.common import (
    DATA_DIR,
    Dataset,
    ServerProcess,
    ensure_recording,
    warmup_dataset,
)

MIB = 2**20


def _connect(port: int, shared: bool):
    from software import get_connection
    try:
        return get_connection(port, host="127.0.0.1", timeout=30, shared_memory=shared)
    except TypeError:  # a checkout without the shared-memory path: socket only
        if shared:
            return None
        return get_connection(port, host="127.0.0.1", timeout=30)


def _median_ms(call, repeat: int) -> tuple[float, object]:
    times = []
    value = None
    for _ in range(repeat):
        value = None  # drop the previous answer first, as a streaming client does
        t = time.perf_counter()
        value = call()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, value


def measure(port: int, ds: Dataset, shared: bool, repeat: int) -> dict[str, float] | None:
    """Milliseconds per call of each case, or None when the mode is not available."""
    from software import decode_segment
    conn = _connect(port, shared)
    if conn is None:
        return None
    try:
        if shared and not getattr(conn, "shared_memory", None):
            return None
        svc = conn.root.open_file(ds.name)
        info = dict(svc.get_info())
        nch, fs = len(info["channels"]), float(info["fs"])
        cases: list[tuple[str, object]] = []
        start = 0
        for mib in (1, 8, 40):
            count = int(mib * MIB // (8 * nch))
            cases.append((f"{mib} MiB ({nch} x {count})",
                          (lambda c=count, s=start: svc.get_stream_segment(c, s))))
            start += count + int(60 * fs)
        t0 = int(info["start_uutc"]) + int(round(start / fs * 1e6))
        cases.append((f"60 s window ({nch} x {int(60 * fs)})",
                      lambda: svc.get_time_segment(t0, t0 + 60_000_000)))
        start += int(120 * fs)
        cases.append((f"small ({nch} x 256)", lambda s=start: svc.get_stream_segment(256, s)))
        out: dict[str, float] = {}
        for name, call in cases:
            first = decode_segment(call())          # fill the cache (and the prefetch)
            for _ in range(3):
                decode_segment(call())
            ms, data = _median_ms(lambda: decode_segment(call()), repeat)
            assert np.array_equal(data, first, equal_nan=True), name
            out[name] = (ms, data.nbytes)
            del data, first
        return out
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--quick", action="store_true",
                        help="use the 16-channel 30 min recording")
    args = parser.parse_args()
    if args.quick:
        ds = Dataset(root=os.path.join(DATA_DIR, "quick"), name="eeg_16ch_256Hz_30min.mefd",
                     n_channels=16, minutes=30.0)
    else:
        ds = Dataset(root=os.path.join(DATA_DIR, "full"), name="eeg_64ch_256Hz_2h.mefd",
                     n_channels=64, minutes=120.0)
    ensure_recording(ds)
    ensure_recording(warmup_dataset(ds.root))
    srv = ServerProcess(ds.root, prefetch=3, cache_mb=1024).start()
    try:
        socket_ms = measure(srv.port, ds, False, args.repeat)
        shared_ms = measure(srv.port, ds, True, args.repeat)
    finally:
        srv.stop()
    print(f"\ncached segments, median of {args.repeat} calls (request -> decoded array)\n")
    print("| case | shared memory | socket | speed-up |")
    print("| --- | --- | --- | --- |")
    for name, (sock, nbytes) in socket_ms.items():
        def cell(ms: float) -> str:
            rate = nbytes / (ms / 1e3) / 1e6
            return f"{ms:.2f} ms ({rate:,.0f} MB/s)"
        if shared_ms is None:
            print(f"| {name} | n/a | {cell(sock)} | |")
        else:
            shm = shared_ms[name][0]
            print(f"| {name} | {cell(shm)} | {cell(sock)} | {sock / shm:.1f}x |")


if __name__ == "__main__":
    main()
