"""Load (issue 3): 16 concurrent clients on the 3 test files for a bounded time.

Each client has its own connection and does random windows, time windows, rows, segments,
channel selections, iterations and callbacks; every sample is compared with MefReader's
whole-recording read. The server runs as ``python start.py`` so that its memory (server
process plus reader processes) can be measured on its own with psutil.

Memory bound: peak RSS of the server and its readers <= their RSS after a warm-up + the
cache budget + :data:`OVERHEAD_MB`. The overhead is what the cache does not hold: answers
being assembled, encoded and sent (up to ~1 MiB each here, a few copies each, 16 clients at
once), per-connection threads and buffers, the readers' working memory (pymef's decoding
buffers: a reader that has only opened sessions grows by up to ~40 MiB once it reads), and
allocator slack. Measured on a 2-core box: peak - warm-up = 60-70 MiB with a 16 MiB cache.
Soak figures for longer runs are in ``benchmarks/``.
"""
from __future__ import annotations

import os
import threading
import time
import traceback

import numpy as np
import psutil
import pytest

from software import (
    StreamRowIterator,
    StreamSegmentIterator,
    decode_segment,
    get_connection,
)
from tests.conftest import PASSWORD2
from tests.test_faults import readers_of, spawn_server
from tests.util import reference, wait_until

CLIENTS = 16
DURATION = 12.0          # seconds of load
CACHE_MB = 16            # small, so that blocks are evicted and read again under load
OVERHEAD_MB = 128        # MiB; see the module docstring (measured: about 50)
MAX_WINDOW = 20_000      # samples per random request

