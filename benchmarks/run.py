"""mefstream benchmarks: the service side by side with direct ``MefReader`` reads.

    python -m benchmarks.run                 # full run (64 ch x 256 Hz x 2 h), ~10 min
    python -m benchmarks.run --quick         # smoke run (16 ch x 30 min), ~2 min
    python -m benchmarks.run --only cold_pass --repeats 5

Run from the repository root. ``python benchmarks/run.py`` works too (it re-executes
itself as ``python -m benchmarks.run``). The recording is written once and cached under
``benchmarks/data/`` (git-ignored). Every row starts its own server subprocess
(``python start.py ...``) so that its cache is cold and its memory is measured alone.
Rows: sequential, concurrent, cold_pass, cache_hit, callback, four_clients, memory;
see ``benchmarks/README.md`` for what each one measures and how.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    # Run as a file: re-run as a module from the repository root, so that ``software``
    # and ``benchmarks`` import as packages (and spawned processes find them too).
    import os
    import sys
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(_root)
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.run", *sys.argv[1:]])

import argparse
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from benchmarks.common import (
    DATA_DIR,
    Dataset,
    ForeignCpu,
    MemorySampler,
    ServerProcess,
    as_2d,
    ensure_recording,
    machine_info,
    markdown_table,
    median,
    process_tree_uss,
    session_info,
    spread,
    warmup_dataset,
)

ROWS = ("sequential", "concurrent", "cold_pass", "cache_hit", "callback", "four_clients",
        "memory")

MIB = 2**20


# ---- configuration ----------------------------------------------------------------------------

@dataclass
class Config:
    quick: bool
    repeats: int
    work: float = 0.3             # seconds of client work after each window
    busy: bool = False            # burn CPU for the work instead of sleeping
    window_s: float = 60.0        # window / chunk length
    seq_windows: int = 20         # sequential row
    conc_windows: int = 10        # concurrent row, per client
    conc_clients: int = 3
    stream_clients: int = 4
    cache_budget_mb: float = 256.0
    hit_sizes_mib: tuple = (1, 8, 40)
    small_samples: int = 256
    callback_trials: int = 30
    memory_repeats: int = 1       # memory varies little; a full pass is long
    prefetch: int = 3             # the server's --prefetch for every row but "prefetch 0"
    code: str | None = None       # checkout whose start.py the servers run (default: this)

    @property
    def dataset(self) -> Dataset:
        if self.quick:
            return Dataset(root=os.path.join(DATA_DIR, "quick"),
                           name="eeg_16ch_256Hz_30min.mefd", n_channels=16, minutes=30.0)
        return Dataset(root=os.path.join(DATA_DIR, "full"), name="eeg_64ch_256Hz_2h.mefd",
                       n_channels=64, minutes=120.0)


@dataclass
class Row:
    name: str
    measured: str
    reference: str
    ratio: str
    target: str
    met: str
    raw: dict = field(default_factory=dict)


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn()``."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def work(seconds: float, busy: bool) -> None:
    """The client's simulated analysis work."""
    if seconds <= 0:
        return
    if busy:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    else:
        time.sleep(seconds)  # simulated work (the benchmark's client), not synchronisation


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


