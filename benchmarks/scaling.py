"""Cost growth of serving: clients, reader processes, open sessions, connections.

Rows (``python -m benchmarks.growth --rows clients,readers,sessions,connections``):

- ``clients``: N client processes (1, 4, 16, 64) each asking the same cached 64 ch x 256
  segment in a closed loop for ``--seconds``; latency median and p99 over every request of
  every client, aggregate requests/s. Also prints ``conn.ping()`` of one client (N = 1).
- ``readers``: a cold pass (``StreamSegmentIterator(60 s)``) of the 64-channel session on a
  fresh server with 1, 2 and ``os.cpu_count()`` reader processes: samples/s.
- ``sessions``: PSS of the server tree after opening 1, 10 and 100 small sessions (2 ch x
  256 Hz x 1 min, one small segment read from each) minus before.
- ``connections``: PSS of the server tree, and the tmpfs bytes of the shared-memory areas,
  with 1, 16 and 64 connections (``get_connection``, each opens the session and reads one
  small segment) minus before.

Every measurement runs on a fresh server (``start.py``, 2 reader processes unless the row
varies them) and prints the load average and the foreign CPU (cores used by processes
outside this benchmark while it ran); figures taken with foreign CPU > 0.3 are flagged.
"""
from __future__ import annotations

import multiprocessing
import os
import statistics
import time

from .common import (
    DATA_DIR,
    Dataset,
    ForeignCpu,
    ServerProcess,
    ensure_recording,
    process_tree_pss,
    warmup_dataset,
)

MIB = 2**20
SCALE_ROOT = os.path.join(DATA_DIR, "scale")
MANY_ROOT = os.path.join(DATA_DIR, "scale_many")
SMALL = 256  # samples of the small segment (64 channels)


def big_dataset() -> Dataset:
    """64 ch x 256 Hz x 10 min (9.8 M samples): the session of the clients/readers rows."""
    return Dataset(root=SCALE_ROOT, name="scale_64ch_10min.mefd", n_channels=64,
                   minutes=10.0, seed=5)


def many_datasets(n: int = 100) -> list[Dataset]:
    """``n`` small sessions (2 ch x 256 Hz x 1 min) for the sessions row."""
    return [Dataset(root=MANY_ROOT, name=f"small_{i:03d}.mefd", n_channels=2, minutes=1.0,
                    seed=100 + i) for i in range(n)]


def p99(values) -> float:
    values = sorted(values)
    return values[int(0.99 * (len(values) - 1))] if values else float("nan")


def _stamp(fc: ForeignCpu) -> str:
    flag = " DISTURBED" if fc.cores > 0.3 else ""
    return f"load {os.getloadavg()[0]:.2f}, foreign CPU {fc.cores:.2f} cores{flag}"


# ---- clients ------------------------------------------------------------------------------

def _small_client(port, name, start, until, ready, go, results, index, with_ping,
                  serving=True):
    """One client process: the same cached small segment in a closed loop until ``until``.

    ``serving=False`` stops the connection's serving thread (no callbacks): replies are
    then received by the calling thread itself instead of being handed over to it.
    """
    try:
        from software import decode_segment, get_connection
        conn = get_connection(port, host="127.0.0.1", timeout=60)
        if not serving:
            conn.serving_thread.close()
        get = conn.root.open_file(name).get_stream_segment
        for _ in range(20):  # fill the cache, warm the code paths
            decode_segment(get(SMALL, start))
        ready.put(index)
        go.wait()
        end = until.value
        lat = []
        perf = time.perf_counter
        while True:
            t = perf()
            data = decode_segment(get(SMALL, start))
            t1 = perf()
            if time.monotonic() >= end:
                break
            lat.append(t1 - t)
        if data.shape != (64, SMALL):
            raise AssertionError(f"shape {data.shape}")
        pings, small = [], []
        if with_ping:  # alone now: the ratio small / ping on one connection, interleaved
            for _ in range(10):
                for fn, out in ((conn.ping, pings),
                                (lambda: decode_segment(get(SMALL, start)), small)):
                    for _ in range(100):
                        t = perf()
                        fn()
                        out.append(perf() - t)
        conn.close()
        results.put((index, lat, pings, small, None))
    except BaseException as exc:  # reported to the parent, which fails loudly
        import traceback
        results.put((index, None, None, None, traceback.format_exc()))
        raise SystemExit(1) from exc


