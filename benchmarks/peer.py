"""mef3io-server 3.1.0 (the gRPC MEF3 peer) for :mod:`benchmarks.file_peers`, in its own venv.

    /work/venv-peer/bin/python benchmarks/peer.py serve --port P --root D [--cache-mb 512]
    /work/venv-peer/bin/python benchmarks/peer.py run --port P --root D --plan PLAN.json

A benchmark-only peer: never imported by ``software`` or by the benchmark process itself
(which runs in the project's venv; this file needs only the standard library, numpy and
``mef3io_server``). ``serve`` builds the server from its documented Python API (a
``FileManager`` and a gRPC server with its servicer) and binds ``127.0.0.1:PORT`` (its own
entry point binds 0.0.0.0); its INFO log per request is turned down to WARNING. ``run``
executes one plan (``{"kind": ..., ...}``) as a client and prints one JSON line with the
timings. Paths are passed relative to ``--root``, the working directory of both (the peer
rewrites absolute paths on a machine with ``/.dockerenv``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

import numpy as np


def serve(args: argparse.Namespace) -> int:
    """Run the peer on 127.0.0.1:PORT until SIGTERM."""
    from concurrent import futures

    import grpc
    from mef3io_server.protobufs import gRPCMef3Server_pb2_grpc as pb2_grpc
    from mef3io_server.server.file_manager import FileManager
    from mef3io_server.server.mef3_server import gRPCMef3Server
    logging.getLogger().setLevel(logging.WARNING)   # it logs every request at INFO
    manager = FileManager(tile_cache_bytes=int(args.cache_mb * 2**20),
                          reader_processes=args.readers, use_process_pool=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10),
                         options=[("grpc.max_send_message_length", 512 * 2**20),
                                  ("grpc.max_receive_message_length", 512 * 2**20)])
    pb2_grpc.add_gRPCMef3ServerServicer_to_server(gRPCMef3Server(manager), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop(0.1)
    manager.shutdown()
    return 0


def _client(port: int):
    from mef3io_server.client import Mef3Client
    return Mef3Client(f"127.0.0.1:{port}")


def _get(client, path, channels, a, b) -> np.ndarray:
    res = client.get_signal_range(path, channels, int(a), int(b))
    if res["array"] is None:
        raise RuntimeError(f"peer error for [{a}, {b}): {res['error_message']}")
    return res["array"]


def run(args: argparse.Namespace) -> int:
    """Execute one plan as a client; print a JSON line of results."""
    with open(args.plan) as fh:
        plan = json.load(fh)
    client = _client(args.port)
    path = plan["path"]
    info = client.open_file(path)
    if not info["file_opened"]:
        raise SystemExit(f"the peer could not open {path}: {info['error_message']}")
    channels = plan.get("channels") or info["channel_names"]
    kind = plan["kind"]
    out: dict = {"kind": kind}
    perf = time.perf_counter
    if plan.get("start_at"):               # several clients started together
        time.sleep(max(0.0, plan["start_at"] - time.time()))  # a common start, not sync
    if kind == "windows":                  # sequential windows with work after each
        times = []
        t0, w0 = perf(), time.time()
        for a, b in plan["windows"]:
            t = perf()
            _get(client, path, channels, a, b)
            times.append(perf() - t)
            time.sleep(plan.get("work", 0.0))   # the client's simulated work
        out.update(total=perf() - t0, reads=times, t0=w0, t1=time.time())
    elif kind == "pass":                   # the whole file in windows, no work
        n = 0
        t0 = perf()
        for a, b in plan["windows"]:
            n += _get(client, path, channels, a, b).size
        out.update(seconds=perf() - t0, samples=n)
    elif kind == "random":                 # the same windows cold, then warm
        for label in ("cold", "warm"):
            times = []
            for a, b, names in plan["windows"]:
                t = perf()
                _get(client, path, names, a, b)
                times.append(perf() - t)
            out[label] = times
    elif kind == "envelope":
        times = []
        for _ in range(plan.get("repeats", 3)):
            t = perf()
            env = client.get_envelope(path, channels)
            times.append(perf() - t)
        out.update(seconds=times, blocks=int(sum(len(v["min"]) for v in env.values())))
    elif kind == "check":                   # values of one window, to compare
        arr = _get(client, path, channels, *plan["window"])
        out.update(dtype=str(arr.dtype), shape=list(arr.shape),
                   data=np.asarray(arr, np.float64).tolist())
    else:
        raise SystemExit(f"unknown plan kind {kind!r}")
    client.close_file(path)
    client.shutdown()
    print(json.dumps(out), flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--root", required=True)
    s.add_argument("--cache-mb", type=float, default=512)
    s.add_argument("--readers", type=int, default=2)
    r = sub.add_parser("run")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--root", required=True)
    r.add_argument("--plan", required=True)
    args = parser.parse_args(argv)
    os.chdir(args.root)
    return serve(args) if args.cmd == "serve" else run(args)


if __name__ == "__main__":
    sys.exit(main())