class Bench:
    """One benchmark run: the recording, its metadata, and the rows measured so far."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ds = cfg.dataset
        info = session_info(self.ds.path)
        self.channels: list[str] = info["channels"]
        self.start_uutc: int = info["start_uutc"]
        self.end_uutc: int = info["end_uutc"]
        self.fs: float = info["fs"]
        self.n_samples: int = info["n_samples"]
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.loads: dict[str, float] = {}

    # ---- helpers ----------------------------------------------------------------------

    def window(self, minute: float, seconds: float | None = None) -> tuple[int, int]:
        seconds = self.cfg.window_s if seconds is None else seconds
        a = self.start_uutc + int(round(minute * 60e6))
        return a, min(a + int(round(seconds * 1e6)), self.end_uutc)

    def server(self, **kw) -> ServerProcess:
        return ServerProcess(self.ds.root, code=self.cfg.code, **kw)

    def direct_reader(self):
        from mef_tools.io import MefReader
        warnings.simplefilter("ignore")
        return MefReader(self.ds.path)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(markdown_table(["row", "measured", "reference (direct)", "ratio", "target",
                              "met?"],
                             [[row.name, row.measured, row.reference, row.ratio, row.target,
                               row.met]]).splitlines()[-1], flush=True)

    def check_equal(self, got: np.ndarray, reader, a: int, b: int, what: str) -> None:
        want = as_2d(reader.get_data(self.channels, a, b))
        if got.shape != want.shape or not np.array_equal(got, want, equal_nan=True):
            msg = f"MISMATCH in {what}: service {got.shape} != direct {want.shape} or values"
            print(msg, flush=True)
            self.notes.append(msg)

    # ---- rows ---------------------------------------------------------------------------

    def row_sequential(self) -> None:
        """20 sequential 60 s windows, 0.3 s work after each: direct vs service (prefetch N and 0)."""
        cfg = self.cfg
        from software import decode_segment
        windows = [self.window(i * cfg.window_s / 60) for i in range(cfg.seq_windows)]
        depths = (cfg.prefetch, 0) if cfg.prefetch else (0,)
        direct_tot, cold = [], []
        svc_tot = {d: [] for d in depths}
        svc_first = {d: [] for d in depths}
        svc_reads = {d: [] for d in depths}
        for rep in range(cfg.repeats):
            reader = self.direct_reader()
            reads = []
            t0 = time.perf_counter()
            for a, b in windows:
                t = time.perf_counter()
                as_2d(reader.get_data(self.channels, a, b))
                reads.append(time.perf_counter() - t)
                work(cfg.work, cfg.busy)
            direct_tot.append(time.perf_counter() - t0)
            cold.append(statistics.median(reads))
            for prefetch in depths:
                with self.server(prefetch=prefetch) as srv:
                    conn = srv.connect()
                    get = conn.root.open_file(self.ds.name).get_time_segment
                    reads = []
                    t0 = time.perf_counter()
                    for a, b in windows:
                        t = time.perf_counter()
                        data = decode_segment(get(a, b))
                        reads.append(time.perf_counter() - t)
                        work(cfg.work, cfg.busy)
                    svc_tot[prefetch].append(time.perf_counter() - t0)
                    svc_first[prefetch].append(reads[0])
                    svc_reads[prefetch].append([round(r * 1e3, 1) for r in reads])
                    if rep == 0:
                        self.check_equal(data, reader, *windows[-1], "sequential")
                    conn.close()
            reader.close()
            print(f"  sequential repeat {rep + 1}: direct {direct_tot[-1]:.2f} s, "
                  + ", ".join(f"prefetch {d} {svc_tot[d][-1]:.2f} s" for d in depths)
                  + f", cold window {cold[-1] * 1e3:.0f} ms", flush=True)
        n, w = cfg.seq_windows, cfg.work
        bounds = [n * w + c for c in cold]
        bound = median(bounds)
        for prefetch in depths:
            tot = median(svc_tot[prefetch])
            ratios = [t / b for t, b in zip(svc_tot[prefetch], bounds)]
            ratio = median(ratios)
            ok = ratio <= 1.03 if prefetch else None
            self.add(Row(
                f"{n} x {cfg.window_s:g} s windows + {w:g} s work, prefetch {prefetch}",
                f"{spread(svc_tot[prefetch], '.2f')} s (first window "
                f"{median(svc_first[prefetch]) * 1e3:.0f} ms)",
                f"direct {spread(direct_tot, '.2f')} s; bound {n} x {w:g} s + cold window "
                f"{median(cold) * 1e3:.0f} ms = {bound:.2f} s",
                f"{ratio:.3f}x bound, {tot / median(direct_tot):.2f}x direct",
                "<= 1.03x bound" if prefetch else "(info)", verdict(ok),
                {"service_s": svc_tot[prefetch], "direct_s": direct_tot, "cold_s": cold,
                 "ratios": ratios, "window_ms": svc_reads[prefetch]}))

    def row_concurrent(self) -> None:
        """3 clients on different windows at once vs 3 direct readers in 3 processes."""
        cfg = self.cfg
        span = self.ds.minutes / cfg.conc_clients
        plans = []
        for k in range(cfg.conc_clients):
            first = k * span
            plans.append([self.window(first + i * cfg.window_s / 60)
                          for i in range(cfg.conc_windows)])
        direct, service = [], []
        for rep in range(cfg.repeats):
            res = run_clients([(_client_windows, ("direct", self.ds.path, None, self.channels,
                                                  plan, cfg.work, cfg.busy))
                               for plan in plans])
            direct.append(_wall(res))
            with self.server(prefetch=cfg.prefetch) as srv:
                res = run_clients([(_client_windows, ("service", self.ds.name, srv.port,
                                                      self.channels, plan, cfg.work,
                                                      cfg.busy))
                                   for plan in plans])
                service.append(_wall(res))
            print(f"  concurrent repeat {rep + 1}: direct {direct[-1]:.2f} s, service "
                  f"{service[-1]:.2f} s", flush=True)
        ratios = [s / d for s, d in zip(service, direct)]
        ratio = median(ratios)
        self.add(Row(f"{cfg.conc_clients} concurrent clients x {cfg.conc_windows} windows "
                     f"+ {cfg.work:g} s work",
                     f"{spread(service, '.2f')} s", f"{spread(direct, '.2f')} s "
                     f"({cfg.conc_clients} direct processes)",
                     f"{ratio:.2f}x", "<= 0.85x", verdict(ratio <= 0.85),
                     {"service_s": service, "direct_s": direct, "ratios": ratios}))

    def row_cold_pass(self) -> None:
        """Whole file, no work: service (StreamSegmentIterator, cold cache) vs direct loop."""
        cfg = self.cfg
        direct, service = [], []
        for rep in range(cfg.repeats):
            n, secs = direct_pass(self.ds.path, self.channels, self.start_uutc, self.end_uutc,
                                  cfg.window_s)
            direct.append(n / secs)
            with self.server(prefetch=cfg.prefetch) as srv:
                conn = srv.connect()
                svc = conn.root.open_file(self.ds.name)
                m, secs = service_pass(svc, int(round(cfg.window_s * self.fs)))
                conn.close()
            service.append(m / secs)
            if m != n:
                note = f"cold pass: service returned {m} samples, direct {n}"
                print("  WARNING " + note, flush=True)
                self.notes.append(note)
            print(f"  cold pass repeat {rep + 1}: direct {direct[-1] / 1e6:.2f} M samples/s, "
                  f"service {service[-1] / 1e6:.2f} M samples/s", flush=True)
        ratios = [s / d for s, d in zip(service, direct)]
        ratio = median(ratios)
        self.add(Row("cold pass, whole file, no work (samples/s)",
                     f"{spread([s / 1e6 for s in service], '.2f')} M/s",
                     f"{spread([d / 1e6 for d in direct], '.2f')} M/s (1 process)",
                     f"{ratio:.2f}x", ">= 1.6x", verdict(ratio >= 1.6),
                     {"service": service, "direct": direct, "ratios": ratios}))

    def row_cache_hit(self) -> None:
        """Cached segments of 1, 8, 40 MiB (MB/s) and a small segment's round trip (ms)."""
        cfg = self.cfg
        from software import decode_segment
        nch = len(self.channels)
        sizes = [(mib, int(mib * MIB // (8 * nch))) for mib in cfg.hit_sizes_mib]
        rates = {mib: [] for mib, _ in sizes}
        direct_rates = {mib: [] for mib, _ in sizes}
        small, small_direct, small_lookup, socket_rate, pings = [], [], [], [], []
        reader = self.direct_reader()
        with self.server(prefetch=cfg.prefetch) as srv:  # the default configuration
            for rep in range(cfg.repeats):
                conn = srv.connect()
                svc = conn.root.open_file(self.ds.name)
                # bound once: every attribute of a proxy is a round trip of its own
                get = svc.get_stream_segment
                minute = 0.0
                for mib, count in sizes:
                    start = int(round(minute * 60 * self.fs))
                    nbytes = nch * count * 8
                    decode_segment(get(count, start))  # fill the cache
                    wait_idle(srv)  # ... and let the prefetch of the next segments finish
                    secs = median_seconds(lambda: decode_segment(get(count, start)), 7)
                    data = decode_segment(get(count, start))
                    assert data.shape == (nch, count)
                    rates[mib].append(nbytes / secs / 1e6)
                    a = self.start_uutc + int(round(start / self.fs * 1e6))
                    b = a + int(round(count / self.fs * 1e6))
                    secs = median_seconds(lambda: as_2d(reader.get_data(self.channels, a, b)),
                                          3)
                    direct_rates[mib].append(nbytes / secs / 1e6)
                    if rep == 0:
                        self.check_equal(data, reader, a, b, f"cache hit {mib} MiB")
                    minute += count / self.fs / 60 + 1
                start = int(round(minute * 60 * self.fs))
                n = cfg.small_samples
                decode_segment(get(n, start))
                wait_idle(srv)
                for _ in range(50):  # warm the code paths
                    decode_segment(get(n, start))
                small.append(median_seconds(lambda: decode_segment(get(n, start)), 500) * 1e3)
                small_lookup.append(median_seconds(  # + the attribute lookup, a round trip
                    lambda: decode_segment(svc.get_stream_segment(n, start)), 500) * 1e3)
                pings.append(median_seconds(conn.ping, 500) * 1e3)  # RPyC's own floor
                with srv.connect(shared_memory=False) as plain:   # the socket path
                    sget = plain.root.open_file(self.ds.name).get_stream_segment
                    count = sizes[1][1] if len(sizes) > 1 else sizes[0][1]
                    decode_segment(sget(count, 0))
                    wait_idle(srv)
                    secs = median_seconds(lambda: decode_segment(sget(count, 0)), 7)
                    socket_rate.append(nch * count * 8 / secs / 1e6)
                a = self.start_uutc + int(round(start / self.fs * 1e6))
                b = a + int(round(n / self.fs * 1e6))
                small_direct.append(median_seconds(
                    lambda: as_2d(reader.get_data(self.channels, a, b)), 30) * 1e3)
                conn.close()
                print(f"  cache hit repeat {rep + 1}: " + ", ".join(
                    f"{mib} MiB {rates[mib][-1]:.0f} MB/s" for mib, _ in sizes)
                    + f", small {small[-1]:.3f} ms", flush=True)
        reader.close()
        for mib, count in sizes:
            rate, drate = median(rates[mib]), median(direct_rates[mib])
            ok = rate >= 1000 if mib == 8 else None
            self.add(Row(f"cache hit {mib} MiB ({nch} ch x {count} samples)",
                         f"{spread(rates[mib], '.0f')} MB/s",
                         f"{drate:.0f} MB/s (MefReader decode)", f"{rate / drate:.1f}x",
                         ">= 1000 MB/s" if mib == 8 else "(info)", verdict(ok),
                         {"service_MBps": rates[mib], "direct_MBps": direct_rates[mib]}))
        mib = cfg.hit_sizes_mib[1] if len(cfg.hit_sizes_mib) > 1 else cfg.hit_sizes_mib[0]
        self.add(Row(f"cache hit {mib} MiB over the socket (shared_memory=False)",
                     f"{spread(socket_rate, '.0f')} MB/s", "the same, shared memory above",
                     "—", "(info)", verdict(None), {"service_MBps": socket_rate}))
        ms = median(small)
        self.add(Row(f"small segment round trip ({nch} ch x {cfg.small_samples}, cached)",
                     f"{spread(small, '.3f')} ms", f"{median(small_direct):.2f} ms "
                     f"(MefReader read)", f"{median(small_direct) / ms:.0f}x faster",
                     "<= 0.3 ms", verdict(ms <= 0.3),
                     {"service_ms": small, "direct_ms": small_direct}))
        self.add(Row("RPyC round trip that does nothing (conn.ping(), same connection)",
                     f"{spread(pings, '.3f')} ms", "the floor of any call on this machine",
                     f"small segment {ms / median(pings):.1f}x", "(info)", verdict(None),
                     {"ping_ms": pings}))
        self.add(Row("small segment, method looked up per call (svc.get_stream_segment(...))",
                     f"{spread(small_lookup, '.3f')} ms", "two round trips: attribute, call",
                     "—", "(info)", verdict(None), {"service_ms": small_lookup}))

    def row_callback(self) -> None:
        """Callback latency: server data ready -> client callback running."""
        cfg = self.cfg
        from software import decode_segment
        nch = len(self.channels)
        block = int(round(10 * self.fs))   # one cache block (default --block-seconds 10)
        n_blocks = self.n_samples // block
        stamped_small, stamped_big, cb_total, blk_total = [], [], [], []
        available = True
        for rep in range(cfg.repeats):
            with self.server(prefetch=0, module="benchmarks.stamped_server") as srv:
                # the stamp wraps the value, which a shared-memory answer cannot be: socket
                conn = srv.connect(shared_memory=False)
                # the raw view: its callbacks receive the stamped wire value as it is
                svc = conn.root.open_file(self.ds.name).proxy
                got: list = []
                arrived = threading.Event()

                def callback(value):
                    now = time.monotonic()
                    got.append((now, value))
                    arrived.set()

                def with_callback(count, start):
                    got.clear()
                    arrived.clear()
                    t_call = time.monotonic()
                    first = svc.get_stream_segment(count, start, callback)
                    if first is not False:
                        return None  # already cached: no callback; not a sample
                    if not arrived.wait(60):
                        raise RuntimeError("callback never arrived")
                    now, value = got[0]
                    if isinstance(value, tuple) and len(value) == 3 and value[0] == "stamped":
                        decode_segment(value[2])
                        return now - value[1], now - t_call
                    decode_segment(value)
                    return None, now - t_call

                # distinct uncached blocks, spread over the file, alternating the two paths
                order = np.random.default_rng(rep).permutation(n_blocks)
                picks = iter(int(b) for b in order)
                lat, big, cbt, blt = [], [], [], []
                for trial in range(cfg.callback_trials):
                    res = with_callback(cfg.small_samples, next(picks) * block)
                    if res is not None:
                        if res[0] is None:
                            available = False
                        else:
                            lat.append(res[0])
                        cbt.append(res[1])
                    time.sleep(0.02)  # let the server settle: trials must not overlap
                    start = next(picks) * block
                    t = time.monotonic()
                    decode_segment(svc.get_stream_segment(cfg.small_samples, start))
                    blt.append(time.monotonic() - t)
                    time.sleep(0.02)
                for trial in range(max(5, cfg.callback_trials // 3)):
                    start = next(picks) * block
                    count = min(int(round(cfg.window_s * self.fs)), self.n_samples - start)
                    res = with_callback(count, start)
                    if res is not None and res[0] is not None:
                        big.append(res[0])
                    time.sleep(0.02)
                conn.close()
            stamped_small.append(median(lat) * 1e3 if lat else None)
            stamped_big.append(median(big) * 1e3 if big else None)
            cb_total.append(median(cbt) * 1e3)
            blk_total.append(median(blt) * 1e3)
            print(f"  callback repeat {rep + 1}: stamped small "
                  f"{stamped_small[-1] if lat else float('nan'):.2f} ms, stamped 60 s window "
                  f"{stamped_big[-1] if big else float('nan'):.2f} ms; uncached call->callback "
                  f"{cb_total[-1]:.1f} ms vs blocking call {blk_total[-1]:.1f} ms", flush=True)
        diff = [c - b for c, b in zip(cb_total, blk_total)]
        if available:
            ms = median(stamped_small)
            self.add(Row(f"callback latency, {nch} ch x {cfg.small_samples} (stamped)",
                         f"{spread(stamped_small, '.2f')} ms",
                         f"uncached call->callback {median(cb_total):.1f} ms vs blocking call "
                         f"{median(blk_total):.1f} ms (diff {median(diff):+.2f} ms)",
                         "—", "<= 2 ms", verdict(ms <= 2.0),
                         {"stamped_ms": stamped_small, "callback_total_ms": cb_total,
                          "blocking_total_ms": blk_total}))
            self.add(Row(f"callback latency, {nch} ch x {cfg.window_s:g} s "
                         f"({nch * int(cfg.window_s * self.fs) * 8 / MIB:.1f} MiB, stamped)",
                         f"{spread(stamped_big, '.2f')} ms", "—", "—", "(info)", "—",
                         {"stamped_ms": stamped_big}))
        else:
            ms = median(diff)
            self.add(Row(f"callback latency, {nch} ch x {cfg.small_samples} "
                         f"(callback - blocking)", f"{spread(diff, '.2f')} ms",
                         f"blocking call {median(blk_total):.1f} ms", "—", "<= 2 ms",
                         verdict(ms <= 2.0), {"diff_ms": diff}))
            self.notes.append("callback time stamps unavailable (software.stream.delivery changed); "
                              "latency estimated as callback total minus blocking total")

    def row_four_clients(self) -> None:
        """4 clients streaming the same file at once vs 1 client: aggregate samples/s."""
        cfg = self.cfg
        chunk = int(round(cfg.window_s * self.fs))
        one, many = [], []
        for rep in range(cfg.repeats):
            with self.server(prefetch=cfg.prefetch) as srv:
                res = run_clients([(_client_stream, (self.ds.name, srv.port, chunk))])
                one.append(sum(r[2] for r in res) / _wall(res))
            with self.server(prefetch=cfg.prefetch) as srv:
                res = run_clients([(_client_stream, (self.ds.name, srv.port, chunk))
                                   for _ in range(cfg.stream_clients)])
                many.append(sum(r[2] for r in res) / _wall(res))
                lengths = {r[2] for r in res}
                if len(lengths) != 1:
                    self.notes.append(f"four clients: unequal sample counts {lengths}")
            print(f"  {cfg.stream_clients} clients repeat {rep + 1}: 1 client "
                  f"{one[-1] / 1e6:.2f} M samples/s, {cfg.stream_clients} clients "
                  f"{many[-1] / 1e6:.2f} M samples/s aggregate", flush=True)
        ratios = [m / o for m, o in zip(many, one)]
        ratio = median(ratios)
        self.add(Row(f"{cfg.stream_clients} clients streaming the same file (aggregate)",
                     f"{spread([m / 1e6 for m in many], '.2f')} M/s",
                     f"1 client {spread([o / 1e6 for o in one], '.2f')} M/s", f"{ratio:.2f}x",
                     ">= 3x", verdict(ratio >= 3.0),
                     {"many": many, "one": one, "ratios": ratios}))

    def row_memory(self) -> None:
        """Peak RSS of server + reader processes over a full pass with a 256 MiB cache."""
        cfg = self.cfg
        budget = cfg.cache_budget_mb
        peaks, owns, kids, uss_after, direct_peaks, psss = [], [], [], [], [], []
        chunk = int(round(cfg.window_s * self.fs))
        for rep in range(cfg.memory_repeats):
            with self.server(prefetch=cfg.prefetch, cache_mb=budget) as srv:
                base = srv.rss()[0]
                with MemorySampler(srv.proc.pid) as sampler:
                    conn = srv.connect()
                    svc = conn.root.open_file(self.ds.name)
                    service_pass(svc, chunk)
                    time.sleep(0.3)  # one more sample after the pass
                    uss_after.append(process_tree_uss(srv.proc.pid) / MIB)
                    conn.close()
                peaks.append(sampler.peak_total / MIB)
                psss.append(sampler.peak_pss / MIB)
                owns.append(sampler.peak_own / MIB)
                kids.append(sampler.peak_children / MIB)
            res = run_clients([(_client_direct_pass, (self.ds.path, self.channels,
                                                      self.start_uutc, self.end_uutc,
                                                      cfg.window_s))], sample_rss=True)
            direct_peaks.append(res[0][3] / MIB)
            print(f"  memory repeat {rep + 1}: peak PSS {psss[-1]:.0f} MiB, peak RSS sum "
                  f"{peaks[-1]:.0f} MiB (server {owns[-1]:.0f}"
                  f", descendants {kids[-1]:.0f}; {base / MIB:.0f} MiB before the pass), "
                  f"USS after {uss_after[-1]:.0f} MiB; direct process peak "
                  f"{direct_peaks[-1]:.0f} MiB", flush=True)
        # PSS: a page mapped by n of these processes counts 1/n in each, so the shared
        # libraries (numpy, pymef, ...) and the readers' landing area count once; the sum
        # of RSS counts them once per process (printed too, for comparison with earlier runs)
        peak, rss = median(psss), median(peaks)
        limit = budget + 200
        self.add(Row(f"peak server memory (PSS, + reader processes), --cache-mb {budget:g}, "
                     f"full pass",
                     f"{spread(psss, '.0f')} MiB PSS; RSS sum {rss:.0f} (server "
                     f"{median(owns):.0f} + readers {median(kids):.0f}); USS after "
                     f"{median(uss_after):.0f}",
                     f"direct process {median(direct_peaks):.0f} MiB RSS",
                     f"budget + {peak - budget:.0f} MiB (RSS sum: + {rss - budget:.0f})",
                     f"<= {limit:g} MiB", verdict(peak <= limit),
                     {"peak_pss_MiB": psss, "peak_MiB": peaks, "server_MiB": owns,
                      "children_MiB": kids, "uss_after_MiB": uss_after,
                      "direct_MiB": direct_peaks}))


def wait_idle(srv: ServerProcess, quiet: float = 0.3, timeout: float = 60.0) -> None:
    """Wait until the server's reader processes used no CPU for ``quiet`` seconds."""
    import psutil
    procs = []
    for pid in srv.reader_pids():
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass

    def cpu() -> float:
        total = 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    deadline = time.monotonic() + timeout
    last = cpu()
    while time.monotonic() < deadline:
        time.sleep(quiet)  # polling another process's CPU counters
        now = cpu()
        if now - last < 0.01:
            return
        last = now


# ---- passes ---------------------------------------------------------------------------------

def direct_pass(path, channels, start_uutc, end_uutc, window_s) -> tuple[int, float]:
    """A direct MefReader loop over the whole file; (samples read, seconds)."""
    from mef_tools.io import MefReader
    warnings.simplefilter("ignore")
    reader = MefReader(path)
    step = int(round(window_s * 1e6))
    n = 0
    t0 = time.perf_counter()
    a = start_uutc
    while a < end_uutc:
        n += as_2d(reader.get_data(channels, a, min(a + step, end_uutc))).size
        a += step
    secs = time.perf_counter() - t0
    reader.close()
    return n, secs


def service_pass(svc, chunk: int) -> tuple[int, float]:
    """Stream the whole file with StreamSegmentIterator; (samples received, seconds)."""
    from software import StreamSegmentIterator
    it = StreamSegmentIterator(chunk)
    n = 0
    t0 = time.perf_counter()
    for seg in it.over(svc):
        n += seg.size
    return n, time.perf_counter() - t0


# ---- client processes -------------------------------------------------------------------------

def _client_windows(kind, target, port, channels, windows, work_s, busy, ready, go):
    """A client process reading ``windows`` with work after each; returns (t0, t1, samples)."""
    from software import decode_segment, get_connection
    if kind == "direct":
        from mef_tools.io import MefReader
        warnings.simplefilter("ignore")
        reader = MefReader(target)
        fetch = lambda a, b: as_2d(reader.get_data(channels, a, b))  # noqa: E731
    else:
        conn = get_connection(port, host="127.0.0.1", timeout=30)
        svc = conn.root.open_file(target)
        fetch = lambda a, b: decode_segment(svc.get_time_segment(a, b))  # noqa: E731
    ready.put(os.getpid())
    go.wait()
    n = 0
    t0 = time.monotonic()
    for a, b in windows:
        n += fetch(a, b).size
        work(work_s, busy)
    return t0, time.monotonic(), n


def _client_stream(name, port, chunk, ready, go):
    """A client process streaming a whole file; returns (t0, t1, samples)."""
    from software import get_connection
    conn = get_connection(port, host="127.0.0.1", timeout=30)
    svc = conn.root.open_file(name)
    ready.put(os.getpid())
    go.wait()
    t0 = time.monotonic()
    n, _ = service_pass(svc, chunk)
    t1 = time.monotonic()
    conn.close()
    return t0, t1, n


def _client_direct_pass(path, channels, start_uutc, end_uutc, window_s, ready, go):
    ready.put(os.getpid())
    go.wait()
    t0 = time.monotonic()
    n, _ = direct_pass(path, channels, start_uutc, end_uutc, window_s)
    return t0, time.monotonic(), n


def _client_main(fn, args, ready, go, results, index):
    try:
        results.put((index, fn(*args, ready, go), None))
    except BaseException as exc:  # report, then let the parent fail loudly
        import traceback
        results.put((index, None, traceback.format_exc()))
        raise SystemExit(1) from exc


def run_clients(specs, sample_rss: bool = False, timeout: float = 900) -> list[tuple]:
    """Run ``fn(*args, ready, go)`` in one spawned process per spec, started together.

    Each process sets itself up, reports ready, waits for ``go``, runs and returns a tuple
    (t0, t1, samples). With ``sample_rss`` the peak RSS of the (single) process is appended.
    """
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_client_main, args=(fn, args, ready, go, results, i),
                         daemon=True) for i, (fn, args) in enumerate(specs)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        sampler = MemorySampler(procs[0].pid).__enter__() if sample_rss else None
        go.set()
        out = [None] * len(procs)
        for _ in procs:
            index, value, error = results.get(timeout=timeout)
            if error:
                raise RuntimeError(f"client process failed:\n{error}")
            out[index] = value
        if sampler is not None:
            sampler.__exit__()
            out[0] = tuple(out[0]) + (sampler.peak_total,)
        return out
    except BaseException:
        for p in procs:
            p.kill()
        raise
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def _wall(results) -> float:
    return max(r[1] for r in results) - min(r[0] for r in results)


# ---- main -------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small recording (16 ch x 30 min), 1 repeat unless --repeats")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated rows to run, of: {', '.join(ROWS)}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats per row; medians are reported (default 3, quick 1)")
    parser.add_argument("--busy-work", action="store_true",
                        help="burn CPU for the client's work instead of sleeping")
    parser.add_argument("--prefetch", type=int, default=None,
                        help="the servers' --prefetch (default: settings.PREFETCH)")
    parser.add_argument("--json", default=None,
                        help="also write raw figures here (default benchmarks/data/results-*.json)")
    parser.add_argument("--code", default=None,
                        help="run the servers from this checkout (e.g. main's code, for a "
                             "paired comparison: benchmarks.paired)")
    args = parser.parse_args(argv)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        bad = [w for w in wanted if w not in ROWS]
        if bad:
            parser.error(f"--only: unknown row(s) {bad}; choose from {', '.join(ROWS)}")
        args.only = wanted
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds: servers and clients are stopped


def main(argv=None) -> int:
    import signal
    signal.signal(signal.SIGTERM, _on_sigterm)
    args = parse_args(argv)
    import settings
    cfg = Config(quick=args.quick, repeats=args.repeats or (1 if args.quick else 3),
                 busy=args.busy_work,
                 prefetch=settings.PREFETCH if args.prefetch is None else args.prefetch,
                 code=os.path.abspath(args.code) if args.code else None)
    if args.repeats:
        cfg.memory_repeats = args.repeats
    command = "python -m benchmarks.run" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:]
                                             else "")
    print(f"# mefstream benchmarks\n\ncommand: `{command}`\n")
    for label, value in machine_info():
        print(f"- {label}: {value}")
    print(flush=True)

    ds = cfg.dataset
    written = ensure_recording(ds)
    ensure_recording(warmup_dataset(ds.root), log=lambda *_: None)
    if written is None:
        with open(ds.marker) as fh:
            meta = json.load(fh)
        print(f"recording: {ds.path} (cached; writing it took {meta['write_seconds']:.1f} s, "
              f"{meta['bytes_on_disk'] / MIB:.0f} MiB on disk)")
    else:
        print(f"recording: {ds.path} (written now in {written:.1f} s)")
    bench = Bench(cfg)
    total = bench.n_samples * len(bench.channels)
    print(f"  {len(bench.channels)} channels x {bench.fs:g} Hz x "
          f"{bench.n_samples / bench.fs / 60:.0f} min = {total / 1e6:.0f} M samples "
          f"({total * 8 / MIB:.0f} MiB as float64); repeats: {cfg.repeats}; client work: "
          f"{cfg.work:g} s {'busy loop' if cfg.busy else 'sleep'} per window\n", flush=True)

    t_all = time.perf_counter()
    for name in ROWS:
        if args.only and name not in args.only:
            continue
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        with ForeignCpu() as foreign:
            getattr(bench, f"row_{name}")()
        bench.loads[name] = foreign.cores
        print(f"  ({time.perf_counter() - t0:.0f} s; other processes used {foreign.cores:.2f} "
              f"cores meanwhile)", flush=True)
    elapsed = time.perf_counter() - t_all

    print(f"\n## Results ({cfg.repeats} repeat(s), medians; (min-max) over repeats)\n")
    print(markdown_table(["row", "measured", "reference (direct)", "ratio", "target", "met?"],
                         [[r.name, r.measured, r.reference, r.ratio, r.target, r.met]
                          for r in bench.rows]))
    missed = [r.name for r in bench.rows if r.met == "**no**"]
    print(f"\ntargets met: {sum(r.met == 'yes' for r in bench.rows)}, missed: {len(missed)}"
          + (f" ({'; '.join(missed)})" if missed else ""))
    for note in bench.notes:
        print(f"note: {note}")
    busy = {k: v for k, v in bench.loads.items() if v > 0.15}
    if busy:
        print("note: other processes used CPU during "
              + ", ".join(f"{k} ({v:.2f} cores)" for k, v in busy.items())
              + f" of {os.cpu_count()}: those figures are disturbed; re-run them with --only.")
    print(f"benchmark time: {elapsed:.0f} s")
    out = args.json or os.path.join(DATA_DIR, f"results-{time.strftime('%Y%m%d-%H%M%S')}"
                                              f"{'-quick' if cfg.quick else ''}.json")
    with open(out, "w") as fh:
        json.dump({"command": command, "machine": machine_info(), "repeats": cfg.repeats,
                   "foreign_cores_per_row": bench.loads,
                   "rows": [r.__dict__ for r in bench.rows], "notes": bench.notes}, fh,
                  indent=1, default=str)
    print(f"raw figures: {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
