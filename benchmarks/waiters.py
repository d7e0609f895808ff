"""What does a push cost the producer when clients wait? This code beside a baseline revision.

    python -m benchmarks.waiters [--baseline main] [--waiters 0,100,2000] [--repeats 2]

One live stream (``--channels`` x 1 kHz float64, 10 s history) served by an in-process
``MefStreamServer``; a client process (plain ``rpyc.connect``, callbacks served by a
background thread) registers ``W`` callback requests for the next ``--samples`` samples
(one client, or ``W`` spread over ``--clients`` connections), then the server's process
pushes ``--samples`` samples in one ``append_stream_segment_data`` call, which completes
them all. A whole ring's length is pushed first, so that the measured push writes into
memory already touched (a first touch of fresh pages costs up to milliseconds), and a
full garbage collection runs just before it (none of the objects the requests made is
collected inside it); both for each tree alike.

Printed per row: the time that push took in the producer's thread (wall clock, and the
CPU time of that thread: other threads and processes do not count), the server
process's peak RSS above its level before the push (VmHWM reset just before it), and
the time until the client had every callback.

Each configuration runs once with this checkout and once with ``--baseline`` (a git
revision, exported with ``git archive`` into a temporary folder), alternately, in fresh
processes, and the table prints both side by side with their ratio. The issue's case
(issue 18): 2,000 waiters of one client, 64 ch x 1,000 samples each.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The server process: argv = channels samples waiters clients. Prints one JSON line.
SERVER = r"""
import gc, json, os, subprocess, sys, time
import numpy as np
from software import MefStreamServer
from software.live.source import LiveStream

channels, samples, waiters, clients = map(int, sys.argv[1:5])

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0

stream = LiveStream("bench", [f"c{i}" for i in range(channels)], 1000.0,
                    history_seconds=10)
block = np.arange(channels * samples, dtype=np.float64).reshape(channels, samples)
warm = LiveStream("warm", stream.channels, 1000.0, history_seconds=10)
warm.append_stream_segment_data(block)     # first-use costs, outside the measured push
first = stream.ring.capacity               # a whole ring pushed first: no page is new
stream.append_stream_segment_data(np.zeros((channels, first)))
with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
    client = None
    if waiters:
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(srv.port), str(samples),
                                   str(waiters), str(clients), str(first)],
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 120
        while stream.waiting < waiters and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.waiting == waiters, stream.waiting
    gc.collect()       # no collection of everything the waiters made lands in the push
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")                      # VmHWM := VmRSS now
    before = status("VmRSS")
    t0, c0 = time.perf_counter(), time.thread_time()
    stream.append_stream_segment_data(block)
    push, cpu = time.perf_counter() - t0, time.thread_time() - c0
    delivered = 0.0
    if client is not None:
        delivered = float(client.stdout.readline())
        client.wait(60)
    peak = status("VmHWM")
print(json.dumps({"push_ms": push * 1e3, "cpu_ms": cpu * 1e3, "rss_mib": (peak - before) / 2**20,
                  "delivered_s": delivered}), flush=True)
"""

#: The client process: argv = port samples waiters clients first; prints "ready", then the
#: seconds until the last callback arrived, counted from "ready".
CLIENT = r"""
import sys, threading, time
import rpyc
port, samples, waiters, clients, first = map(int, sys.argv[1:6])
config = {"allow_pickle": False, "sync_request_timeout": 300}
conns = [rpyc.connect("127.0.0.1", port, config=config) for _ in range(clients)]
for c in conns:   # the packed form where there are answer forms: the waiting is measured,
    try:          # not the plain form's number building (0.25-0.5 us a value, by design)
        c.root.set_answer_form("packed")
    except AttributeError:
        pass
serving = [rpyc.BgServingThread(c, serve_interval=1.0, sleep_interval=0.0) for c in conns]
lock = threading.Lock()
count = [0]
done = threading.Event()
def callback(value):
    with lock:
        count[0] += 1
        if count[0] == waiters:
            done.set()
for k in range(waiters):
    assert conns[k % clients].root.get_stream_segment(samples, first, callback) is False
t0 = time.perf_counter()
print("ready", flush=True)
done.wait(300)
print(time.perf_counter() - t0, flush=True)
for s in serving:
    s.stop()
for c in conns:
    c.close()
"""


def export(revision: str) -> str:
    """``revision`` of this repository as a folder (removed by the caller)."""
    folder = tempfile.mkdtemp(prefix="mefstream-baseline-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", revision], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def run_one(tree: str, channels: int, samples: int, waiters: int, clients: int) -> dict:
    """One server process of ``tree`` measured once."""
    code = f"CLIENT = {CLIENT!r}\n" + SERVER
    done = subprocess.run([sys.executable, "-c", code, str(channels), str(samples),
                           str(waiters), str(clients)], cwd=tree, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": tree})
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--waiters", default="0,100,2000")
    parser.add_argument("--clients", type=int, default=1,
                        help="connections the waiters are spread over (default 1)")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    counts = [int(w) for w in args.waiters.split(",")]
    base = export(args.baseline)
    rows = []
    try:
        for waiters in counts:
            clients = max(1, min(args.clients, waiters))
            got = {"base": [], "this": []}
            for _ in range(args.repeats):      # alternate, so drifting load hits both
                for name, tree in (("base", base), ("this", ROOT)):
                    got[name].append(run_one(tree, args.channels, args.samples, waiters,
                                             clients))
            rows.append((waiters, clients, got))
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def med(values, key):
        return statistics.median(v[key] for v in values)

    print(f"push of {args.channels} ch x {args.samples} samples completing W waiting "
          f"callback requests; baseline {args.baseline}, medians of {args.repeats} runs")
    print(f"{'W':>6} {'conns':>5} | {'push ms base':>12} {'this':>7} {'ratio':>7} | "
          f"{'push CPU ms base':>16} {'this':>6} {'ratio':>7} | {'peak RSS MiB base':>17} "
          f"{'this':>6} | {'delivered s base':>16} {'this':>6}")
    for waiters, clients, got in rows:
        b, t = med(got["base"], "push_ms"), med(got["this"], "push_ms")
        cb, ct = med(got["base"], "cpu_ms"), med(got["this"], "cpu_ms")
        print(f"{waiters:>6} {clients:>5} | {b:>12.2f} {t:>7.2f} {t / b:>7.3f} | "
              f"{cb:>16.2f} {ct:>6.2f} {ct / cb:>7.3f} | "
              f"{med(got['base'], 'rss_mib'):>17.1f} {med(got['this'], 'rss_mib'):>6.1f} | "
              f"{med(got['base'], 'delivered_s'):>16.2f} {med(got['this'], 'delivered_s'):>6.2f}")


if __name__ == "__main__":
    main()
