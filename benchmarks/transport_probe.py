"""Throughput/latency probe: stock RPyC vs software.transport on loopback.

Run: ``PYTHONPATH=. python benchmarks/transport_probe.py [--repeat N]``.
Both servers run in a forked child process (no GIL sharing with the client).
Prints best-of-N MB/s (1 MB = 1e6 bytes) for server->client ``blob(n)`` and
client->server ``sink(b)``, and the median small call round trip.
"""
from __future__ import annotations

import argparse
import os
import multiprocessing as mp
import statistics
import time

import rpyc
from rpyc.utils.server import ThreadedServer

from software.transport import FastThreadedServer, fast_connect

SIZES_MB = (1, 8, 40)


class ProbeService(rpyc.Service):
    _blobs: dict[int, bytes] = {}

    def exposed_blob(self, n: int) -> bytes:
        if n not in self._blobs:
            self._blobs[n] = os.urandom(n)
        return self._blobs[n]

    def exposed_sink(self, data: bytes) -> int:
        return len(data)

    def exposed_ping(self) -> None:
        return None


def _serve(conn) -> None:
    servers = [ThreadedServer(ProbeService, hostname="127.0.0.1", port=0),
               FastThreadedServer(ProbeService, hostname="127.0.0.1", port=0)]
    for srv in servers:
        srv._listen()
        threading_start(srv)
    conn.send([srv.port for srv in servers])
    conn.recv()  # wait for "stop"
    for srv in servers:
        srv.close()


def threading_start(srv) -> None:
    import threading
    threading.Thread(target=srv.start, daemon=True).start()


def _best_rate(fn, nbytes: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e6


def measure(conn: rpyc.Connection, repeat: int) -> dict[str, float]:
    root = conn.root
    blob, sink, ping = root.blob, root.sink, root.ping
    out: dict[str, float] = {}
    for mb in SIZES_MB:
        n = mb * 1_000_000
        assert len(blob(n)) == n  # warm up (server builds and caches the blob)
        out[f"down {mb} MB (MB/s)"] = _best_rate(lambda: blob(n), n, repeat)
        payload = os.urandom(n)
        out[f"up {mb} MB (MB/s)"] = _best_rate(lambda: sink(payload), n, repeat)
    for _ in range(200):
        ping()
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter()
        ping()
        samples.append(time.perf_counter() - t0)
    out["small round trip (ms)"] = statistics.median(samples) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    stock_port, fast_port = parent.recv()
    try:
        with rpyc.connect("127.0.0.1", stock_port) as conn:
            stock = measure(conn, args.repeat)
        with fast_connect("127.0.0.1", fast_port) as conn:
            fast = measure(conn, args.repeat)
    finally:
        parent.send("stop")
        proc.join(5)
    print(f"{'metric':<24}{'stock':>12}{'fast':>12}{'fast/stock':>12}")
    for key in stock:
        ratio = fast[key] / stock[key]
        print(f"{key:<24}{stock[key]:>12.3f}{fast[key]:>12.3f}{ratio:>12.2f}")


if __name__ == "__main__":
    main()
