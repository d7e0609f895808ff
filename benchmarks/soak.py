"""Soak test: many clients on three files at once, every sample checked against MefReader.

    python -m benchmarks.soak                          # 16 clients, 60 s
    python -m benchmarks.soak --clients 32 --duration 600 --cache-mb 64
    python -m benchmarks.soak --clients 64 --seconds 60          # --seconds: --duration

Run from the repository root (``python benchmarks/soak.py`` re-executes itself as a
module). Three sessions of different channel counts and sampling rates (one with a gap) are
written once under ``benchmarks/data/soak/``. One server subprocess (``start.py``, a small
cache so that blocks are evicted and read again) serves N client processes; each client
first reads every file whole with ``MefReader`` (its reference: the service's sample ``k``
is column ``k`` of that read), then until the time is up picks at random among: time
windows, stream segments, row segments, ``get_segment`` with a random segment size,
``StreamSegmentIterator`` runs, reads with a callback, new channel selections, and a
256-sample segment read twice (the second read, cached, is timed as ``small_cached``), on a
random file. Every sample received is compared with the reference (NaN equal to NaN).
Server memory (server process plus reader processes, RSS) is sampled all along.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    import os
    import sys
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(_root)
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.soak", *sys.argv[1:]])

import argparse
import multiprocessing
import os
import shlex
import statistics
import sys
import threading
import time
import traceback
import warnings
from collections import Counter, defaultdict

import numpy as np

from benchmarks.common import (
    DATA_DIR,
    Dataset,
    MemorySampler,
    ServerProcess,
    ensure_recording,
    machine_info,
    markdown_table,
    process_tree_uss,
    warmup_dataset,
)

MIB = 2**20
SOAK_ROOT = os.path.join(DATA_DIR, "soak")
OPS = ("time_window", "stream_segment", "row_segment", "get_segment", "iterator",
       "callback", "set_channels", "small_pair")
#: Latency rows of the report: every operation, and the second read of ``small_pair``.
REPORTED = OPS + ("small_cached",)
#: Samples of the small segment ``small_pair`` reads twice (the second read is cached).
SMALL = 256


def datasets() -> list[Dataset]:
    return [
        Dataset(root=SOAK_ROOT, name="soak_a_16ch_256Hz.mefd", n_channels=16, fs=256.0,
                minutes=10.0, seed=11),
        Dataset(root=SOAK_ROOT, name="soak_b_8ch_500Hz_gap.mefd", n_channels=8, fs=500.0,
                minutes=10.0, seed=12),
        Dataset(root=SOAK_ROOT, name="soak_c_24ch_1024Hz.mefd", n_channels=24, fs=1024.0,
                minutes=5.0, seed=13),
    ]


def ensure_soak_data(log=print) -> list[Dataset]:
    """Write the soak sessions (file b with a 30 s gap) unless cached."""
    out = datasets()
    for ds in out:
        if "gap" in ds.name:
            _ensure_with_gap(ds, log)
        else:
            ensure_recording(ds, log)
    ensure_recording(warmup_dataset(SOAK_ROOT), log=lambda *_: None)
    return out


def _ensure_with_gap(ds: Dataset, log) -> None:
    import json
    from dataclasses import asdict
    want = asdict(ds)
    want.pop("root")
    want["gap_seconds"] = [200.0, 230.0]
    if os.path.isdir(ds.path) and os.path.exists(ds.marker):
        with open(ds.marker) as fh:
            if json.load(fh).get("params") == want:
                return
    from software.mef3.demo import DEMO_START_UUTC, eeg_like
    from software.mef3.writer import write_session
    log(f"writing {ds.path} ...")
    os.makedirs(ds.root, exist_ok=True)
    data = eeg_like(ds.n_channels, ds.fs, ds.minutes * 60, seed=ds.seed)
    a, b = (int(round(s * ds.fs)) for s in want["gap_seconds"])
    data[:, a:b] = np.nan
    write_session(ds.path, dict(zip(ds.channel_names(), data)), ds.fs, DEMO_START_UUTC,
                  precision=ds.precision, overwrite=True)
    with open(ds.marker, "w") as fh:
        json.dump({"params": want}, fh)


# ---- client process -----------------------------------------------------------------------------

class _Client:
    """One soak client: its connection, references, and counters."""

    def __init__(self, index: int, port: int, paths: list[str], names: list[str],
                 plain: bool, seed: int) -> None:
        from mef_tools.io import MefReader

        from software import get_connection
        self.index = index
        self.rng = np.random.default_rng(seed)
        self.plain = plain
        if plain:  # a stock RPyC client, as CREPE scripts connect
            import rpyc

            import settings
            self.conn = rpyc.connect("127.0.0.1", port, config=dict(settings.RPYC_CONFIG))
        else:
            self.conn = get_connection(port, host="127.0.0.1", timeout=30)
        self.files = []
        for path, name in zip(paths, names):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reader = MefReader(path)
                chans = list(reader.channels)
                t0 = int(min(reader.get_property("start_time", c) for c in chans))
                t1 = int(max(reader.get_property("end_time", c) for c in chans))
                ref = np.array(reader.get_data(chans, t0, t1))
                reader.close()
            svc = self.conn.root.open_file(name)
            info = dict(svc.get_info())
            self.files.append({"name": name, "svc": svc, "ref": ref, "channels": chans,
                               "active": list(chans), "start": t0, "fs": float(info["fs"]),
                               "n": int(info["n_samples"]), "seg_s": float(
                                   info["segment_seconds"])})
            if int(info["n_samples"]) != ref.shape[1]:
                raise AssertionError(f"{name}: service n_samples {info['n_samples']} != "
                                     f"reference {ref.shape[1]}")
        self.ops = Counter()
        self.errors = Counter()
        self.samples = 0
        self.latency = defaultdict(list)
        self.messages: list[str] = []

    # ---- checks ---------------------------------------------------------------------

    def _rows(self, f) -> list[int]:
        return [f["channels"].index(c) for c in f["active"]]

    def _check(self, op: str, f, got, start: int, rows=None) -> None:
        from software import decode_segment
        data = decode_segment(got) if not isinstance(got, np.ndarray) else got
        rows = self._rows(f) if rows is None else rows
        want = f["ref"][rows, start:start + (data.shape[-1] if data is not False else 0)]
        if data is False:
            self._error(op, "mismatch", f"{f['name']}: no data at {start}")
            return
        if data.ndim == 1:
            want = want[0]
        if data.shape != want.shape or not np.array_equal(data, want, equal_nan=True):
            bad = "shape" if data.shape != want.shape else \
                f"{int(np.sum(~((data == want) | (np.isnan(data) & np.isnan(want)))))} values"
            self._error(op, "mismatch", f"{f['name']} start={start} shape={data.shape} "
                                        f"want {want.shape}: {bad} differ")
            return
        self.samples += data.size

    def _error(self, op: str, kind: str, message: str) -> None:
        self.errors[(op, kind)] += 1
        if len(self.messages) < 20:
            self.messages.append(f"client {self.index} {op} {kind}: {message}")

    # ---- operations -----------------------------------------------------------------

    def _span(self, f, max_seconds: float = 90.0) -> tuple[int, int]:
        n = f["n"]
        length = int(self.rng.integers(1, int(max_seconds * f["fs"])))
        length = min(length, n)
        start = int(self.rng.integers(0, n - length + 1))
        return start, length

    def op_time_window(self, f) -> None:
        start, length = self._span(f)
        t0 = f["start"] + int(round(start * 1e6 / f["fs"]))
        t1 = t0 + int(round(length * 1e6 / f["fs"]))
        got = f["svc"].get_time_segment(t0, t1)
        self._check("time_window", f, got, start)

    def op_stream_segment(self, f) -> None:
        start, length = self._span(f)
        self._check("stream_segment", f, f["svc"].get_stream_segment(length, start), start)

    def op_row_segment(self, f) -> None:
        start, length = self._span(f)
        row = int(self.rng.integers(0, len(f["active"])))
        use_name = bool(self.rng.integers(0, 2))
        key = f["active"][row] if use_name else row
        got = f["svc"].get_row_segment(key, length, start)
        self._check("row_segment", f, got, start, rows=[self._rows(f)[row]])

    def op_get_segment(self, f) -> None:
        seconds = float(self.rng.choice([0.5, 2.0, 10.0, 37.5, 60.0]))
        n_seg = int(f["svc"].set_segment_size(seconds))
        size = max(1, int(round(seconds * f["fs"])))
        index = int(self.rng.integers(0, n_seg))
        self._check("get_segment", f, f["svc"].get_segment(index), index * size)

    def op_iterator(self, f) -> None:
        from software import StreamSegmentIterator
        chunk = int(self.rng.integers(1, int(20 * f["fs"])))
        start = int(self.rng.integers(0, f["n"]))
        it = StreamSegmentIterator(chunk, start=start)
        for _ in range(int(self.rng.integers(1, 8))):
            pos = it.position
            data = it.next_or_wait(f["svc"], timeout=60)
            if data is False:
                if pos < f["n"]:
                    self._error("iterator", "timeout", f"{f['name']}: no data at {pos}")
                break
            self._check("iterator", f, data, pos)

    def op_callback(self, f) -> None:
        start, length = self._span(f, 30.0)
        arrived = threading.Event()
        box = []

        def deliver(value):
            box.append(value)
            arrived.set()

        first = f["svc"].get_stream_segment(length, start, deliver)
        if first is not False:
            self._check("callback", f, first, start)
            return
        deadline = time.monotonic() + 60
        while not arrived.is_set() and time.monotonic() < deadline:
            if self.plain:
                self.conn.serve(0.05)
            else:
                arrived.wait(0.05)
        if not arrived.is_set():
            self._error("callback", "timeout", f"{f['name']}: callback for {start} never came")
            return
        self._check("callback", f, box[0], start)

    def op_set_channels(self, f) -> None:
        chans = f["channels"]
        k = int(self.rng.integers(1, len(chans) + 1))
        pick = [chans[i] for i in self.rng.permutation(len(chans))[:k]]
        got = list(f["svc"].set_active_channels(pick))
        if got != pick:
            self._error("set_channels", "mismatch", f"asked {pick}, got {got}")
        f["active"] = got

    def op_small_pair(self, f) -> None:
        """The same 256 samples of every active channel twice: the second is cached."""
        start = int(self.rng.integers(0, f["n"] - SMALL))
        get = f["svc"].get_stream_segment
        self._check("small_pair", f, get(SMALL, start), start)
        from software import decode_segment
        t = time.perf_counter()
        got = get(SMALL, start)
        data = got if isinstance(got, np.ndarray) else decode_segment(got)
        self.latency["small_cached"].append(time.perf_counter() - t)
        self._check("small_pair", f, data, start)

    def run(self, until: float) -> None:
        weights = np.array([3, 3, 2, 2, 1, 2, 1, 2], dtype=float)
        weights /= weights.sum()
        while time.monotonic() < until:
            op = OPS[int(self.rng.choice(len(OPS), p=weights))]
            f = self.files[int(self.rng.integers(0, len(self.files)))]
            t = time.perf_counter()
            try:
                getattr(self, f"op_{op}")(f)
            except Exception as exc:  # counted, reported, and the client goes on
                self._error(op, f"exception {type(exc).__name__}",
                            "".join(traceback.format_exception_only(exc)).strip()[:300])
            self.latency[op].append(time.perf_counter() - t)
            self.ops[op] += 1

    def report(self) -> dict:
        return {"ops": dict(self.ops), "errors": {f"{k[0]}|{k[1]}": v
                                                  for k, v in self.errors.items()},
                "samples": self.samples, "latency": {k: v for k, v in self.latency.items()},
                "messages": self.messages}


def _client_main(index, port, paths, names, plain, seed, ready, go, until_box, results):
    try:
        client = _Client(index, port, paths, names, plain, seed)
    except BaseException:
        results.put((index, None, traceback.format_exc()))
        return
    ready.put(index)
    go.wait()
    try:
        client.run(until_box.value)
        out = client.report()
        try:
            client.conn.close()
        except Exception:
            pass
        results.put((index, out, None))
    except BaseException:
        results.put((index, None, traceback.format_exc()))


# ---- main -------------------------------------------------------------------------------------

def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds: the server and clients are stopped


def main(argv=None) -> int:
    import signal
    signal.signal(signal.SIGTERM, _on_sigterm)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", "--seconds", type=float, default=60.0,
                        help="seconds of load")
    parser.add_argument("--cache-mb", type=float, default=64.0,
                        help="server cache budget (small: blocks are evicted and re-read)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plain-every", type=int, default=4,
                        help="every N-th client connects with plain rpyc.connect (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    command = "python -m benchmarks.soak" + (" " + shlex.join(sys.argv[1:])
                                              if sys.argv[1:] else "")
    print(f"# mefstream soak\n\ncommand: `{command}`\n")
    for label, value in machine_info():
        print(f"- {label}: {value}")
    sets = ensure_soak_data()
    print("\nfiles: " + ", ".join(f"{d.name} ({d.n_channels} ch x {d.fs:g} Hz x "
                                  f"{d.minutes:g} min)" for d in sets), flush=True)

    ctx = multiprocessing.get_context("spawn")
    with ServerProcess(SOAK_ROOT, prefetch=3, cache_mb=args.cache_mb,
                       workers=args.workers) as srv:
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        until_box = ctx.Value("d", 0.0)
        procs = []
        for i in range(args.clients):
            plain = args.plain_every > 0 and i % args.plain_every == args.plain_every - 1
            procs.append(ctx.Process(
                target=_client_main, daemon=True,
                args=(i, srv.port, [d.path for d in sets], [d.name for d in sets], plain,
                      args.seed * 1000 + i, ready, go, until_box, results)))
        t_setup = time.perf_counter()
        try:
            reports, n_ready, failed_setup, elapsed, sampler, rss_before, uss_before, \
                rss_after, uss_after = _drive(srv, procs, ready, results, go, until_box, args,
                                              t_setup)
        finally:
            for p in procs:
                if p.is_alive():
                    p.join(timeout=5)
                if p.is_alive():
                    p.kill()
        server_alive = srv.proc.poll() is None
    return _report(args, reports, n_ready, failed_setup, elapsed, sampler, rss_before,
                   uss_before, rss_after, uss_after, server_alive)


def _drive(srv, procs, ready, results, go, until_box, args, t_setup):
    """Start the clients, let them run, collect their reports."""
    for p in procs:
        p.start()
    failed_setup = []
    n_ready = 0
    while n_ready + len(failed_setup) < len(procs):
        try:
            ready.get(timeout=0.5)
            n_ready += 1
        except Exception:
            pass
        while not results.empty():
            failed_setup.append(results.get())
        if time.perf_counter() - t_setup > 600:
            break
    print(f"{n_ready} clients ready in {time.perf_counter() - t_setup:.0f} s (each read "
          f"its references); {len(failed_setup)} failed to start", flush=True)
    rss_before = srv.rss()[0]
    uss_before = process_tree_uss(srv.proc.pid)
    with MemorySampler(srv.proc.pid, interval=0.1) as sampler:
        until_box.value = time.monotonic() + args.duration
        t0 = time.perf_counter()
        go.set()
        reports = {}
        deadline = time.monotonic() + args.duration + 300
        while len(reports) < n_ready and time.monotonic() < deadline:
            try:
                index, out, error = results.get(timeout=1)
            except Exception:
                continue
            reports[index] = (out, error)
        elapsed = time.perf_counter() - t0
    time.sleep(1.0)
    rss_after = srv.rss()[0]
    uss_after = process_tree_uss(srv.proc.pid)
    for p in procs:
        p.join(timeout=10)
    return (reports, n_ready, failed_setup, elapsed, sampler, rss_before, uss_before,
            rss_after, uss_after)


def _report(args, reports, n_ready, failed_setup, elapsed, sampler, rss_before, uss_before,
            rss_after, uss_after, server_alive) -> int:
    """Print the tables; return the exit status (0: no error)."""
    ops, errors, latency, messages = Counter(), Counter(), defaultdict(list), []
    samples = 0
    crashed = [e for _, (o, e) in reports.items() if e] + [e for _, _, e in failed_setup]
    for out, _ in reports.values():
        if out is None:
            continue
        ops.update(out["ops"])
        errors.update(out["errors"])
        samples += out["samples"]
        for k, v in out["latency"].items():
            latency[k].extend(v)
        messages.extend(out["messages"])
    rows = []
    for op in REPORTED:
        lat = sorted(latency.get(op, []))
        errs = {k.split("|", 1)[1]: v for k, v in errors.items() if k.startswith(op + "|")}
        count = len(lat) if op == "small_cached" else ops.get(op, 0)
        rows.append([op, str(count), str(sum(errs.values())),
                     ", ".join(f"{k}: {v}" for k, v in errs.items()) or "—",
                     f"{statistics.median(lat) * 1e3:.1f}" if lat else "—",
                     f"{lat[int(0.99 * (len(lat) - 1))] * 1e3:.1f}" if lat else "—"])
    print(f"\n## Soak: {n_ready} clients, {elapsed:.0f} s, 3 files, cache {args.cache_mb:g} MiB, "
          f"{args.workers} reader processes\n")
    print(markdown_table(["operation", "count", "errors", "kinds", "median ms", "p99 ms"],
                         rows))
    total_err = sum(errors.values())
    summary = [
        ["operations", f"{sum(ops.values())} ({sum(ops.values()) / elapsed:.0f}/s)"],
        ["samples verified", f"{samples / 1e6:.1f} M ({samples / elapsed / 1e6:.2f} M/s)"],
        ["errors (mismatch, exception, timeout)", str(total_err)],
        ["client processes crashed or failed to start", str(len(crashed))],
        ["server alive at the end", "yes" if server_alive else "**no**"],
        ["server RSS (+ readers) before / peak / after",
         f"{rss_before / MIB:.0f} / {sampler.peak_total / MIB:.0f} / {rss_after / MIB:.0f} MiB "
         f"(peaks: server process {sampler.peak_own / MIB:.0f}, reader processes "
         f"{sampler.peak_children / MIB:.0f})"],
        ["server USS (+ readers) before / after", f"{uss_before / MIB:.0f} / "
                                                  f"{uss_after / MIB:.0f} MiB"],
        ["cache budget", f"{args.cache_mb:g} MiB"],
    ]
    print()
    print(markdown_table(["", "value"], summary))
    for msg in messages[:20]:
        print(f"- {msg}")
    for err in crashed[:5]:
        print(f"client failure:\n{err}")
    ok = total_err == 0 and not crashed and server_alive and n_ready == args.clients
    print(f"\nresult: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