def _cpu(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _busy() -> float:
    import psutil
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _switches(procs) -> int:
    """Context switches of every thread of ``procs`` (from /proc/PID/task/*/status)."""
    total = 0
    for proc in procs:
        base = f"/proc/{proc.pid}/task"
        try:
            tids = os.listdir(base)
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"{base}/{tid}/status") as fh:
                    for line in fh:
                        if "ctxt_switches:" in line:
                            total += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return total


def _renice(pid: int, nice: int) -> None:
    """Set the nice value of every thread of process ``pid`` (an experiment's option)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except OSError:
            pass


def measure_clients(n: int, seconds: float, server_nice: int | None = None,
                    serving: bool = True) -> dict:
    """``n`` client processes in a closed loop on one fresh server; the figures of one run.

    Besides latency and rate: the server process's CPU per request, the whole machine's
    busy CPU per request, and the server tree's context switches per request, all over
    the same window.
    """
    import psutil
    ds = big_dataset()
    ctx = multiprocessing.get_context("spawn")
    with ForeignCpu() as fc:
        with ServerProcess(ds.root, prefetch=0, cache_mb=256, workers=2) as srv:
            ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
            until = ctx.Value("d", 0.0)
            start = int(60 * ds.fs)
            procs = [ctx.Process(target=_small_client, daemon=True,
                                 args=(srv.port, ds.name, start, until, ready, go, results,
                                       i, n == 1, serving)) for i in range(n)]
            for p in procs:
                p.start()
            try:
                for _ in procs:
                    ready.get(timeout=300)
                if server_nice is not None:  # serving threads exist now: one a client
                    _renice(srv.proc.pid, server_nice)
                server = psutil.Process(srv.proc.pid)
                tree = [server] + server.children(recursive=True)
                s0, busy0, sw0 = _cpu(server), _busy(), _switches(tree)
                until.value = time.monotonic() + seconds
                go.set()
                time.sleep(seconds)  # the clients stop at ``until``: the same window
                s1, busy1, sw1 = _cpu(server), _busy(), _switches(tree)
                out = [results.get(timeout=seconds + 120) for _ in procs]
            finally:
                for p in procs:
                    p.join(timeout=30)
                    if p.is_alive():
                        p.kill()
    errors = [o[4] for o in out if o[4]]
    if errors:
        raise RuntimeError(f"client failed:\n{errors[0]}")
    lat = [x for o in out for x in o[1]]
    row = {"clients": n, "requests": len(lat), "rate": len(lat) / seconds,
           "median_ms": statistics.median(lat) * 1e3, "p99_ms": p99(lat) * 1e3,
           "stamp": _stamp(fc), "foreign": fc.cores,
           "server_us": (s1 - s0) / max(1, len(lat)) * 1e6,
           "machine_us": (busy1 - busy0) / max(1, len(lat)) * 1e6,
           "switches": (sw1 - sw0) / max(1, len(lat))}
    if n == 1:
        pings, small = out[0][2], out[0][3]
        row["ping_ms"] = statistics.median(pings) * 1e3
        row["small_alone_ms"] = statistics.median(small) * 1e3
    return row


def row_clients(args) -> list[str]:
    ensure_recording(big_dataset())
    ensure_recording(warmup_dataset(SCALE_ROOT), log=lambda *_: None)
    rows, lines = [], []
    for n in args.clients:
        runs = [measure_clients(n, args.seconds, args.server_nice, not args.no_serving_thread)
                for _ in range(args.repeats)]
        r = min(runs, key=lambda r: r["foreign"]) if args.least_disturbed else \
            sorted(runs, key=lambda r: r["median_ms"])[len(runs) // 2]
        rows.append(r)
        for x in runs:
            print(f"  {n:>3} clients: median {x['median_ms']:.3f} ms, p99 {x['p99_ms']:.3f} ms,"
                  f" {x['rate']:.0f} req/s; CPU per request: server {x['server_us']:.0f} us,"
                  f" machine {x['machine_us']:.0f} us; server switches/request "
                  f"{x['switches']:.1f}; {x['stamp']}"
                  + (f"; ping {x['ping_ms']:.3f} ms, small alone {x['small_alone_ms']:.3f} ms"
                     if "ping_ms" in x else ""), flush=True)
    base = rows[0]
    lines.append("| client processes | latency median (ms) | p99 (ms) | median / 1 client | "
                 "clients / cores | requests/s (all clients) | MB/s | CPU/request: server, "
                 "machine (us) | load, foreign CPU |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    cores = os.cpu_count() or 1
    for r in rows:
        lines.append(f"| {r['clients']} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['median_ms'] / base['median_ms']:.1f}x | "
                     f"{max(1.0, r['clients'] / cores):.1f} | {r['rate']:.0f} | "
                     f"{r['rate'] * 64 * SMALL * 8 / 1e6:.0f} | {r['server_us']:.0f}, "
                     f"{r['machine_us']:.0f} | {r['stamp']} |")
    if "ping_ms" in base:
        lines.append(f"\nsmall segment alone {base['small_alone_ms']:.3f} ms vs conn.ping() "
                     f"{base['ping_ms']:.3f} ms on the same connection: "
                     f"{base['small_alone_ms'] / base['ping_ms']:.2f}x (target <= 2.0x)")
    return lines


# ---- readers ------------------------------------------------------------------------------

def row_readers(args) -> list[str]:
    from .run import service_pass
    ds = big_dataset()
    ensure_recording(ds)
    ensure_recording(warmup_dataset(SCALE_ROOT), log=lambda *_: None)
    counts = sorted({1, 2, os.cpu_count() or 1} | set(args.readers))
    results = {k: [] for k in counts}
    stamps = {k: [] for k in counts}
    for rep in range(args.repeats):
        for k in counts:  # alternating: a disturbance spreads over the counts
            with ForeignCpu() as fc:
                with ServerProcess(ds.root, prefetch=1, cache_mb=1024, workers=k) as srv:
                    conn = srv.connect()
                    svc = conn.root.open_file(ds.name)
                    n, secs = service_pass(svc, int(60 * ds.fs))
                    conn.close()
            if n != ds.n_samples * ds.n_channels:
                raise AssertionError(f"cold pass returned {n} samples")
            results[k].append(n / secs)
            stamps[k].append(_stamp(fc))
            print(f"  {k} reader processes, repeat {rep + 1}: {n / secs / 1e6:.2f} M samples/s;"
                  f" {stamps[k][-1]}", flush=True)
    lines = ["| reader processes | cold pass (M samples/s), median (min-max) | vs 1 reader | "
             "load, foreign CPU (last repeat) |", "|---|---|---|---|"]
    one = statistics.median(results[counts[0]])
    for k in counts:
        med = statistics.median(results[k])
        lines.append(f"| {k} | {med / 1e6:.2f} ({min(results[k]) / 1e6:.2f}-"
                     f"{max(results[k]) / 1e6:.2f}) | {med / one:.2f}x | {stamps[k][-1]} |")
    return lines


# ---- memory: sessions, connections ---------------------------------------------------------

def _settle(pid: int) -> int:
    time.sleep(0.5)  # freed memory returned, prefetches done
    return process_tree_pss(pid)


def _shm_bytes() -> int:
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def row_sessions(args) -> list[str]:
    from software import decode_segment
    sets = many_datasets(max(args.sessions))
    for ds in sets:
        ensure_recording(ds, log=lambda *_: None)
    ensure_recording(warmup_dataset(MANY_ROOT), log=lambda *_: None)
    added = {k: [] for k in args.sessions}
    stamp = ""
    for _ in range(args.repeats):
        with ForeignCpu() as fc:
            with ServerProcess(MANY_ROOT, prefetch=0, cache_mb=256, workers=2) as srv:
                conn = srv.connect()
                before = _settle(srv.proc.pid)
                opened = []
                for k in sorted(args.sessions):
                    while len(opened) < k:
                        svc = conn.root.open_file(sets[len(opened)].name)
                        decode_segment(svc.get_stream_segment(SMALL, 0))
                        opened.append(svc)
                    added[k].append((_settle(srv.proc.pid) - before) / MIB)
                conn.close()
        stamp = _stamp(fc)
        print("  " + ", ".join(f"{k} sessions +{added[k][-1]:.1f} MiB" for k in args.sessions)
              + f"; {stamp}", flush=True)
    lines = ["| open sessions | server tree PSS added (MiB), median (min-max) | per session "
             "(MiB) |", "|---|---|---|"]
    for k in args.sessions:
        med = statistics.median(added[k])
        lines.append(f"| {k} | {med:.1f} ({min(added[k]):.1f}-{max(added[k]):.1f}) | "
                     f"{med / k:.2f} |")
    lines.append(f"\n{stamp}")
    return lines


def row_connections(args) -> list[str]:
    from software import decode_segment
    ds = big_dataset()
    ensure_recording(ds)
    ensure_recording(warmup_dataset(SCALE_ROOT), log=lambda *_: None)
    added = {k: [] for k in args.connections}
    shm = {k: [] for k in args.connections}
    stamp = ""
    for _ in range(args.repeats):
        with ForeignCpu() as fc:
            with ServerProcess(ds.root, prefetch=0, cache_mb=256, workers=2) as srv:
                first = srv.connect()  # the session stays open: only connections are added
                decode_segment(first.root.open_file(ds.name).get_stream_segment(SMALL, 0))
                before, shm0 = _settle(srv.proc.pid), _shm_bytes()
                conns = []
                for k in sorted(args.connections):
                    while len(conns) < k:
                        c = srv.connect()
                        decode_segment(c.root.open_file(ds.name).get_stream_segment(SMALL, 0))
                        conns.append(c)
                    added[k].append((_settle(srv.proc.pid) - before) / MIB)
                    shm[k].append((_shm_bytes() - shm0) / MIB)
                for c in conns:
                    c.close()
                first.close()
        stamp = _stamp(fc)
        print("  " + ", ".join(f"{k} connections +{added[k][-1]:.1f} MiB PSS, tmpfs "
                               f"+{shm[k][-1]:.1f} MiB" for k in args.connections)
              + f"; {stamp}", flush=True)
    lines = ["| connections | server tree PSS added (MiB) | per connection (MiB) | tmpfs "
             "(/dev/shm) added (MiB) |", "|---|---|---|---|"]
    for k in args.connections:
        med = statistics.median(added[k])
        lines.append(f"| {k} | {med:.1f} ({min(added[k]):.1f}-{max(added[k]):.1f}) | "
                     f"{med / k:.2f} | {statistics.median(shm[k]):.1f} |")
    lines.append(f"\n{stamp}")
    return lines


ROWS = {"clients": row_clients, "readers": row_readers, "sessions": row_sessions,
        "connections": row_connections}


def run_rows(names: list[str], args) -> None:
    """Run the named rows in order and print each one's table."""
    for name in names:
        print(f"\n### {name} (load average at start {os.getloadavg()[0]:.2f})", flush=True)
        lines = ROWS[name](args)
        print("\n" + "\n".join(lines), flush=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def add_arguments(parser) -> None:
    parser.add_argument("--clients", type=_ints, default=[1, 4, 16, 64])
    parser.add_argument("--readers", type=_ints, default=[1, 2])
    parser.add_argument("--sessions", type=_ints, default=[1, 10, 100])
    parser.add_argument("--connections", type=_ints, default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="seconds of load per client count")
    parser.add_argument("--server-nice", type=int, default=None,
                        help="clients row: renice the server's threads (an experiment)")
    parser.add_argument("--no-serving-thread", action="store_true",
                        help="clients row: stop each client's serving thread (an experiment)")
    parser.add_argument("--least-disturbed", action="store_true",
                        help="clients row: report the repeat with the least foreign CPU")

