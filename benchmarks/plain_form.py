"""The plain answer form's cost beside the packed form and get_connection, side by side.

    python -m benchmarks.plain_form [--rounds 10] [--calls 30]

A server subprocess holds two live streams filled once with float64 samples: ``mea`` (60
channels, CREPE's MEA chunk of 100 samples) and ``eeg`` (16 channels, chunks of 2,560).
This process reads chunks over three client kinds, interleaved round by round so that
they share the machine's load:

* ``plain``: ``rpyc.connect(host, port, config=RPYC_CONFIG)``, the default form: a tuple
  of per-channel tuples of Python floats, CREPE's shape (``+ asarray``: and then
  ``numpy.asarray`` of it, what a script doing numpy pays);
* ``packed``: the same connection after ``conn.root.set_answer_form("packed")``, each
  answer through ``software.decode_segment``;
* ``get_connection``: a ``RemoteStream`` (same-host shared memory), numpy arrays.

Each call reads the next chunk (sync ``get_stream_segment``, data already there). Per kind
it prints the median and 90th percentile of a call's latency, the values (channels x
samples) per second over all its calls, and the ratio to ``get_connection``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import free_port, machine_info, markdown_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (stream, channels, samples per chunk, samples held)
SHAPES = (("mea", 60, 100, 60_000), ("eeg", 16, 2560, 256_000))

SERVER = """\
import sys, threading
import numpy as np
from software import MefStreamServer
from software.live.source import LiveStream
port, shapes = int(sys.argv[1]), eval(sys.argv[2])
streams = []
for name, channels, chunk, held in shapes:
    stream = LiveStream(name, [f"c{i}" for i in range(channels)], 10000.0,
                        history_seconds=held / 10000.0 + 1)
    rng = np.random.default_rng(1)
    stream.append_stream_segment_data(np.round(rng.normal(0, 50, (channels, held)), 2))
    streams.append(stream)
with MefStreamServer(port=port, workers=1, cache_mb=8, live_streams=streams):
    print("ready", flush=True)
    sys.stdin.read()
"""


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), repr(SHAPES)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10,
                        help="rounds; each kind reads --calls chunks per round")
    parser.add_argument("--calls", type=int, default=30, help="calls per kind per round")
    args = parser.parse_args()

    import rpyc

    import settings
    from software import decode_segment, get_connection

    port = free_port()
    server = start_server(port)
    try:
        plain = rpyc.connect("127.0.0.1", port, config=settings.RPYC_CONFIG)
        packed = rpyc.connect("127.0.0.1", port, config=settings.RPYC_CONFIG)
        packed.root.set_answer_form("packed")
        fast = get_connection(port, host="127.0.0.1")
        rows = []
        for name, channels, chunk, held in SHAPES:
            kinds = {
                "plain": (plain.root.open_live(name).get_stream_segment, lambda v: v),
                "plain + asarray": (plain.root.open_live(name).get_stream_segment,
                                    np.asarray),
                "packed": (packed.root.open_live(name).get_stream_segment, decode_segment),
                "get_connection": (fast.root.open_live(name).get_stream_segment,
                                   lambda v: v),
            }
            times = {kind: [] for kind in kinds}
            position = {kind: 0 for kind in kinds}
            for call, finish in kinds.values():            # warm up every path once
                finish(call(chunk, 0))
            for _ in range(args.rounds):
                for kind, (call, finish) in kinds.items():
                    for _ in range(args.calls):
                        start = position[kind]
                        t0 = time.perf_counter()
                        value = finish(call(chunk, start))
                        times[kind].append(time.perf_counter() - t0)
                        assert len(value) == channels and len(value[0]) == chunk
                        position[kind] = (start + chunk) % (held - chunk)
            base = statistics.median(times["get_connection"])
            for kind, spent in times.items():
                med = statistics.median(spent)
                p90 = float(np.percentile(spent, 90))
                rate = channels * chunk * len(spent) / sum(spent)
                rows.append([f"{channels} ch x {chunk}", kind, f"{med * 1e3:.3f}",
                             f"{p90 * 1e3:.3f}", f"{rate / 1e6:.2f}", f"{med / base:.1f}x"])
        plain.close()
        packed.close()
        fast.close()
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    for label, value in machine_info():
        print(f"- {label}: {value}")
    print(f"- calls per kind and shape: {args.rounds} rounds x {args.calls}, interleaved")
    print()
    print(markdown_table(["chunk", "client", "median ms/call", "p90 ms/call",
                          "M values/s", "median vs get_connection"], rows))


if __name__ == "__main__":
    main()
