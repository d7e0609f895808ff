"""Shared machinery of the benchmarks: recordings, server processes, memory sampling.

Nothing here runs on import: spawned processes (reader processes of a server, benchmark
client processes) re-import modules, so every action sits behind a function call.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

#: Repository root (the directory holding ``software/`` and ``start.py``).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Where recordings and server logs are cached (git-ignored).
DATA_DIR = os.path.join(ROOT, "benchmarks", "data")


# ---- recordings ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    """A recording written with ``software.mef3.demo.eeg_like`` + ``write_session``.

    Attributes
    ----------
    root : str
        Data root directory of the server (the session lies directly in it).
    name : str
        Session directory name (``*.mefd``), relative to ``root``.
    n_channels, fs, minutes, seed, precision
        What is written.
    """

    root: str
    name: str
    n_channels: int
    fs: float = 256.0
    minutes: float = 120.0
    seed: int = 0
    precision: int = 2

    @property
    def path(self) -> str:
        return os.path.join(self.root, self.name)

    @property
    def marker(self) -> str:
        return self.path + ".json"

    @property
    def n_samples(self) -> int:
        return int(round(self.minutes * 60.0 * self.fs))

    def channel_names(self) -> list[str]:
        width = max(2, len(str(self.n_channels)))
        return [f"EEG{ch + 1:0{width}d}" for ch in range(self.n_channels)]


def ensure_recording(ds: Dataset, log=print) -> float | None:
    """Write ``ds`` unless a complete copy is cached; return the seconds writing took.

    A session counts as complete when its marker file (``<session>.json``, written last)
    describes the same parameters; otherwise it is (re)written. Returns ``None`` when the
    cached copy was used.
    """
    want = asdict(ds)
    want.pop("root")
    if os.path.isdir(ds.path) and os.path.exists(ds.marker):
        try:
            with open(ds.marker) as fh:
                have = json.load(fh)
            if have.get("params") == want:
                return None
        except (OSError, ValueError):
            pass
    from software.mef3.demo import DEMO_START_UUTC, eeg_like
    from software.mef3.writer import write_session

    os.makedirs(ds.root, exist_ok=True)
    if os.path.exists(ds.marker):
        os.remove(ds.marker)
    log(f"writing {ds.path}: {ds.n_channels} ch x {ds.fs:g} Hz x {ds.minutes:g} min, "
        f"precision {ds.precision} ...")
    t0 = time.perf_counter()
    data = eeg_like(ds.n_channels, ds.fs, ds.minutes * 60.0, seed=ds.seed)
    t_gen = time.perf_counter() - t0
    signals = dict(zip(ds.channel_names(), data))
    write_session(ds.path, signals, ds.fs, DEMO_START_UUTC, precision=ds.precision,
                  overwrite=True)
    elapsed = time.perf_counter() - t0
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ds.path) for f in fs)
    with open(ds.marker, "w") as fh:
        json.dump({"params": want, "write_seconds": elapsed, "generate_seconds": t_gen,
                   "bytes_on_disk": size}, fh, indent=1)
    log(f"  written in {elapsed:.1f} s (signal synthesis {t_gen:.1f} s, MEF3 writing "
        f"{elapsed - t_gen:.1f} s); {size / 2**20:.0f} MiB on disk")
    return elapsed


def warmup_dataset(root: str) -> Dataset:
    """A small session in ``root`` read to start a server's reader processes before timing."""
    return Dataset(root=root, name="warmup.mefd", n_channels=4, minutes=10.0, seed=99)


def session_info(path: str) -> dict:
    """Channels, start, end and sample count of a session, read with MefReader."""
    import warnings

    from mef_tools.io import MefReader
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = MefReader(path)
        names = list(reader.channels)
        start = int(min(reader.get_property("start_time", n) for n in names))
        end = int(max(reader.get_property("end_time", n) for n in names))
        fs = float(reader.get_property("fsamp", names[0]))
        reader.close()
    return {"channels": names, "start_uutc": start, "end_uutc": end, "fs": fs,
            "n_samples": int(((end - start) / 1e6) * fs + 0.5)}


