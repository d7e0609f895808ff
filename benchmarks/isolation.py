"""Issue 19 / 18 section 2, measured: fairness between clients, a damaged session beside a
healthy client, and what telling a crash's cause costs per reader task.

    python -m benchmarks.isolation            # ~2 min on 2 cores

Rows, each configuration side by side in the same run (the machine may be shared):

- **fairness**: client B's cold 10 s read (16 ch) alone, and right after client A queued
  300 callback requests, with the reader queue round-robin by connection (now) and FIFO
  (before: ``FairQueue`` with every round 0). Fresh server each time, 2 readers.
- **isolation**: a healthy client reading 2 s windows for 20 s, alone and while another
  client reads a session that crashes pymef, with the crash charged to its task (now)
  and to every task in flight without quarantine (before): reads ok / failed, restarts.
- **board**: cost per task of noting it on the crash board (``_tracked_task`` vs ``_task``).
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np


def _recording(root: str) -> None:
    from software.mef3.demo import write_demo_recording
    write_demo_recording(os.path.join(root, "big.mefd"), n_channels=16, minutes=10,
                         gap_seconds=None)


def _damaged(root: str) -> None:
    from software.mef3.block_table import ENTRY, HEADER_BYTES
    src, dst = os.path.join(root, "big.mefd"), os.path.join(root, "damaged.mefd")
    shutil.copytree(src, dst)
    channel = sorted(n[:-5] for n in os.listdir(dst) if n.endswith(".timd"))[0]
    base = os.path.join(dst, f"{channel}.timd", f"{channel}-000000.segd", f"{channel}-000000")
    entries = np.fromfile(base + ".tidx", dtype=np.uint8)[HEADER_BYTES:].view(ENTRY)
    with open(base + ".tdat", "r+b") as fh:
        for offset in entries["file_offset"]:
            fh.seek(int(offset) + 36)
            fh.write((0x7FFFFFFF).to_bytes(4, "little"))


def fairness_once(root: str, queued: bool, fifo: bool) -> float:
    """Seconds client B waits for a cold 10 s read (after A's 300 requests if ``queued``)."""
    from software import MefStreamServer, get_connection
    from software.readers import fair
    original = fair.FairQueue._round
    if fifo:
        fair.FairQueue._round = lambda self, priority, owner: 0
    try:
        with MefStreamServer(port=0, data_root=root, workers=2, prefetch=0,
                             cache_mb=512) as srv:
            srv.pool.warm_up()
            a = get_connection(srv.port, host="127.0.0.1")
            b = get_connection(srv.port, host="127.0.0.1")
            try:
                sa, sb = a.root.open_file("big.mefd"), b.root.open_file("big.mefd")
                fs = float(dict(sb.get_info())["fs"])
                n = int(2 * fs)
                delivered = []
                if queued:
                    for i in range(300):   # a block already cached is answered at once
                        if sa.get_stream_segment(n, i * n, delivered.append) is not False:
                            delivered.append(None)
                started = time.perf_counter()
                sb.get_stream_segment(int(10 * fs), int(300 * fs))
                waited = time.perf_counter() - started
                deadline = time.monotonic() + 120
                while len(delivered) < (300 if queued else 0) and time.monotonic() < deadline:
                    time.sleep(0.01)   # A's answers arrive before its connection closes
                return waited
            finally:
                a.close()
                b.close()
    finally:
        fair.FairQueue._round = original


def _before(monkey: list) -> None:
    """The rule before the fix: every task in flight counts each crash; no quarantine."""
    from concurrent.futures import Future

    from software.readers.attempts import Attempts
    original = Attempts._after_crash

    def charge_everyone(self, result, fn, args, attempt, consume, verdict, task_id):
        verdict.result()
        everyone: Future = Future()
        everyone.set_result({task_id: None})
        return original(self, result, fn, args, attempt, consume, everyone, task_id)

    Attempts._after_crash = charge_everyone
    monkey.append(lambda: setattr(Attempts, "_after_crash", original))


def isolation_once(root: str, damaged: bool, before: bool = False,
                   seconds: float = 20.0) -> tuple[int, int, int]:
    """(reads ok, reads failed, reader restarts) of a healthy client over ``seconds``."""
    from software import MefStreamServer, StreamError, get_connection
    undo: list = []
    if before:
        _before(undo)
    with MefStreamServer(port=0, data_root=root, workers=2, prefetch=1, cache_mb=8,
                         block_seconds=1.0) as srv:
        if before:
            srv.pool.quarantine.limit = 0
        srv.pool.warm_up()
        good = get_connection(srv.port, host="127.0.0.1")
        bad = get_connection(srv.port, host="127.0.0.1")
        stop = threading.Event()

        def hammer() -> None:
            stream = bad.root.open_file("damaged.mefd")
            while not stop.is_set():
                try:
                    stream.get_stream_segment(5120, 0)
                except StreamError:
                    pass

        thread = threading.Thread(target=hammer, daemon=True) if damaged else None
        try:
            stream = good.root.open_file("big.mefd")
            n = int(dict(stream.get_info())["n_samples"])
            if thread is not None:
                thread.start()
            ok = failed = 0
            deadline = time.monotonic() + seconds
            i = 0
            while time.monotonic() < deadline:
                try:
                    stream.get_stream_segment(512, (i * 512) % (n - 512))
                    ok += 1
                except StreamError:
                    failed += 1
                i += 1
        finally:
            stop.set()
            if thread is not None:
                thread.join(30)
            good.close()
            bad.close()
            for step in undo:
                step()
        return ok, failed, srv.pool.restarts


def board_cost(calls: int = 200_000) -> tuple[float, float]:
    """Microseconds per call of ``_task`` and ``_tracked_task`` (a no-op task)."""
    from software.readers.board import Board, _tracked_task
    from software.readers.worker import _task
    forgets = (0, ())
    with Board() as board:
        times = []
        for fn, args in ((_task, (forgets, int)), (_tracked_task, (board.path, 7, forgets, int))):
            started = time.perf_counter()
            for _ in range(calls):
                fn(*args)
            times.append((time.perf_counter() - started) / calls * 1e6)
    return times[0], times[1]


def main() -> int:
    root = tempfile.mkdtemp(prefix="mefstream-bench-isolation-")
    try:
        print(f"recording 16 ch x 10 min in {root} ...", flush=True)
        _recording(root)
        _damaged(root)
        print("\n| fairness: B's cold 10 s read | alone | after A's 300, round-robin | "
              "after A's 300, FIFO (before) |\n|---|---|---|---|")
        alone, fair_, fifo = [], [], []
        for _ in range(3):
            alone.append(fairness_once(root, queued=False, fifo=False))
            fair_.append(fairness_once(root, queued=True, fifo=False))
            fifo.append(fairness_once(root, queued=True, fifo=True))
        a, f, o = (statistics.median(x) for x in (alone, fair_, fifo))
        print(f"| median of 3 (s) | {a:.3f} | {f:.3f} ({f / a:.1f}x) | {o:.3f} ({o / a:.1f}x) |")
        print("\n| isolation: healthy client, 20 s | reads ok | failed | reader restarts |"
              "\n|---|---|---|---|")
        for label, damaged, before in (
                ("alone", False, False),
                ("beside a client reading a damaged session", True, False),
                ("... the rule before: every task charged, no quarantine", True, True)):
            ok, failed, restarts = isolation_once(root, damaged, before)
            print(f"| {label} | {ok} | {failed} | {restarts} |", flush=True)
        plain, tracked = board_cost()
        print(f"\n| board: per task | _task | _tracked_task |\n|---|---|---|\n"
              f"| microseconds | {plain:.2f} | {tracked:.2f} (+{tracked - plain:.2f}) |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
