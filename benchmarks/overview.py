"""Overviews (issue 15): ``get_envelope`` of long recordings, side by side in one run.

Rows, each on a fresh server (``start.py``, 2 reader processes, 1 GiB cache):

- ``blocks``: 24 h x 64 ch x 256 Hz, 2000 bins (43 s, four 10 s MEF blocks a bin): the
  first call (the reader reads the block tables) and the next ones (median), against the
  target of 50 ms; nothing is decoded.
- ``finer``: 1 h of the same session in 2000 bins (1.8 s: finer than a MEF block): the
  first call decodes the hour and fills the tiles; later calls (target <= 100 ms) come
  from the tiles.
- ``stream``: 2 h x 64 ch (the ``benchmarks.run`` recording): ``get_envelope`` in 2000
  bins (finer than a MEF block: the first call decodes) against what a client had to do
  before, stream every sample and reduce it, each on a fresh server.
- ``peer``: the same 2 h file: mef3io-server's ``GetEnvelope`` (one row per MEF block and
  channel, from its index) against ``get_envelope`` at block resolution (720 bins of one
  10 s block) and in 2000 bins, each on a fresh server. Needs a Python with mef3io-server
  (``--peer-python``, e.g. a venv made with ``pip install mef3io-server==3.1.0``).

Every envelope is checked against the samples of the same bins (the tiles and the
stream row against a full read through the server; the 24 h row per bin on 20 random bins).

    python -m benchmarks.overview                       # all rows (writes 4 GiB once)
    python -m benchmarks.overview --rows stream --repeats 5
    python -m benchmarks.overview --rows peer --peer-python /work/venv-overview/bin/python
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Mapping

import numpy as np

from .common import (
    DATA_DIR,
    Dataset,
    ForeignCpu,
    ServerProcess,
    ensure_recording,
    machine_info,
    median,
    warmup_dataset,
)

FS, CHANNELS, BINS = 256.0, 64, 2000
ROOT_24H = os.path.join(DATA_DIR, "overview")
NAME_24H = "day_64ch.mefd"
GAP_24H = (6 * 3600, 6 * 3600 + 300)      # five minutes without data at 06:00


class _LazySignals(Mapping):
    """Channel name -> samples, made when asked (24 h x 64 ch would not fit at once)."""

    def __init__(self, seconds: float) -> None:
        from software.mef3.demo import eeg_like
        self._names = [f"EEG{c + 1:02d}" for c in range(CHANNELS)]
        self._n = int(seconds * FS)
        self._base = eeg_like(1, FS, 1800.0, seed=3)[0]   # 30 min of EEG-like signal

    def __getitem__(self, name: str) -> np.ndarray:
        ch = self._names.index(name)
        reps = -(-self._n // len(self._base))
        x = np.tile(np.roll(self._base, 997 * ch), reps)[:self._n] * (1 + ch / 64)
        x += np.sin(np.arange(self._n) * (2 * np.pi / (FS * 3600))) * 50   # hourly drift
        x[int(GAP_24H[0] * FS):int(GAP_24H[1] * FS)] = np.nan
        return x

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return CHANNELS


def ensure_day(log=print) -> str:
    """Write the 24 h session once (about 4 GiB, a few minutes); return the data root."""
    path = os.path.join(ROOT_24H, NAME_24H)
    marker = path + ".json"
    if not os.path.exists(marker):
        from software.mef3.demo import DEMO_START_UUTC
        from software.mef3.writer import write_session
        os.makedirs(ROOT_24H, exist_ok=True)
        log(f"writing {path}: {CHANNELS} ch x {FS:g} Hz x 24 h ...")
        t0 = time.perf_counter()
        write_session(path, _LazySignals(86400.0), FS, DEMO_START_UUTC, precision=2,
                      overwrite=True)
        with open(marker, "w") as fh:
            fh.write(f'{{"write_seconds": {time.perf_counter() - t0:.1f}}}\n')
        log(f"  written in {time.perf_counter() - t0:.0f} s")
    ensure_recording(warmup_dataset(ROOT_24H), log=log)
    return ROOT_24H


def _check(svc, env: np.ndarray, edges: np.ndarray, bins) -> None:
    """The envelope of ``bins`` equals nanmin/nanmax of the samples the server returns."""
    for k in bins:
        data = svc.get_stream_segment(int(edges[k + 1] - edges[k]), int(edges[k]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.stack([np.nanmin(data, axis=1), np.nanmax(data, axis=1)])
        if not np.array_equal(env[:, :, k], want, equal_nan=True):
            raise AssertionError(f"bin {k} [{edges[k]}, {edges[k + 1]}) differs")


def _timed(call) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = call()
    return time.perf_counter() - t0, value


def row_blocks(repeats: int) -> dict:
    root = ensure_day()
    with ServerProcess(root, prefetch=0, cache_mb=1024) as server, ForeignCpu() as cpu:
        conn = server.connect()
        svc = conn.root.open_file(NAME_24H)
        n = int(svc.get_info()["n_samples"])
        reads0 = dict(conn.root.get_stats())["reads"]
        first, (env, edges) = _timed(lambda: svc.get_envelope(0, n, BINS))
        again = [_timed(lambda: svc.get_envelope(0, n, BINS))[0] for _ in range(repeats)]
        reads = dict(conn.root.get_stats())["reads"] - reads0
        _check(svc, env, edges, np.random.default_rng(1).choice(BINS, 20, replace=False))
        conn.close()
    return {"first": first, "warm": median(again), "reads": reads, "foreign": cpu.cores,
            "bins": env.shape[2], "nan_bins": int(np.isnan(env[0, 0]).sum())}


def row_finer(repeats: int) -> dict:
    root = ensure_day()
    start, stop = int(10 * 3600 * FS), int(11 * 3600 * FS)
    with ServerProcess(root, prefetch=0, cache_mb=1024) as server, ForeignCpu() as cpu:
        conn = server.connect()
        svc = conn.root.open_file(NAME_24H)
        cold, (env, edges) = _timed(lambda: svc.get_envelope(start, stop, BINS))
        data = svc.get_stream_segment(stop - start, start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rel = (edges - start)[:-1]
            want = np.stack([np.fmin.reduceat(data, rel, axis=1),
                             np.fmax.reduceat(data, rel, axis=1)])
        assert np.array_equal(env, want, equal_nan=True), "finer envelope differs"
        del data
        reads0 = dict(conn.root.get_stats())["reads"]
        warm = [_timed(lambda: svc.get_envelope(start, stop, BINS))[0]
                for _ in range(repeats)]
        reads = dict(conn.root.get_stats())["reads"] - reads0
        conn.close()
    return {"cold": cold, "warm": median(warm), "reads_warm": reads, "foreign": cpu.cores}


def _stream_and_reduce(svc, n: int, edges: np.ndarray) -> np.ndarray:
    """What a client did before: read every sample (60 s at a time) and reduce per bin."""
    step = int(60 * FS)
    lows = np.full((CHANNELS, len(edges) - 1), np.nan)
    highs = np.full((CHANNELS, len(edges) - 1), np.nan)
    bin_of = np.searchsorted(edges, np.arange(n), side="right") - 1
    for a in range(0, n, step):
        data = svc.get_stream_segment(step, a)
        where = bin_of[a:a + data.shape[1]]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(where)) + 1))
        k = where[starts]
        np.fmin.at(lows, (slice(None), k), np.fmin.reduceat(data, starts, axis=1))
        np.fmax.at(highs, (slice(None), k), np.fmax.reduceat(data, starts, axis=1))
    return np.stack([lows, highs])


def row_stream(repeats: int) -> dict:
    """2 h x 64 ch in 2000 bins: get_envelope (cold, then warm) against stream + reduce
    on the client (cold), each on a fresh server, alternating."""
    ds = Dataset(root=os.path.join(DATA_DIR, "full"), name="bench_64ch_2h.mefd",
                 n_channels=CHANNELS, minutes=120.0)
    ensure_recording(ds)
    ensure_recording(warmup_dataset(ds.root))
    cold, warm, streams = [], [], []
    with ForeignCpu() as cpu:
        for _ in range(repeats):
            with ServerProcess(ds.root, prefetch=2, cache_mb=1024) as server:
                conn = server.connect()
                svc = conn.root.open_file(ds.name)
                n = int(svc.get_info()["n_samples"])
                t, (env, edges) = _timed(lambda: svc.get_envelope(0, n, BINS))
                cold.append(t)
                warm.append(median([_timed(lambda: svc.get_envelope(0, n, BINS))[0]
                                    for _ in range(3)]))
                conn.close()
            with ServerProcess(ds.root, prefetch=2, cache_mb=1024) as server:
                conn = server.connect()
                svc = conn.root.open_file(ds.name)
                t, reduced = _timed(lambda: _stream_and_reduce(svc, n, edges))
                streams.append(t)
                conn.close()
            assert np.array_equal(env, reduced, equal_nan=True), "envelope differs"
    return {"cold": median(cold), "warm": median(warm), "stream_reduce": median(streams),
            "foreign": cpu.cores}


_PEER_SERVER = """
import sys
from concurrent import futures
import grpc
from mef3io_server.server.file_manager import FileManager
from mef3io_server.server.mef3_server import gRPCMef3Server
from mef3io_server.protobufs.gRPCMef3Server_pb2_grpc import \\
    add_gRPCMef3ServerServicer_to_server