# ---- processes ------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _is_reader(proc) -> bool:
    try:
        cmd = " ".join(proc.cmdline())
    except Exception:
        return False
    return "spawn_main" in cmd


def process_tree_rss(pid: int) -> tuple[int, int, int]:
    """RSS in bytes of process ``pid`` and of its descendants: (total, process, descendants)."""
    import psutil
    try:
        proc = psutil.Process(pid)
        own = proc.memory_info().rss
        kids = 0
        for child in proc.children(recursive=True):
            try:
                kids += child.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        return 0, 0, 0
    return own + kids, own, kids


def process_tree_pss(pid: int) -> int:
    """PSS in bytes of a process tree: each page shared by n processes counts 1/n in each,
    so pages shared between them (libraries, the landing area) count once in the sum."""
    import psutil
    try:
        pids = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def process_tree_uss(pid: int) -> int:
    """USS (memory unique to each process, shared libraries not counted) of a process tree."""
    import psutil
    total = 0
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            total += proc.memory_full_info().uss
        except psutil.Error:
            pass
    return total


class MemorySampler:
    """Samples the RSS (and PSS) of a process tree every ``interval`` seconds in a thread;
    keeps peaks."""

    def __init__(self, pid: int, interval: float = 0.02, pss: bool = True) -> None:
        self.pid = pid
        self.pss = pss and os.path.exists(f"/proc/{pid}/smaps_rollup")
        self.interval = interval
        self.peak_total = self.peak_own = self.peak_children = self.peak_pss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total, own, kids = process_tree_rss(self.pid)
            self.samples += 1
            if total > self.peak_total:
                self.peak_total = total
            self.peak_own = max(self.peak_own, own)
            self.peak_children = max(self.peak_children, kids)
            if self.pss:
                self.peak_pss = max(self.peak_pss, process_tree_pss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class ServerProcess:
    """``python start.py`` (or a stand-in module) in a subprocess, warmed up and ready.

    Parameters
    ----------
    data_root : str
        ``--data-root`` of the server; must hold :func:`warmup_dataset`.
    prefetch, cache_mb, workers
        Server options.
    module : str, optional
        Run ``python -m MODULE`` instead of ``python start.py`` (same arguments).
    warm : bool
        Start every reader process (by reading the warm-up session) before returning, so
        that process start-up is not timed as reading.
    code : str, optional
        Checkout whose ``start.py`` (and ``software``) the server runs (default: this one),
        e.g. a ``git worktree`` of an older commit for a paired comparison.
    """

    def __init__(self, data_root: str, prefetch: int = 3, cache_mb: float = 1024,
                 workers: int = 2, module: str | None = None, warm: bool = True,
                 extra: list[str] | None = None, code: str | None = None) -> None:
        self.code = code or ROOT
        self.data_root = data_root
        self.prefetch = prefetch
        self.cache_mb = cache_mb
        self.workers = workers
        self.module = module
        self.warm = warm
        self.extra = list(extra or [])
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(DATA_DIR, "logs", "server.log")
        self.start_seconds = 0.0

    def command(self) -> list[str]:
        head = [sys.executable, "-m", self.module] if self.module else [sys.executable,
                                                                          "start.py"]
        return head + ["--port", str(self.port), "--data-root", self.data_root,
                       "--workers", str(self.workers), "--prefetch", str(self.prefetch),
                       "--cache-mb", str(self.cache_mb), "--log-level", "WARNING"] + self.extra

    def start(self) -> ServerProcess:
        from software import get_connection
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        t0 = time.perf_counter()
        for attempt in range(3):
            self.port = free_port()
            log = open(self.log_path, "a")
            log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(self.command())}\n")
            log.flush()
            self.proc = subprocess.Popen(self.command(), cwd=self.code, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
            log.close()
            try:
                conn = get_connection(self.port, host="127.0.0.1", timeout=60)
                break
            except ConnectionRefusedError:
                if self.proc.poll() is None:
                    self.stop()
                    raise
                self.proc = None  # port taken in between (or a start error): try again
        else:
            raise RuntimeError(f"the server did not start; see {self.log_path}")
        try:
            if self.warm:
                self._warm_up(conn)
        finally:
            conn.close()
        self.start_seconds = time.perf_counter() - t0
        return self

    def reader_pids(self) -> list[int]:
        import psutil
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        return [k.pid for k in kids if _is_reader(k)]

    def _warm_up(self, conn) -> None:
        """Read the small warm-up session until every reader process runs and has read."""
        from software import decode_segment
        ds = warmup_dataset(self.data_root)
        svc = conn.root.open_file(ds.name)
        n = ds.n_samples
        step = int(120 * ds.fs)  # 12 blocks of 10 s: 12 reader tasks at once
        deadline = time.monotonic() + 60
        rounds = 0
        start = 0
        while rounds < 4 or len(self.reader_pids()) < self.workers:
            if time.monotonic() > deadline:
                break
            if start + step > n:
                start = 0
                conn.root.close_file(ds.name)  # drop its cached blocks: every read is new
                svc = conn.root.open_file(ds.name)
            decode_segment(svc.get_stream_segment(step, start))
            start += step
            rounds += 1
            time.sleep(0.1)
        conn.root.close_file(ds.name)

    def connect(self, **kw):
        """``get_connection`` to this server (keywords passed on, e.g. shared_memory)."""
        from software import get_connection
        return get_connection(self.port, host="127.0.0.1", timeout=30, **kw)

    def rss(self) -> tuple[int, int, int]:
        return process_tree_rss(self.proc.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            import psutil
            try:
                kids = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                kids = []
            proc.kill()
            for kid in kids:
                try:
                    kid.kill()
                except psutil.Error:
                    pass
            proc.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ForeignCpu:
    """CPU used by processes outside this process tree while the block runs (in cores).

    System-wide busy CPU time minus the CPU time of this process and of its children that
    were waited for (servers and client processes are reaped before a row ends, and their
    reader processes by them). A figure well above zero means other work competed with the
    benchmark.
    """

    def _sample(self) -> tuple[float, float, float]:
        import psutil
        t = psutil.cpu_times()
        busy = t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + \
            getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)
        me = psutil.Process().cpu_times()
        mine = me.user + me.system + me.children_user + me.children_system
        return time.monotonic(), busy, mine

    def __enter__(self) -> ForeignCpu:
        self._start = self._sample()
        self.cores = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        t1, busy1, mine1 = self._sample()
        t0, busy0, mine0 = self._start
        self.cores = max(0.0, (busy1 - busy0) - (mine1 - mine0)) / max(t1 - t0, 1e-9)


# ---- reporting ------------------------------------------------------------------------------

def machine_info() -> list[tuple[str, str]]:
    """(label, value) pairs describing this machine and the software versions."""
    import numpy
    import psutil
    import rpyc
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = [f"python {platform.python_version()}", f"numpy {numpy.__version__}",
                f"rpyc {rpyc.__version__}", f"psutil {psutil.__version__}"]
    for mod in ("pymef", "mef_tools"):
        try:
            from importlib.metadata import version
            versions.append(f"{mod} {version(mod)}")
        except Exception:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "software"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += " (software/ has uncommitted changes)" if dirty else ""
    except Exception:
        commit = "unknown"
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "n/a"
    return [
        ("CPU", cpu),
        ("cores", f"{psutil.cpu_count(logical=True)} logical, "
                  f"{psutil.cpu_count(logical=False)} physical"),
        ("RAM", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("versions", ", ".join(versions)),
        ("commit", commit),
        ("load average at start", load),
    ]


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def spread(values, fmt: str) -> str:
    """``median (min-max)`` of ``values`` formatted with ``fmt``."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return format(values[0], fmt)
    return (f"{format(statistics.median(values), fmt)} "
            f"({format(min(values), fmt)}-{format(max(values), fmt)})")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def as_2d(data) -> np.ndarray:
    """What a direct reader needs: one float64 array (channels x samples)."""
    return np.asarray(data, dtype=np.float64)
