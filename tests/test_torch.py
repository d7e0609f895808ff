"""WindowDataset and BlockRunSampler: exact windows, DataLoader workers, fork safety."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from software import InvalidArgumentError
from tests.util import reference

torch = pytest.importorskip(
    "torch", reason="torch is not a core requirement: pip install -r requirements-torch.txt")
from torch.utils.data import DataLoader  # noqa: E402

from software.handoff.torch import BlockRunSampler, WindowDataset  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNELS = ["index", "Cz", "O2"]


@pytest.fixture(scope="module")
def dataset(server):
    return WindowDataset(f"127.0.0.1:{server.port}", "main.mefd", 2.0, channels=CHANNELS,
                         stride_seconds=1.5)


@pytest.fixture(scope="module")
def ref(main_path):
    return reference(main_path, CHANNELS)


def _expected(ds, ref, i):
    a = i * ds.stride
    return ref[:, a:a + ds.window]


def test_windows_are_exact(dataset, ref):
    ds = dataset
    assert ds.channels == tuple(CHANNELS) and ds.window == 512 and ds.stride == 384
    assert len(ds) == (ref.shape[1] - 512) // 384 + 1
    for i in (0, 1, 27, 40, len(ds) - 1, -1):   # 27, 40: across the gap and segment 2
        got = ds[i]
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        assert np.array_equal(got.numpy(), _expected(ds, ref, i % len(ds)), equal_nan=True)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_arguments_are_checked(server):
    address = ("127.0.0.1", server.port)
    with pytest.raises(InvalidArgumentError, match="window_seconds"):
        WindowDataset(address, "main.mefd", 10_000.0)
    with pytest.raises(InvalidArgumentError, match="window_seconds"):
        WindowDataset(address, "main.mefd", -1)
    with pytest.raises(InvalidArgumentError, match="port"):
        WindowDataset("127.0.0.1", "main.mefd", 1.0)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_every_window_once(dataset, ref, context):
    ds = dataset
    first = ds[3]          # the main process now holds a cached connection of its own
    sampler = BlockRunSampler(ds, run_seconds=24, seed=5)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2,
                        multiprocessing_context=context)
    order = list(sampler.__class__(ds, run_seconds=24, seed=5))   # the same order
    got = torch.cat(list(loader))
    assert got.shape == (len(ds), 3, ds.window)
    for row, i in enumerate(order):
        assert np.array_equal(got[row].numpy(), _expected(ds, ref, i), equal_nan=True)
    # the forked workers left the parent's connection alone: it still reads exactly
    assert np.array_equal(ds[3].numpy(), first.numpy(), equal_nan=True)


def test_dataset_pickles_without_a_connection(dataset):
    dataset[0]
    blob = pickle.dumps(dataset)
    assert len(blob) < 2000
    copy = pickle.loads(blob)
    assert np.array_equal(copy[1].numpy(), dataset[1].numpy(), equal_nan=True)


def test_block_run_sampler_keeps_runs_and_covers_everything(dataset):
    sampler = BlockRunSampler(dataset, run_seconds=15, seed=1)   # 15 s / 1.5 s = 10 windows
    assert sampler.run_windows == 10
    order = list(sampler)
    assert sorted(order) == list(range(len(dataset))) and len(sampler) == len(dataset)
    runs = {r.start: list(r) for r in sampler.runs()}
    assert len(runs) == 13 and len(runs[120]) == 3               # 123 windows
    at, starts = 0, []
    while at < len(order):                                       # whole runs, one by one
        run = runs[order[at]]
        assert order[at:at + len(run)] == run
        starts.append(run[0])
        at += len(run)
    assert starts != sorted(starts)                              # in shuffled order
    assert list(sampler) != order                                # a new order each epoch
    plain = list(BlockRunSampler(dataset, shuffle=False))
    assert plain == list(range(len(dataset)))
    dropped = BlockRunSampler(dataset, run_seconds=15, drop_last=True)
    assert len(dropped) == len(dataset) // 10 * 10


def test_example_runs(tmp_path_factory):
    from software.mef3.demo import write_demo_recording
    root = tmp_path_factory.mktemp("demo")
    write_demo_recording(str(root / "demo.mefd"), n_channels=8, minutes=3,
                         gap_seconds=(60.0, 70.0))
    result = subprocess.run([sys.executable, "examples/torch_windows.py", "--data-root",
                             str(root), "--steps", "6"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "windows of 1024 samples x 8 channels" in result.stdout
    assert "over 6 steps of 16 windows" in result.stdout
