"""Throughput/latency probe: stock RPyC vs software.transport.connection on loopback.

Run: ``PYTHONPATH=. python benchmarks/transport_probe.py [--repeat N]``.
Both servers run in a forked child process (no GIL sharing with the client).
Prints best-of-N MB/s (1 MB = 1e6 bytes) for server->client ``blob(n)`` and
client->server ``sink(b)`` (random, incompressible bytes), the median small
call round trip, and, with a background serving thread (stock
``BgServingThread`` vs ``ServingThread``), the round trip and the latency of a
server->client callback.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import threading
import time

import rpyc
from rpyc.utils.server import ThreadedServer

from software.transport.connection import (
    FastThreadedServer,
    fast_connect,
)
from software.transport.serving import ServingThread

SIZES_MB = (1, 8, 40)
CONFIG = {"sync_request_timeout": 600}  # stock needs > 30 s for 80 MB


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

    def exposed_call_later(self, cb, delay: float) -> None:
        """Call ``cb(t_sent)`` from a server thread after ``delay`` seconds."""
        def run() -> None:
            threading.Event().wait(delay)  # let the client's main thread go idle
            cb(time.perf_counter())  # CLOCK_MONOTONIC: comparable across processes
        threading.Thread(target=run, daemon=True).start()


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
    threading.Thread(target=srv.start, daemon=True).start()


def _best_rate(fn, nbytes: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e6


def measure(conn: rpyc.Connection, repeat: int,
            sizes_mb: tuple[int, ...] = SIZES_MB) -> dict[str, float]:
    root = conn.root
    blob, sink, ping = root.blob, root.sink, root.ping
    out: dict[str, float] = {}
    for mb in sizes_mb:
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


def _round_trip_ms(ping, n: int = 1000) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        ping()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def measure_serving(conn: rpyc.Connection, make_thread, stop) -> dict[str, float]:
    """Callback latency and round trip while a background serving thread runs."""
    root = conn.root
    thread = make_thread(conn)
    try:
        out = {"rt w/ serving thr (ms)": _round_trip_ms(root.ping)}
        latencies: list[float] = []
        got = threading.Event()

        def cb(t_sent: float) -> None:
            latencies.append(time.perf_counter() - t_sent)
            got.set()

        for _ in range(20):
            got.clear()
            root.call_later(cb, 0.005)
            if not got.wait(5):
                raise RuntimeError("callback did not arrive")
        out["callback latency (ms)"] = statistics.median(latencies) * 1e3
    finally:
        stop(thread)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES_MB)),
                        help="comma-separated blob sizes in MB (default %(default)s)")
    args = parser.parse_args()
    sizes = tuple(int(x) for x in args.sizes.split(","))
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    stock_port, fast_port = parent.recv()
    try:
        with rpyc.connect("127.0.0.1", stock_port, config=CONFIG) as conn:
            stock = measure(conn, args.repeat, sizes)
            stock |= measure_serving(conn, rpyc.BgServingThread, lambda t: t.stop())
        with fast_connect("127.0.0.1", fast_port, config=CONFIG) as conn:
            fast = measure(conn, args.repeat, sizes)
            fast |= measure_serving(conn, ServingThread, lambda t: t.close())
    finally:
        parent.send("stop")
        proc.join(5)
    malloc = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUN"))}
    print(f"malloc env: {malloc or 'default'}")
    print(f"{'metric':<26}{'stock':>12}{'fast':>12}{'fast/stock':>12}")
    for key in stock:
        ratio = fast[key] / stock[key]
        print(f"{key:<26}{stock[key]:>12.3f}{fast[key]:>12.3f}{ratio:>12.2f}")


if __name__ == "__main__":
    main()
