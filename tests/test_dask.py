"""to_dask_array on a LocalCluster of two worker processes: exact chunks, a whole-file
reduction equal to MefReader's, tasks carrying plain values, pinning to workers."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

from tests.util import FS, reference

distributed = pytest.importorskip("distributed", reason="dask[distributed] is in "
                                  "requirements.txt; install it")
import dask  # noqa: E402
import dask.array as da  # noqa: E402

from examples.dask_reduction import reduce  # noqa: E402
from software.handoff import session  # noqa: E402
from software.handoff.dask import SessionSource, to_dask_array  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _minute_rms(ref: np.ndarray, minute: int) -> np.ndarray:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for m in range(0, ref.shape[1], minute):
            out.append(np.sqrt(np.nanmean(ref[:, m:m + minute] ** 2, axis=1)))
    return np.stack(out, axis=1)


def test_whole_file_mean_and_rms_per_minute_equal_mefreader(client, server, main_path):
    x = to_dask_array(f"127.0.0.1:{server.port}", "main.mefd", chunk_seconds=60)
    names = ["Cz", "Fp1", "Fp2", "O1", "O2", "index"]
    ref = reference(main_path, names)
    assert x.shape == ref.shape and x.chunks == ((6,), (15360, 15360, 15360, 1280))
    client.run(session.close_connections)
    mean, rms = dask.compute(*reduce(x))
    np.testing.assert_allclose(mean, np.nanmean(ref, axis=1), rtol=1e-12)
    np.testing.assert_allclose(rms, _minute_rms(ref, int(60 * FS)), rtol=1e-12)
    assert np.isnan(ref).any()                       # the reduction had gaps to skip
    opened = client.run(session.open_sessions)        # each worker: one connection, its own
    assert sum(1 for v in opened.values() if v) == 2
    assert all(v in ((), (("127.0.0.1", server.port, "main.mefd"),)) for v in opened.values())


def test_chunks_are_exact_for_any_size_and_channels(client, server, main_path):
    names = ["index", "O1"]
    ref = reference(main_path, names)
    x = to_dask_array(("127.0.0.1", server.port), "main.mefd", channels=names,
                      chunk_seconds=7.3)
    assert x.chunks[1][0] == round(7.3 * FS)
    assert np.array_equal(x.compute(), ref, equal_nan=True)
    assert np.array_equal(x[:, 1000:20000:7].compute(), ref[:, 1000:20000:7], equal_nan=True)


def test_tasks_carry_only_plain_values(server):
    x = to_dask_array(f"127.0.0.1:{server.port}", "main.mefd", chunk_seconds=60)
    sources = [v for v in dict(x.dask).values()
               if isinstance(getattr(v, "value", v), SessionSource)]
    assert len(sources) == 1
    source = getattr(sources[0], "value", sources[0])
    assert len(pickle.dumps(source)) < 1000
    assert (source.address, source.path) == (("127.0.0.1", server.port), "main.mefd")


def test_pinned_reads_run_only_on_the_chosen_worker(client, server, main_path):
    first, other = sorted(client.scheduler_info()["workers"])
    x = to_dask_array(f"127.0.0.1:{server.port}", "main.mefd", chunk_seconds=10,
                      workers=first)
    client.run(session.close_connections)
    with dask.config.set({"optimization.fuse.active": False}):
        total = float(da.nansum(x * 2).compute())
    ref = reference(main_path, ["Cz", "Fp1", "Fp2", "O1", "O2", "index"])
    assert total == pytest.approx(float(np.nansum(ref * 2)), rel=1e-12)
    opened = client.run(session.open_sessions)
    assert opened[first] and not opened[other]


def test_example_runs(tmp_path_factory):
    from software.mef3.demo import write_demo_recording
    root = tmp_path_factory.mktemp("demo")
    write_demo_recording(str(root / "demo.mefd"), n_channels=4, minutes=3,
                         gap_seconds=(60.0, 70.0))
    result = subprocess.run([sys.executable, "examples/dask_reduction.py", "--data-root",
                             str(root)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "4 channels x 46080 samples in 3 chunks of 60 s, on 2 workers" in result.stdout


def test_default_channels_after_another_selection(server):
    """channels=None means the session's default even after this process's view of the
    session was set to other channels (it kept the old selection before)."""
    address = ("127.0.0.1", server.port)
    session.read_range(address, "main.mefd", ("index",), 0, 10)
    info = session.session_info(address, "main.mefd")
    assert info["channels"] == ("Cz", "Fp1", "Fp2", "O1", "O2", "index")
    assert session.read_range(address, "main.mefd", None, 0, 10).shape == (6, 10)