#: file -> (password, {fs: channel names of that rate, in file order})
FILES = {
    "main.mefd": (None, {256.0: ("Cz", "Fp1", "Fp2", "O1", "O2", "index")}),
    "mixed.mefd": (None, {256.0: ("slow1", "slow2"), 512.0: ("fast1", "fast2")}),
    "secret.mefd": (PASSWORD2, {256.0: ("a",)}),
}
OPERATIONS = ("window", "time", "row", "segment", "channels", "iterate", "callback")


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and all its descendants, in bytes."""
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


@pytest.fixture(scope="module")
def refs(data_root):
    """{(file, fs): (names, samples, start_uutc)} for every rate group of every file."""
    from mef_tools.io import MefReader
    out = {}
    for name, (password, groups) in FILES.items():
        path = os.path.join(data_root, name)
        reader = MefReader(path, password2=password)
        for fs, names in groups.items():
            start = min(reader.get_property("start_time", n) for n in names)
            out[name, fs] = (names, reference(path, names, password=password), int(start))
    return out


class Client:
    """One simulated analysis script: its own connection, random requests, checks."""

    def __init__(self, port: int, seed: int, refs: dict, deadline: float,
                 errors: list) -> None:
        self.rng = np.random.default_rng(seed)
        self.port, self.refs, self.deadline, self.errors = port, refs, deadline, errors
        self.counts = dict.fromkeys(OPERATIONS, 0)
        self.samples = 0

    # the view's state, mirrored on the client to know what to expect
    def select(self, file: str, fs: float, names: tuple) -> None:
        self.state[file] = (fs, names)

    def expected(self, file: str, start: int, stop: int) -> np.ndarray:
        fs, names = self.state[file]
        all_names, data, _ = self.refs[file, fs]
        rows = [all_names.index(n) for n in names]
        out = np.full((len(names), stop - start), np.nan)
        hi = min(stop, data.shape[1])
        if hi > start:
            out[:, :hi - start] = data[rows, start:hi]
        return out

    def check(self, what: str, got, want: np.ndarray) -> None:
        if got is False or not same(got, want):
            shape = None if got is False else got.shape
            self.errors.append(f"{what}: got {shape}, want {want.shape}")
        else:
            self.samples += want.size

    def run(self) -> None:
        conn = get_connection(self.port, host="127.0.0.1", timeout=30)
        try:
            self.views, self.state = {}, {}
            for file, (password, groups) in FILES.items():
                self.views[file] = conn.root.open_file(file, password)
                info = dict(self.views[file].get_info())
                self.select(file, info["fs"], info["channels"])
            while time.monotonic() < self.deadline and len(self.errors) < 20:
                file = str(self.rng.choice(list(FILES)))
                op = str(self.rng.choice(OPERATIONS))
                getattr(self, "op_" + op)(file, self.views[file])
                self.counts[op] += 1
        except BaseException:                    # noqa: BLE001 - reported by the test
            self.errors.append(traceback.format_exc())
        finally:
            conn.close()

    def n_samples(self, file: str) -> int:
        fs, _ = self.state[file]
        return self.refs[file, fs][1].shape[1]

    def window(self, file: str) -> tuple[int, int]:
        n = self.n_samples(file)
        start = int(self.rng.integers(0, n + 100))
        return start, int(self.rng.integers(1, MAX_WINDOW))

    # ---- operations ----
    def op_window(self, file, svc) -> None:
        start, length = self.window(file)
        got = decode_segment(svc.get_stream_segment(length, start))
        n = self.n_samples(file)
        if start >= n:
            if got is not False:
                self.errors.append(f"window past the end of {file} returned data")
            return
        self.check(f"window {file} {start}+{length}", got,
                   self.expected(file, start, min(start + length, n)))

    def op_time(self, file, svc) -> None:
        fs, _ = self.state[file]
        origin = self.refs[file, fs][2]
        first, count = self.window(file)
        first -= 50                              # sometimes before the recording starts
        t0 = origin + int(round(first * 1e6 / fs))
        t1 = t0 + int(round(count * 1e6 / fs))
        got = decode_segment(svc.get_time_segment(t0, t1))
        n = self.n_samples(file)
        if first + count <= 0 or first >= n:
            if got is not False:
                self.errors.append(f"time window outside {file} returned data")
            return
        want = np.full((len(self.state[file][1]), count), np.nan)
        lo, hi = max(first, 0), min(first + count, n)
        want[:, lo - first:hi - first] = self.expected(file, lo, hi)
        self.check(f"time {file} {t0}..{t1}", got, want)

    def op_row(self, file, svc) -> None:
        _, names = self.state[file]
        row = int(self.rng.integers(0, len(names)))
        start, length = self.window(file)
        start = min(start, self.n_samples(file) - 1)
        key = names[row] if self.rng.random() < 0.5 else row
        got = decode_segment(svc.get_row_segment(key, length, start))
        stop = min(start + length, self.n_samples(file))
        self.check(f"row {file} {key!r} {start}+{length}", got,
                   self.expected(file, start, stop)[row])

    def op_segment(self, file, svc) -> None:
        fs, _ = self.state[file]
        seconds = float(self.rng.uniform(0.5, 30.0))
        n_segments = svc.set_segment_size(seconds)
        step = max(1, int(round(seconds * fs)))
        index = int(self.rng.integers(0, n_segments))
        got = decode_segment(svc.get_segment(index))
        start = index * step
        self.check(f"segment {file} {seconds}s #{index}", got,
                   self.expected(file, start, min(start + step, self.n_samples(file))))

    def op_channels(self, file, svc) -> None:
        _, groups = FILES[file]
        fs = list(groups)[int(self.rng.integers(0, len(groups)))]
        names = list(groups[fs])
        self.rng.shuffle(names)
        names = tuple(names[:int(self.rng.integers(1, len(names) + 1))])
        assert svc.set_active_channels(list(names)) == names
        self.select(file, fs, names)

    def op_iterate(self, file, svc) -> None:
        n = self.n_samples(file)
        length = int(self.rng.integers(500, 8000))
        start = int(self.rng.integers(0, n))
        if self.rng.random() < 0.5:
            it = StreamSegmentIterator(_range=length, start=start)
            row = None
        else:
            row = int(self.rng.integers(0, len(self.state[file][1])))
            it = StreamRowIterator(_channel=row, _range=length, start=start)
        for _ in range(6):
            position = it.position
            got = it.next_or_wait(svc, timeout=60)
            if got is False:
                if position < n:
                    self.errors.append(f"iterator on {file} stopped early at {position}")
                return
            want = self.expected(file, position, min(position + length, n))
            self.check(f"iterate {file} at {position}", got, want if row is None else want[row])

    def op_callback(self, file, svc) -> None:
        start, length = self.window(file)
        start = min(start, self.n_samples(file) - 1)
        arrived, box = threading.Event(), []

        def deliver(value) -> None:
            box.append(value)
            arrived.set()

        value = svc.get_stream_segment(length, start, deliver)
        if value is False:
            if not arrived.wait(60):
                self.errors.append(f"callback for {file} {start}+{length} never came")
                return
            value = box[0]
        self.check(f"callback {file} {start}+{length}", decode_segment(value),
                   self.expected(file, start, min(start + length, self.n_samples(file))))


@pytest.mark.slow
def test_sixteen_clients_on_three_files(data_root, refs, tmp_path):
    log = tmp_path / "server.log"
    proc, port = spawn_server(data_root, log, "--workers", "2", "--cache-mb", str(CACHE_MB),
                              "--prefetch", "2")
    try:
        server = psutil.Process(proc.pid)
        # warm up: every file opened and read by both readers (they import pymef lazily)
        warm_errors: list[str] = []
        warm = [Client(port, 1000 + i, refs, time.monotonic() + 1.5, warm_errors)
                for i in range(4)]
        warmers = [threading.Thread(target=c.run, name=f"warm-{i}", daemon=True)
                   for i, c in enumerate(warm)]
        for thread in warmers:
            thread.start()
        for thread in warmers:
            thread.join(60)
        assert not warm_errors, warm_errors
        wait_until(lambda: len(readers_of(server)) == 2, timeout=30)
        baseline = tree_rss(server)

        errors: list[str] = []
        deadline = time.monotonic() + DURATION
        clients = [Client(port, seed, refs, deadline, errors) for seed in range(CLIENTS)]
        threads = [threading.Thread(target=c.run, name=f"load-client-{i}", daemon=True)
                   for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        peak, done = baseline, threading.Event()
        while not done.is_set():
            peak = max(peak, tree_rss(server))
            done.wait(0.1)                       # sampling memory, not synchronising
            if not any(t.is_alive() for t in threads):
                done.set()
            assert time.monotonic() < deadline + 90, "clients did not finish"
        for thread in threads:
            thread.join(5)

        assert not errors, errors[:5]
        totals = {op: sum(c.counts[op] for c in clients) for op in OPERATIONS}
        assert all(count >= 5 for count in totals.values()), totals
        assert all(sum(c.counts.values()) >= 10 for c in clients)
        budget = baseline + (CACHE_MB + OVERHEAD_MB) * 2**20
        mib = 2**20
        print(f"\nload: {sum(totals.values())} requests {totals}, "
              f"{sum(c.samples for c in clients) / 1e6:.1f} M samples checked; server RSS "
              f"baseline {baseline / mib:.0f} MiB, peak {peak / mib:.0f} MiB, bound "
              f"{budget / mib:.0f} MiB")
        assert peak <= budget, (baseline / mib, peak / mib)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


def test_cached_answers_within_one_block_are_exact_from_many_threads(server, main_path):
    """Answers inside one cache block (assembled by one concatenate into the connection's
    area) and across a block edge are exact, asked again and again by several threads on
    a shared-memory connection and on a socket-only one."""
    import settings
    with get_connection(server.port, host="127.0.0.1", timeout=30) as shm, \
            get_connection(server.port, host="127.0.0.1", timeout=30,
                           shared_memory=False) as plain:
        views = [c.root.open_file("main.mefd") for c in (shm, plain)]
        names = list(views[0].set_active_channels())
        views[1].set_active_channels(names)
        ref = reference(main_path, names)
        n = ref.shape[1]
        size = int(round(settings.BLOCK_SECONDS * float(views[0].get_info()["fs"])))
        windows = []
        for block in (0, 3, (n - 1) // size):
            lo = block * size
            hi = min(lo + size, n)
            windows += [(lo, 1), (lo, hi - lo), (lo + 17, 37), (hi - 1, 1), (hi - 5, 5)]
            if hi + 4 <= n:
                windows.append((hi - 3, 7))  # across the edge: the per-block path
        failures: list[str] = []

        def ask(view, seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for i in rng.permutation(len(windows) * 6) % len(windows):
                    start, length = windows[i]
                    got = view.get_stream_segment(length, start)
                    if not same(got, ref[:, start:start + length]):
                        failures.append(f"[{start}, {start + length}) differs")
            except Exception:  # reported by the main thread
                failures.append(traceback.format_exc())

        threads = [threading.Thread(target=ask, args=(views[i % 2], i)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a client thread hung"
        assert not failures, failures[:3]


def test_serving_threads_end_when_their_clients_leave(server):
    """A serving thread waits for the next request in a blocking read (no poll first);
    a client that closes its connection, or vanishes without a word, still ends it."""
    import socket
    baseline = threading.active_count()
    conns = [get_connection(server.port, host="127.0.0.1", timeout=30) for _ in range(8)]
    for c in conns:
        c.ping()  # a round trip on every connection
        c.root.open_file("main.mefd").get_stream_segment(16, 0)
    assert threading.active_count() > baseline
    for i, c in enumerate(conns):
        if i % 2:  # vanish: the socket is shut down under the connection, no close message
            c._channel.stream.sock.shutdown(socket.SHUT_RDWR)
        c.close()
    assert wait_until(lambda: threading.active_count() <= baseline, timeout=30), \
        f"{threading.active_count() - baseline} serving threads left"