manager = FileManager(tile_cache_bytes=512 * 2**20, reader_processes=2)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
add_gRPCMef3ServerServicer_to_server(gRPCMef3Server(manager), server)
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""

_PEER_CLIENT = """
import json, sys, time
from mef3io_server.client import Mef3Client
client = Mef3Client("127.0.0.1:" + sys.argv[1])
name, repeats = sys.argv[2], int(sys.argv[3])
client.open_file(name)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    env = client.get_envelope(name)
    times.append(time.perf_counter() - t0)
rows = {ch: len(v["min"]) for ch, v in env.items()}
print(json.dumps({"times": times, "channels": len(env), "rows": max(rows.values())}))
"""


def row_peer(repeats: int, python: str) -> dict:
    """mef3io-server's GetEnvelope and get_envelope on the 2 h file, fresh servers."""
    import json
    import subprocess
    from .common import free_port
    ds = Dataset(root=os.path.join(DATA_DIR, "full"), name="bench_64ch_2h.mefd",
                 n_channels=CHANNELS, minutes=120.0)
    ensure_recording(ds)
    ensure_recording(warmup_dataset(ds.root))
    port = free_port()
    # the peer rewrites absolute paths where /.dockerenv exists: a path relative to its cwd
    server = subprocess.Popen([python, "-c", _PEER_SERVER, str(port)], cwd=ds.root,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in server.stdout:          # it prints where it logs first
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError("mef3io-server did not start")
        done = subprocess.run([python, "-c", _PEER_CLIENT, str(port), ds.name,
                               str(repeats + 1)], cwd=ds.root, capture_output=True,
                              text=True, timeout=600)
        peer = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=30)
    ours: dict[int, list] = {720: [], BINS: []}
    firsts: dict[int, list] = {720: [], BINS: []}
    for bins in ours:
        with ServerProcess(ds.root, prefetch=0, cache_mb=1024) as srv:
            conn = srv.connect()
            svc = conn.root.open_file(ds.name)
            n = int(svc.get_info()["n_samples"])
            times = [_timed(lambda: svc.get_envelope(0, n, bins))[0]
                     for _ in range(repeats + 1)]
            firsts[bins], ours[bins] = times[0], times[1:]
            conn.close()
    return {"peer_first": peer["times"][0], "peer": median(peer["times"][1:]),
            "peer_rows": peer["rows"], "peer_channels": peer["channels"],
            "blocks_first": firsts[720], "blocks": median(ours[720]),
            "bins_first": firsts[BINS], "bins": median(ours[BINS])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="blocks,finer,stream,peer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-python", default=None,
                        help="a Python with mef3io-server installed (the peer row)")
    args = parser.parse_args()
    for label, value in machine_info():
        print(f"{label}: {value}")
    rows = args.rows.split(",")
    print("\n| row | measured | reference (same run) | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    if "blocks" in rows:
        r = row_blocks(max(5, args.repeats))
        print(f"| 24 h x 64 ch, {r['bins']} bins, from block tables | {r['warm'] * 1e3:.1f} ms "
              f"(first call {r['first'] * 1e3:.0f} ms, {r['reads']} sample reads) | "
              f"target 50 ms | {r['warm'] / 0.050:.2f} | <= 50 ms | "
              f"{'yes' if r['warm'] <= 0.050 else 'no'} |")
        print(f"|   (other processes used {r['foreign']:.2f} cores meanwhile) |||||")
    if "finer" in rows:
        r = row_finer(args.repeats)
        print(f"| 1 h of it x 64 ch, {BINS} bins of 1.8 s, warm (tiles) | "
              f"{r['warm'] * 1e3:.1f} ms ({r['reads_warm']} sample reads) | "
              f"cold first call {r['cold']:.2f} s | {r['warm'] / r['cold']:.3f} | <= 100 ms | "
              f"{'yes' if r['warm'] <= 0.100 else 'no'} |")
        print(f"|   (other processes used {r['foreign']:.2f} cores meanwhile) |||||")
    if "stream" in rows:
        r = row_stream(args.repeats)
        print(f"| 2 h x 64 ch, {BINS} bins (3.6 s: finer than a block), get_envelope cold | "
              f"{r['cold']:.2f} s (warm {r['warm'] * 1e3:.0f} ms) | stream + reduce on the "
              f"client, cold {r['stream_reduce']:.2f} s | {r['cold'] / r['stream_reduce']:.2f} "
              f"(warm {r['warm'] / r['stream_reduce']:.4f}) | | |")
        print(f"|   (other processes used {r['foreign']:.2f} cores meanwhile) |||||")
    if "peer" in rows and args.peer_python:
        r = row_peer(max(3, args.repeats), args.peer_python)
        print(f"| 2 h x 64 ch at block resolution (720 bins), get_envelope | "
              f"{r['blocks'] * 1e3:.1f} ms (first {r['blocks_first'] * 1e3:.0f} ms) | "
              f"mef3io-server GetEnvelope ({r['peer_channels']} ch x {r['peer_rows']} "
              f"blocks) {r['peer'] * 1e3:.1f} ms (first {r['peer_first'] * 1e3:.0f} ms) | "
              f"{r['blocks'] / r['peer']:.2f} | | |")
        print(f"| 2 h x 64 ch, {BINS} bins (sub-block: first call decodes) | "
              f"{r['bins'] * 1e3:.1f} ms (first {r['bins_first']:.1f} s) | same | "
              f"{r['bins'] / r['peer']:.2f} | | |")


if __name__ == "__main__":
    main()
