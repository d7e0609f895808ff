"""Hand-off benchmarks: PyTorch windows/s and a dask reduction, through the service vs
direct MefReader reads, side by side.

    python -m benchmarks.handoff            # 32 ch x 256 Hz x 30 min, 2 repeats
    python -m benchmarks.handoff --quick    # 16 ch x 10 min, 1 repeat

Rows (every row starts its own server, ``python start.py --workers 2 --prefetch 1``, so
its cache is cold; the recording lies in the OS page cache for both sides):

- torch: one epoch of 4 s windows every 1 s (BlockRunSampler, 64 s runs, shuffled) with
  ``DataLoader(batch_size=16, num_workers=2)``, windows/s; epoch 1 (server cache cold)
  and epoch 2 (cached). Direct: the same loader over a dataset whose workers call
  ``MefReader.get_data`` for each window.
- dask: per-channel mean and RMS per minute of the whole file on a LocalCluster (2 worker
  processes, 1 thread each), seconds; direct: the same reduction over chunks each read
  with ``MefReader.get_data`` by the worker.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    import os
    import sys
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(_root)
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.handoff", *sys.argv[1:]])

import argparse
import os
import sys
import time
import warnings

import numpy as np

from benchmarks.common import (
    DATA_DIR,
    Dataset,
    ServerProcess,
    ensure_recording,
    machine_info,
    markdown_table,
    median,
    session_info,
    warmup_dataset,
)

WINDOW_S, STRIDE_S, BATCH = 4.0, 1.0, 16

_readers: dict = {}


def _reader(path: str):
    """This process's MefReader of ``path`` (opened on first use)."""
    reader = _readers.get(path)
    if reader is None:
        from mef_tools.io import MefReader
        reader = _readers[path] = MefReader(path)
    return reader


class DirectWindows:
    """A torch-style dataset of the same windows, read with MefReader in the worker."""

    def __init__(self, path: str, info: dict) -> None:
        self.path = path
        self.channels = list(info["channels"])
        self.fs = float(info["fs"])
        self.start_uutc = int(info["start_uutc"])
        self.window = int(round(WINDOW_S * self.fs))
        self.stride = int(round(STRIDE_S * self.fs))
        self.n = (int(info["n_samples"]) - self.window) // self.stride + 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch
        t0 = self.start_uutc + int(round(i * self.stride / self.fs * 1e6))
        t1 = t0 + int(round(self.window / self.fs * 1e6))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = np.asarray(_reader(self.path).get_data(self.channels, t0, t1))
        return torch.from_numpy(np.ascontiguousarray(data[:, :self.window]))


class DirectSource:
    """An array-like for dask.array.from_array reading chunks with MefReader."""

    def __init__(self, path: str, info: dict) -> None:
        self.path = path
        self.channels = list(info["channels"])
        self.fs = float(info["fs"])
        self.start_uutc = int(info["start_uutc"])
        self.shape = (len(self.channels), int(info["n_samples"]))
        self.dtype = np.dtype("float64")
        self.ndim = 2

    def __getitem__(self, key):
        cols = key[1]
        a, b, _ = cols.indices(self.shape[1])
        t0 = self.start_uutc + int(round(a / self.fs * 1e6))
        t1 = self.start_uutc + int(round(b / self.fs * 1e6))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = np.asarray(_reader(self.path).get_data(self.channels, t0, t1))
        out = np.full((self.shape[0], b - a), np.nan)
        n = min(b - a, data.shape[1])
        out[:, :n] = data[:, :n]
        return out[key[0]]


def _epoch(loader) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = sum(batch.shape[0] for batch in loader)
    return n, time.perf_counter() - t0


def torch_row(ds: Dataset, info: dict, repeats: int) -> list[list[str]]:
    from torch.utils.data import DataLoader

    from software.handoff import BlockRunSampler, WindowDataset
    from software.handoff.session import close_connections
    service = {1: [], 2: []}
    direct = {1: [], 2: []}
    for _ in range(repeats):
        with ServerProcess(ds.root, prefetch=1, workers=2) as srv:
            data = WindowDataset(("127.0.0.1", srv.port), ds.name, WINDOW_S,
                                 stride_seconds=STRIDE_S)
            close_connections()          # the workers open their own
            for epoch in (1, 2):
                loader = DataLoader(data, batch_size=BATCH, num_workers=2,
                                    sampler=BlockRunSampler(data, 64, seed=epoch))
                n, secs = _epoch(loader)
                service[epoch].append(n / secs)
        plain = DirectWindows(ds.path, info)
        for epoch in (1, 2):
            loader = DataLoader(plain, batch_size=BATCH, num_workers=2,
                                sampler=BlockRunSampler(data, 64, seed=epoch))
            n, secs = _epoch(loader)
            direct[epoch].append(n / secs)
    rows = []
    for epoch, label in ((1, "cold server cache"), (2, "cached")):
        s, d = median(service[epoch]), median(direct[epoch])
        rows.append([f"torch: {n} windows 4 s x {len(info['channels'])} ch, 2 workers, "
                     f"epoch {epoch} ({label})", f"{s:.0f} windows/s", f"{d:.0f} windows/s",
                     f"{s / d:.2f}x"])
    return rows


def dask_row(ds: Dataset, info: dict, repeats: int) -> list[list[str]]:
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    from examples.dask_reduction import reduce
    from software.handoff import to_dask_array
    from software.handoff.session import close_connections
    service, direct = [], []
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        for _ in range(repeats):
            with ServerProcess(ds.root, prefetch=1, workers=2) as srv:
                client.run(close_connections)
                x = to_dask_array(("127.0.0.1", srv.port), ds.name, chunk_seconds=60)
                t0 = time.perf_counter()
                mean_s, rms_s = dask.compute(*reduce(x))
                service.append(time.perf_counter() - t0)
            y = da.from_array(DirectSource(ds.path, info), chunks=(len(info["channels"]),
                              int(60 * info["fs"])), asarray=False, lock=False,
                              meta=np.empty((0, 0)))
            client.run(_readers.clear)
            t0 = time.perf_counter()
            mean_d, rms_d = dask.compute(*reduce(y))
            direct.append(time.perf_counter() - t0)
            assert np.allclose(mean_s, mean_d, equal_nan=True)
    s, d = median(service), median(direct)
    return [["dask: mean + RMS per minute, whole file, LocalCluster 2 x 1", f"{s:.2f} s",
             f"{d:.2f} s", f"{d / s:.2f}x faster" if s < d else f"{s / d:.2f}x slower"]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--only", default="torch,dask")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 2)
    root = os.path.join(DATA_DIR, "handoff")
    ds = (Dataset(root, "handoff.mefd", n_channels=16, minutes=10.0) if args.quick
          else Dataset(root, "handoff.mefd", n_channels=32, minutes=30.0))
    os.makedirs(root, exist_ok=True)
    ensure_recording(ds)
    ensure_recording(warmup_dataset(root))
    info = session_info(ds.path)
    rows = []
    if "torch" in args.only:
        rows += torch_row(ds, info, repeats)
    if "dask" in args.only:
        rows += dask_row(ds, info, repeats)
    print(f"repeats: {repeats} (medians)")
    for label, value in machine_info():
        print(f"{label}: {value}")
    print(markdown_table(["row", "mefstream", "direct MefReader", "ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
