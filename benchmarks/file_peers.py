"""File peers side by side: mefstream, mefstream at another commit, mef3io-server, direct reads.

    python -m benchmarks.file_peers                          # 64 ch x 256 Hz x 2 h, 3 repeats
    python -m benchmarks.file_peers --hours 6 --repeats 1
    python -m benchmarks.file_peers --main /tmp/main-base --only random,memory,tools
    python -m benchmarks.file_peers --peer-python /work/venv-peer/bin/python

Systems, measured in alternation within every repeat (the machine may be shared: only
figures of one run are compared, as ratios):

- ``mefstream``: this checkout's ``start.py`` (default options but ``--cache-mb``);
- ``main``: the same at ``--main PATH`` (e.g. ``git archive main | tar -x -C PATH``), the
  code before this change, when given;
- ``mef3io``: mef3io-server 3.1.0 from its own venv (``--peer-python``; see
  ``benchmarks/peer.py``), 2 reader processes, 512 MB float32 tile cache, on loopback;
  skipped with a note when that interpreter is missing;
- ``direct``: ``mef_tools.io.MefReader`` in the benchmark process (or one per client).

Rows: ``sequential`` (20 x 60 s windows of every channel + 0.3 s sleep), ``cold_pass``
(the whole file in 60 s windows, M samples/s), ``random`` (50 random 10 s x 8-channel
windows, channels drawn per window, cold then the same again warm; ours is
``set_active_channels`` + ``get_stream_segment``, two calls, the peer's one
``get_signal_range``), ``concurrent`` (3 client processes x 20 windows + 0.3 s, each in
its own third of the file), ``memory`` (server tree RSS and PSS after a full pass with a
512 MiB cache budget, and what the cache holds), ``envelope`` (whole-recording min/max:
the peer's ``get_envelope``; ours ``get_envelope`` with one bin per 10 s MEF block, as
the peer answers, when a view has it), ``tools`` (three
client processes in turn, each opening the file, reading its first 20 min and closing it:
kept warm, ``--keep-warm-seconds 0``, and with a fourth client holding the file open).
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    import os
    import sys
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(_root)
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.file_peers", *sys.argv[1:]])

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from benchmarks.common import (
    DATA_DIR,
    ROOT,
    Dataset,
    ForeignCpu,
    ServerProcess,
    ensure_recording,
    free_port,
    machine_info,
    markdown_table,
    median,
    process_tree_pss,
    process_tree_rss,
    session_info,
    warmup_dataset,
)
from benchmarks.run import (
    _client_windows,
    _wall,
    as_2d,
    direct_pass,
    run_clients,
    service_pass,
)

ROWS = ("sequential", "cold_pass", "random", "concurrent", "memory", "envelope", "tools")
MIB = 2**20
PEER_PYTHON = "/work/venv-peer/bin/python"
PEER = os.path.join(ROOT, "benchmarks", "peer.py")


class PeerProcess:
    """mef3io-server in a subprocess of its own venv, bound to loopback, warmed up."""

    def __init__(self, python: str, root: str, cache_mb: float = 512) -> None:
        self.python, self.root, self.cache_mb = python, root, cache_mb
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> PeerProcess:
        self.port = free_port()
        log = open(os.path.join(DATA_DIR, "logs", "peer.log"), "a")
        self.proc = subprocess.Popen([self.python, PEER, "serve", "--port", str(self.port),
                                      "--root", self.root, "--cache-mb", str(self.cache_mb)],
                                     stdout=subprocess.PIPE, stderr=log, text=True,
                                     stdin=subprocess.DEVNULL)
        log.close()
        line = self.proc.stdout.readline()
        while line and line.strip() != "ready":
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("mef3io-server did not start; see benchmarks/data/logs/peer.log")
        ds = warmup_dataset(self.root)   # start its reader processes before timing
        info = session_info(ds.path)
        step = int(60e6)
        self.run({"kind": "pass", "path": ds.name,
                  "windows": [(a, min(a + step, info["end_uutc"])) for a in
                              range(info["start_uutc"], info["end_uutc"], step)]})
        return self

    def run(self, plan: dict, background: bool = False):
        """Run ``plan`` in a peer client process; its JSON result (or the Popen)."""
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(plan, fh)
        proc = subprocess.Popen([self.python, PEER, "run", "--port", str(self.port), "--root",
                                 self.root, "--plan", path], stdout=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)
        if background:
            return proc
        return finish(proc)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> PeerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"peer client failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


class Bench:
    """One run: the recording, the systems, the rows measured so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        hours = args.hours
        self.ds = Dataset(root=os.path.join(DATA_DIR, "full"),
                          name=f"eeg_64ch_256Hz_{hours:g}h.mefd" if hours != 2 else
                          "eeg_64ch_256Hz_2h.mefd", n_channels=64, minutes=60.0 * hours)
        ensure_recording(self.ds)
        ensure_recording(warmup_dataset(self.ds.root), log=lambda *_: None)
        info = session_info(self.ds.path)
        self.channels = info["channels"]
        self.start_uutc, self.end_uutc = info["start_uutc"], info["end_uutc"]
        self.fs, self.n = info["fs"], info["n_samples"]
        self.peer_ok = os.path.exists(args.peer_python)
        self.codes = {"mefstream": ROOT}
        if args.main:
            self.codes["main"] = os.path.abspath(args.main)
        self.rows: list[list[str]] = []
        self.raw: dict = {}
        self.notes: list[str] = []
        if not self.peer_ok:
            self.notes.append(f"mef3io-server skipped: {args.peer_python} not found")

    # ---- helpers --------------------------------------------------------------------

    def uutc(self, index: int) -> int:
        return self.start_uutc + int(round(index * 1e6 / self.fs))

    def windows(self, first_s: float, count: int, seconds: float = 60.0) -> list:
        return [(self.start_uutc + int((first_s + i * seconds) * 1e6),
                 min(self.start_uutc + int((first_s + (i + 1) * seconds) * 1e6),
                     self.end_uutc)) for i in range(count)]

    def server(self, system: str, cache_mb: float = 1024, extra=()) -> ServerProcess:
        prefetch = self.args.prefetch
        return ServerProcess(self.ds.root, prefetch=prefetch, cache_mb=cache_mb,
                             code=self.codes[system], extra=list(extra))

    def peer(self) -> PeerProcess:
        return PeerProcess(self.args.peer_python, self.ds.root)

    def systems(self) -> list[str]:
        return list(self.codes) + (["mef3io"] if self.peer_ok else [])

    def reader(self):
        from mef_tools.io import MefReader
        warnings.simplefilter("ignore")
        return MefReader(self.ds.path)

    def add(self, row: str, cells: dict, unit: str, ratio_to: str = "direct",
            lower_is_better: bool = True, raw: dict | None = None) -> None:
        """One table row: per system ``median (min-max)`` and its ratio to ``ratio_to``."""
        ref = median(cells.get(ratio_to, []))
        parts = []
        for system in ("mefstream", "main", "mef3io", "direct"):
            values = cells.get(system)
            if not values:
                parts.append("—")
                continue
            m = median(values)
            text = f"{m:.3g} {unit}" if len(values) == 1 else \
                f"{m:.3g} ({min(values):.3g}-{max(values):.3g}) {unit}"
            if system != ratio_to and ref == ref and ref:
                text += f" = {m / ref:.2f}x"
            parts.append(text)
        self.rows.append([row] + parts)
        self.raw[row] = raw or cells
        print("  " + " | ".join([row] + parts), flush=True)

    # ---- rows -------------------------------------------------------------------------

    def row_sequential(self) -> None:
        from software import decode_segment
        wins = self.windows(0, 20)
        cells: dict = {}
        for rep in range(self.args.repeats):
            reader = self.reader()
            t0 = time.perf_counter()
            for a, b in wins:
                as_2d(reader.get_data(self.channels, a, b))
                time.sleep(0.3)  # the client's simulated work
            cells.setdefault("direct", []).append(time.perf_counter() - t0)
            reader.close()
            for system in self.codes:
                with self.server(system) as srv:
                    conn = srv.connect()
                    get = conn.root.open_file(self.ds.name).get_time_segment
                    t0 = time.perf_counter()
                    for a, b in wins:
                        decode_segment(get(a, b))
                        time.sleep(0.3)  # the client's simulated work
                    cells.setdefault(system, []).append(time.perf_counter() - t0)
                    conn.close()
            if self.peer_ok:
                with self.peer() as peer:
                    res = peer.run({"kind": "windows", "path": self.ds.name, "windows": wins,
                                    "work": 0.3})
                    cells.setdefault("mef3io", []).append(res["total"])
        self.add("20 x 60 s windows + 0.3 s sleep (s)", cells, "s")

    def row_cold_pass(self) -> None:
        wins = self.windows(0, int(np.ceil((self.end_uutc - self.start_uutc) / 60e6)))
        cells: dict = {}
        for rep in range(self.args.repeats):
            n, secs = direct_pass(self.ds.path, self.channels, self.start_uutc, self.end_uutc,
                                  60.0)
            cells.setdefault("direct", []).append(n / secs / 1e6)
            for system in self.codes:
                with self.server(system) as srv:
                    conn = srv.connect()
                    m, secs = service_pass(conn.root.open_file(self.ds.name),
                                           int(round(60 * self.fs)))
                    conn.close()
                if m != n:
                    self.notes.append(f"cold pass: {system} returned {m} samples, direct {n}")
                cells.setdefault(system, []).append(m / secs / 1e6)
            if self.peer_ok:
                with self.peer() as peer:
                    res = peer.run({"kind": "pass", "path": self.ds.name, "windows": wins})
                    cells.setdefault("mef3io", []).append(res["samples"] / res["seconds"] / 1e6)
        self.add("cold pass, whole file (M samples/s; higher is better)", cells, "M/s")

    def random_windows(self, seed: int, count: int = 50) -> list:
        rng = np.random.default_rng(seed)
        size = int(10 * self.fs)
        out = []
        for _ in range(count):
            start = int(rng.integers(0, self.n - size))
            names = [self.channels[c] for c in sorted(rng.choice(len(self.channels), 8,
                                                                 replace=False))]
            out.append((start, size, names))
        return out

    def row_random(self) -> None:
        from software import decode_segment
        cold: dict = {}
        warm: dict = {}
        for rep in range(self.args.repeats):
            wins = self.random_windows(rep)
            reader = self.reader()
            times = []
            for start, size, names in wins:
                t = time.perf_counter()
                as_2d(reader.get_data(names, self.uutc(start), self.uutc(start + size)))
                times.append(time.perf_counter() - t)
            reader.close()
            cold.setdefault("direct", []).append(median(times) * 1e3)
            warm.setdefault("direct", []).append(median(times) * 1e3)
            for system in self.codes:
                with self.server(system) as srv:
                    conn = srv.connect()
                    svc = conn.root.open_file(self.ds.name)
                    choose, get = svc.set_active_channels, svc.get_stream_segment
                    for label, box in (("cold", cold), ("warm", warm)):
                        times = []
                        for start, size, names in wins:
                            t = time.perf_counter()
                            choose(names)
                            decode_segment(get(size, start))
                            times.append(time.perf_counter() - t)
                        box.setdefault(system, []).append(median(times) * 1e3)
                    conn.close()
            if self.peer_ok:
                with self.peer() as peer:
                    res = peer.run({"kind": "random", "path": self.ds.name, "windows": [
                        (self.uutc(s), self.uutc(s + z), names) for s, z, names in wins]})
                    cold.setdefault("mef3io", []).append(median(res["cold"]) * 1e3)
                    warm.setdefault("mef3io", []).append(median(res["warm"]) * 1e3)
        self.add("random 10 s x 8 ch, cold, median of 50 (ms)", cold, "ms")
        self.add("random 10 s x 8 ch, warm, median of 50 (ms)", warm, "ms")

    def row_concurrent(self) -> None:
        third = (self.end_uutc - self.start_uutc) / 3e6
        plans = [self.windows(k * third, 20) for k in range(3)]
        cells: dict = {}
        for rep in range(self.args.repeats):
            res = run_clients([(_client_windows, ("direct", self.ds.path, None, self.channels,
                                                  plan, 0.3, False)) for plan in plans])
            cells.setdefault("direct", []).append(_wall(res))
            for system in self.codes:
                with self.server(system) as srv:
                    res = run_clients([(_client_windows, ("service", self.ds.name, srv.port,
                                                          self.channels, plan, 0.3, False))
                                       for plan in plans])
                    cells.setdefault(system, []).append(_wall(res))
            if self.peer_ok:
                with self.peer() as peer:
                    at = time.time() + 3.0
                    procs = [peer.run({"kind": "windows", "path": self.ds.name,
                                       "windows": plan, "work": 0.3, "start_at": at},
                                      background=True) for plan in plans]
                    out = [finish(p) for p in procs]
                    cells.setdefault("mef3io", []).append(max(o["t1"] for o in out)
                                                          - min(o["t0"] for o in out))
        self.add("3 processes x 20 windows + 0.3 s (s)", cells, "s")

    def row_memory(self) -> None:
        rss: dict = {}
        pss: dict = {}
        held: dict = {}
        for rep in range(self.args.repeats):
            for system in self.codes:
                with self.server(system, cache_mb=512) as srv:
                    conn = srv.connect()
                    service_pass(conn.root.open_file(self.ds.name), int(round(60 * self.fs)))
                    stats = dict(conn.root.get_stats())
                    time.sleep(0.5)   # let the last answers be freed
                    rss.setdefault(system, []).append(process_tree_rss(srv.proc.pid)[0] / MIB)
                    pss.setdefault(system, []).append(process_tree_pss(srv.proc.pid) / MIB)
                    conn.close()
                # samples the cache holds: 64 ch x blocks x 2560 (10 s blocks of 256 Hz)
                blocks = stats.get("cache_entries", 0)
                held.setdefault(system, []).append(blocks * 10 * self.fs / 1e6)
            if self.peer_ok:
                with self.peer() as peer:
                    wins = self.windows(0, int(np.ceil((self.end_uutc - self.start_uutc)
                                                       / 60e6)))
                    peer.run({"kind": "pass", "path": self.ds.name, "windows": wins})
                    time.sleep(0.5)
                    rss.setdefault("mef3io", []).append(process_tree_rss(peer.proc.pid)[0]
                                                        / MIB)
                    pss.setdefault("mef3io", []).append(process_tree_pss(peer.proc.pid) / MIB)
        self.add("server tree RSS after a full pass, 512 MiB budget (MiB)", rss, "MiB",
                 ratio_to="main")
        self.add("server tree PSS after a full pass, 512 MiB budget (MiB)", pss, "MiB",
                 ratio_to="main")
        self.add("samples cached after the pass (M; higher is better)", held, "M",
                 ratio_to="main")

    def row_envelope(self) -> None:
        cells: dict = {}
        for rep in range(self.args.repeats):
            for system in self.codes:
                with self.server(system) as srv:
                    conn = srv.connect()
                    svc = conn.root.open_file(self.ds.name)
                    try:
                        method = svc.get_envelope   # the overview helper's method
                    except AttributeError:
                        conn.close()
                        continue
                    bins = int(self.n // (10 * self.fs))   # one per 10 s MEF block, as
                    t = time.perf_counter()                 # the peer's answer
                    method(0, self.n, bins)
                    cells.setdefault(system, []).append((time.perf_counter() - t) * 1e3)
                    conn.close()
            if self.peer_ok:
                with self.peer() as peer:
                    res = peer.run({"kind": "envelope", "path": self.ds.name, "repeats": 1})
                    cells.setdefault("mef3io", []).append(res["seconds"][0] * 1e3)
        self.add("whole-recording envelope, 64 ch, one bin per MEF block (ms)", cells, "ms",
                 ratio_to="mef3io")

    def row_tools(self) -> None:
        """Three tools in turn on one server: each connects, opens, reads 20 min, closes."""
        plan = self.windows(0, 20)
        cells: dict = {}
        variants = [("mefstream", "mefstream", (), False),
                    ("mefstream, --keep-warm-seconds 0", "mefstream",
                     ("--keep-warm-seconds", "0"), False),
                    ("mefstream, file held open", "mefstream", ("--keep-warm-seconds", "0"),
                     True)]
        if "main" in self.codes:
            variants += [("main", "main", (), False), ("main, file held open", "main", (), True)]
        for rep in range(self.args.repeats):
            for label, system, extra, hold in variants:
                with self.server(system, extra=extra) as srv:
                    holder = srv.connect() if hold else None
                    if holder is not None:
                        holder.root.open_file(self.ds.name)
                    t0 = time.perf_counter()
                    for _ in range(3):
                        run_clients([(_client_windows, ("service", self.ds.name, srv.port,
                                                        self.channels, plan, 0.0, False))])
                    cells.setdefault(label, []).append(time.perf_counter() - t0)
                    if holder is not None:
                        holder.close()
        base = median(cells.get("mefstream, --keep-warm-seconds 0", [float("nan")]))
        for label, values in cells.items():
            m = median(values)
            self.rows.append([f"3 tools in turn, 20 x 60 s each: {label} (s)",
                              f"{m:.2f} ({min(values):.2f}-{max(values):.2f}) s = "
                              f"{m / base:.2f}x closed at once", "", "", ""])
            print("  " + self.rows[-1][0] + " | " + self.rows[-1][1], flush=True)
        self.raw["tools"] = cells


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.file_peers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=2.0,
                        help="recording length (64 ch x 256 Hz; written once, cached)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None, help=f"rows, of: {', '.join(ROWS)}")
    parser.add_argument("--main", default=None,
                        help="another checkout (e.g. main's code) measured alongside")
    parser.add_argument("--peer-python", default=PEER_PYTHON,
                        help="python of the venv that has mef3io-server 3.1.0")
    parser.add_argument("--prefetch", type=int, default=1,
                        help="--prefetch of every mefstream server (the default, 1)")
    parser.add_argument("--json", default=None, help="where the raw figures go")
    args = parser.parse_args(argv)
    args.only = [r.strip() for r in args.only.split(",")] if args.only else list(ROWS)
    bad = [r for r in args.only if r not in ROWS]
    if bad:
        parser.error(f"--only: unknown row(s) {bad}; choose from {', '.join(ROWS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks.file_peers" + (" " + shlex.join(sys.argv[1:])
                                                    if sys.argv[1:] else "")
    print(f"# file peers side by side\n\ncommand: `{command}`\n")
    for label, value in machine_info():
        print(f"- {label}: {value}")
    bench = Bench(args)
    print(f"- recording: {bench.ds.path}, {len(bench.channels)} ch x {bench.fs:g} Hz x "
          f"{bench.n / bench.fs / 3600:g} h; systems: {', '.join(bench.systems())}, direct\n",
          flush=True)
    loads = {}
    for row in args.only:
        print(f"[{row}]", flush=True)
        with ForeignCpu() as foreign:
            getattr(bench, f"row_{row}")()
        loads[row] = foreign.cores
        print(f"  (other processes used {foreign.cores:.2f} cores meanwhile)", flush=True)
    print(f"\n## Results ({args.repeats} repeat(s): median (min-max); ratios to the "
          f"direct read unless the row says otherwise)\n")
    print(markdown_table(["row", "mefstream", "main" if args.main else "(main: not run)",
                          "mef3io-server 3.1.0", "direct MefReader"], bench.rows))
    for note in bench.notes:
        print(f"note: {note}")
    busy = {k: round(v, 2) for k, v in loads.items() if v > 0.15}
    if busy:
        print(f"note: other processes used CPU (cores) during {busy}: the machine was "
              f"shared; compare only within a row")
    out = args.json or os.path.join(DATA_DIR, f"peers-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(out, "w") as fh:
        json.dump({"command": command, "machine": machine_info(), "rows": bench.rows,
                   "raw": bench.raw, "foreign_cores": loads, "notes": bench.notes}, fh,
                  indent=1, default=str)
    print(f"raw figures: {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
