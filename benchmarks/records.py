"""Records: get_records of a one-hour window of a 24 h session with 10,000 records, and how
soon a follower sees a live marker compared with a sample chunk of the same stream.

    python -m benchmarks.records [--windows 300] [--records 10000] [--markers 300]

Row ``get_records (warm)``: a server subprocess (``start.py``, 2 readers) serves
``records/day.mefd`` (24 h, 2 channels at 64 Hz, 10,000 session-level Notes and EDFAs at
random times, written once and cached under ``benchmarks/data/records``); a client
(``get_connection``) asks ``get_records(t, t + 1 h)`` for random ``t``: time per call,
median and p99, after one call has read the records into the server. Reference, in the
same run: what a script does without the service, ``MefReader`` opened once and
``get_annotations()`` filtered to the window per call. Row ``cold``: the first call of a
fresh server (a reader process reads the records).

Rows ``marker -> follower``: a live stream (32 ch x 1 kHz float32) served by a server in
this process, the producer pushing 10-sample chunks every 2 ms; a follower in another
process follows the samples (``next_or_wait``) and sees the markers either through
``watch_markers`` (a callback per marker) or with their chunk (an iterator with
``records=True``). Every 20 pushes the producer appends a marker (at the head) and then
pushes the samples. Both followers run at once on the same stream (side by side): push ->
follower latency of the markers beside that of the sample chunks of the plain follower,
median and p99, and their ratio; then the chunks that hold a marker in each follower (a
busier moment: the other follower's marker goes out too), and the producer's own
``append_marker`` call, which an iterator's marker latency includes (it is timed from the
marker's push, its chunk from the samples' push after it).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import (
    DATA_DIR,
    ROOT,
    ServerProcess,
    ensure_recording,
    machine_info,
    markdown_table,
    warmup_dataset,
)

START = 1_600_000_000_000_000
HOUR = 3_600_000_000


def ensure_day(root: str, n_records: int, log=print) -> str:
    """``day.mefd``: 24 h x 2 channels at 64 Hz (zeros) with ``n_records`` records."""
    from software.mef3.record_writer import write_records
    from software.mef3.writer import write_session
    path = os.path.join(root, "day.mefd")
    marker = path + f".{n_records}.done"
    if os.path.exists(marker):
        return path
    log(f"writing {path} (24 h, {n_records} records) ...")
    t0 = time.perf_counter()
    n = 24 * 3600 * 64
    write_session(path, {"a": np.zeros(n), "b": np.zeros(n)}, 64.0, START, overwrite=True)
    rng = np.random.default_rng(1)
    times = np.sort(START + rng.integers(0, 24 * HOUR, n_records))
    records = []
    for k, t in enumerate(times.tolist()):
        text = f"event {k}"
        if k % 2:
            d = int(rng.integers(1, 30_000_000))
            records.append((t, "EDFA", text, d, None, (("duration", d), ("text", text))))
        else:
            records.append((t, "Note", text, None, None, (("text", text),)))
    write_records(path, records)
    open(marker, "w").close()
    log(f"  written in {time.perf_counter() - t0:.1f} s")
    return path


def direct_windows(path: str, starts: list[int]) -> list[float]:
    """MefReader opened once; get_annotations() filtered to each window."""
    from mef_tools.io import MefReader
    reader = MefReader(path)
    out = []
    for t in starts:
        t0 = time.perf_counter()
        found = [a for a in reader.get_annotations()
                 if a["time"] < t + HOUR and a["time"] + a.get("duration", 0) > t
                 or t <= a["time"] < t + HOUR]
        out.append(time.perf_counter() - t0)
        assert found is not None
    return out


def file_rows(args) -> list[list[str]]:
    root = os.path.join(DATA_DIR, "records")
    os.makedirs(root, exist_ok=True)
    ensure_recording(warmup_dataset(root), log=print)
    path = ensure_day(root, args.records)
    rng = np.random.default_rng(7)
    starts = (START + rng.integers(0, 23 * HOUR, args.windows)).tolist()
    with ServerProcess(root, prefetch=1, cache_mb=64) as server:
        with server.connect() as conn:
            svc = conn.root.open_file("day.mefd")
            t0 = time.perf_counter()
            first = svc.get_records(starts[0], starts[0] + HOUR)
            cold = time.perf_counter() - t0
            warm, sizes, wire = [], [], []
            proxy = svc.proxy
            for t in starts:
                a = time.perf_counter()
                found = svc.get_records(t, t + HOUR)
                b = time.perf_counter()
                proxy.get_records(t, t + HOUR)
                c = time.perf_counter()
                warm.append(b - a)
                wire.append(c - b)
                sizes.append(len(found))
    direct = direct_windows(path, starts)
    ms = lambda v: f"{v * 1e3:.2f} ms"  # noqa: E731
    med, p99 = np.median(warm), np.percentile(warm, 99)
    dmed = np.median(direct)
    print(f"records per one-hour window: median {int(np.median(sizes))}, first call found "
          f"{len(first)}")
    return [
        ["get_records 1 h window, warm (Records)", f"{ms(med)} (p99 {ms(p99)})",
         f"direct get_annotations + filter {ms(dmed)}", f"{dmed / med:.0f}x faster",
         "<= 10 ms", "yes" if med <= 0.010 else "NO"],
        ["get_records 1 h window, warm (wire tuples)",
         f"{ms(np.median(wire))} (p99 {ms(np.percentile(wire, 99))})", "", "", "", ""],
        ["get_records, cold (reader reads 10,000 records)", ms(cold), "", "", "", ""],
    ]


# ---- markers ------------------------------------------------------------------------------

def follower(port: int, total: int, mode: str) -> None:
    """Run in another process: follow samples and markers, print arrival times.

    ``watch``: markers through ``watch_markers``, samples with a plain iterator; ``iter``:
    one iterator with ``records=True`` (a marker arrives with its chunk).
    """
    sys.path.insert(0, ROOT)
    from software import get_connection
    from software.client.iterators import StreamSegmentIterator
    conn = get_connection(port, host="127.0.0.1")
    svc = conn.root
    marks = []
    if mode == "watch":
        svc.watch_markers(lambda r: marks.append((r.index, time.monotonic())))
    it = StreamSegmentIterator(10, start=0, records=mode == "iter")
    chunks = []
    print("ready", flush=True)
    while it.position < total:
        got = it.next_or_wait(svc, timeout=30)
        if got is False:
            break
        now = time.monotonic()
        chunks.append((it.position, now))
        if mode == "iter":
            marks += [(r.index, now) for r in got[1]]
    time.sleep(0.5)          # the last markers' callbacks (not a synchronisation)
    for index, at in marks:
        print(f"marker {index} {at!r}", flush=True)
    for index, at in chunks:
        print(f"chunk {index} {at!r}", flush=True)
    conn.close()


def marker_run(args) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Latencies (seconds) of the markers and of the sample chunks of two followers of the
    same stream at the same time: ``watch`` and ``iter`` (see :func:`follower`)."""
    from software import MefStreamServer
    from software.live.source import LiveStream
    stream = LiveStream("bench", [f"c{k}" for k in range(32)], 1000.0, "float32",
                        history_seconds=30)
    pushes = args.markers * 20
    total = pushes * 10
    modes = ("watch", "iter")
    calls: list[float] = []          # the producer's append_marker calls
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        procs = {mode: subprocess.Popen([sys.executable, "-m", "benchmarks.records",
                                         "--follower", str(srv.port), str(total), mode],
                                        cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for mode in modes}
        for proc in procs.values():
            assert proc.stdout.readline().strip() == "ready"
        pushed_chunk, pushed_marker = {}, {}
        block = np.zeros((32, 10), np.float32)
        for k in range(pushes):
            time.sleep(0.002)                       # a producer's pace (not synchronising)
            if k % 20 == 10:
                index = stream.head
                pushed_marker[index] = time.monotonic()
                stream.append_marker(f"stim {k}")
                calls.append(time.monotonic() - pushed_marker[index])
            pushed_chunk[stream.head + 10] = time.monotonic()
            stream.append_stream_segment_data(block)
        outs = {mode: proc.communicate(timeout=120)[0] for mode, proc in procs.items()}
        stream.close()
    result = {}
    holding = {index + 10 for index in pushed_marker}       # chunks that hold a marker
    for mode, out in outs.items():
        marks, chunks, marked = [], [], []
        for line in out.splitlines():
            kind, index, at = line.split()
            if kind == "marker" and int(index) in pushed_marker:
                marks.append(float(at) - pushed_marker[int(index)])
            elif kind == "chunk" and int(index) in pushed_chunk:
                chunks.append(float(at) - pushed_chunk[int(index)])
                if int(index) in holding:
                    marked.append(float(at) - pushed_chunk[int(index)])
        result[mode] = (np.array(marks), np.array(chunks))
        result[mode + " marked"] = (np.array(marked), np.array(marked))
    result["calls"] = (np.array(calls), np.array(calls))
    return result


def marker_rows(args) -> list[list[str]]:
    ms = lambda v: f"{v * 1e3:.2f} ms"  # noqa: E731
    p99 = lambda v: f"{ms(np.median(v))} (p99 {ms(np.percentile(v, 99))})"  # noqa: E731
    runs = marker_run(args)
    watched, plain = runs["watch"]
    iterated, chunks = runs["iter"]
    base = np.median(plain)
    rows = []
    for how, marks in (("watch_markers", watched), ("iterator records=True", iterated)):
        ratio = np.median(marks) / base
        rows.append([f"marker push -> follower ({how})",
                     f"{p99(marks)}, {len(marks)} markers",
                     f"sample chunk push -> plain follower {p99(plain)}", f"{ratio:.2f}",
                     "<= chunk latency", "yes" if ratio <= 1.1 else "NO"])
    rows.append(["sample chunk push -> follower (iterator records=True)",
                 f"{p99(chunks)}, {len(chunks)} chunks",
                 f"plain follower {p99(plain)}", f"{np.median(chunks) / base:.2f}", "", ""])
    rows.append(["sample chunks that hold a marker: iterator records=True",
                 p99(runs["iter marked"][0]), f"plain follower {p99(runs['watch marked'][0])}",
                 f"{np.median(runs['iter marked'][0]) / np.median(runs['watch marked'][0]):.2f}",
                 "", ""])
    rows.append(["the producer's append_marker call (before its samples are pushed)",
                 p99(runs["calls"][0]), "", "", "", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--markers", type=int, default=300)
    parser.add_argument("--only", choices=("file", "markers"), default=None)
    parser.add_argument("--follower", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follower:
        follower(int(args.follower[0]), int(args.follower[1]), args.follower[2])
        return
    for label, value in machine_info():
        print(f"{label}: {value}")
    rows = []
    if args.only in (None, "file"):
        rows += file_rows(args)
    if args.only in (None, "markers"):
        rows += marker_rows(args)
    print(markdown_table(["row", "measured", "reference (same run)", "ratio", "target",
                          "met"], rows))


if __name__ == "__main__":
    if __package__ in (None, ""):
        os.execv(sys.executable, [sys.executable, "-m", "benchmarks.records", *sys.argv[1:]])
    main()
