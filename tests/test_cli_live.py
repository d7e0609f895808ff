"""The command line against live streams: record a pushed stream, and clear errors for
commands that need the other kind of server."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import warnings

import numpy as np

from software import MefStreamServer
from software.live.replay import Replay
from software.live.source import LiveStream
from tests.test_quickstart import ROOT
from tests.util import reference, wait_until

#: The default-rate channels of main.mefd in file order (the rows of its root stream).
NAMES = ("Cz", "Fp1", "Fp2", "O1", "O2", "index")


def cli(*args: str, port: int, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "software", *args, "--port", str(port),
                           "--host", "127.0.0.1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_record_writes_what_a_producer_pushes(tmp_path):
    stream = LiveStream("rig", ["a", "b"], 500.0, history_seconds=10)
    stop = threading.Event()

    def produce() -> None:      # 10-sample pushes at about real time, values = index
        k = 0
        while not stop.wait(0.02):
            i = np.arange(k, k + 10, dtype=np.float64)
            stream.append_stream_segment_data(np.stack([i / 100, -i / 100]))
            k += 10

    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        try:
            out = tmp_path / "rec.mefd"
            done = cli("record", str(out), "--seconds", "1.5", port=srv.port)
            listed = cli("ls", port=srv.port)
            info = cli("info", "rig", port=srv.port)
        finally:
            stop.set()
            producer.join(5)
    assert done.returncode == 0, done.stderr
    assert "recorded" in done.stderr and "Traceback" not in done.stderr
    assert listed.returncode == 0 and "rig  (the live stream served at the root)" in listed.stdout
    assert info.returncode == 0, info.stderr            # the name ls gives, info reads
    assert "rig" in info.stdout and "growing" in info.stdout
    from mef_tools.io import MefReader
    reader = MefReader(str(out))
    start = reader.get_property("start_time", "a")
    end = reader.get_property("end_time", "a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = np.array(reader.get_data(["a", "b"], start, end))
    assert data.shape[1] >= 250                          # most of 1.5 s at 500 Hz
    first = data[0, 0] * 100                              # the index recording began at
    expected = (first + np.arange(data.shape[1])) / 100
    assert np.allclose(data[0], expected, atol=1e-9) and np.allclose(data[1], -expected)


def test_record_against_the_file_service_says_what_it_needs(data_root):
    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=8) as srv:
        done = cli("record", "x.mefd", "--seconds", "1", port=srv.port)
    assert done.returncode == 1 and "serves files, not a live stream" in done.stderr
    assert "Traceback" not in done.stderr


def test_info_and_export_read_a_session_served_at_the_root(data_root, main_path, tmp_path):
    """start.py PATH.mefd: 'ls' names the session; info and export read it by that name."""
    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=8,
                         session=main_path) as srv:
        listed = cli("ls", port=srv.port)
        info = cli("info", "main.mefd", port=srv.port)
        out = tmp_path / "root.npz"
        done = cli("export", "main.mefd", "--start", "10", "--stop", "12", "--out", str(out),
                   port=srv.port)
        wrong = cli("info", "other.mefd", port=srv.port)
    assert listed.returncode == 0 and "main.mefd  (the session served" in listed.stdout
    assert info.returncode == 0, info.stderr
    assert "main.mefd" in info.stdout and "Fp1" in info.stdout
    assert done.returncode == 0, done.stderr
    with np.load(out) as z:
        assert tuple(z["channels"]) == NAMES
        np.testing.assert_array_equal(z["data"], reference(main_path, NAMES)[:, 2560:3072])
    assert wrong.returncode == 2 and "'main.mefd'" in wrong.stderr and "PATH" in wrong.stderr


@contextlib.contextmanager
def producing(stream: LiveStream):
    """Push the ramp (value = index / 100) in 10-sample chunks at about 500 Hz."""
    stop = threading.Event()

    def produce() -> None:
        k = stream.head
        while not stop.wait(0.02):
            i = np.arange(k, k + 10, dtype=np.float64)
            stream.append_stream_segment_data(np.stack([i / 100, -i / 100]))
            k += 10

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        yield
    finally:
        stop.set()
        producer.join(5)


def test_info_plot_follow_and_export_read_a_live_stream_at_the_root(tmp_path):
    """start.py --live: each command works on the root stream, by the name ls gives."""
    stream = LiveStream("rig", ["a", "b"], 500.0, history_seconds=4)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        with producing(stream):
            wait_until(lambda: stream.head >= 2500)      # more than the 4 s history (2000)
        head = stream.head
        info = cli("info", "rig", "--json", port=srv.port)
        out = tmp_path / "live.npz"
        done = cli("export", "rig", "--out", str(out), port=srv.port)
        frames = tmp_path / "frames"
        with producing(stream):
            plot = cli("plot", "rig", "--follow", "--frames", str(frames), "--seconds", "1",
                       "--step", "0.2", "--max-frames", "3", port=srv.port)
    assert info.returncode == 0, info.stderr
    assert '"growing": true' in info.stdout and '"path": "rig"' in info.stdout
    assert done.returncode == 0, done.stderr
    with np.load(out) as z:                  # the newest history: [head - 2000, head)
        data = z["data"]
    expected = np.arange(head - 2000, head) / 100
    np.testing.assert_array_equal(data, np.stack([expected, -expected]))
    assert plot.returncode == 0, plot.stderr
    assert sorted(os.listdir(frames)) == [f"frame_{k:05d}.png" for k in range(3)]


def test_plot_follow_reads_a_replay_at_the_root(data_root, main_path, tmp_path):
    def make(registry):
        return Replay(registry.acquire(main_path), speed=20.0, history_seconds=400,
                      release=registry.release).start().stream

    with MefStreamServer(port=0, data_root=data_root, workers=1, cache_mb=32,
                         live=make) as srv:
        info = cli("info", "main.mefd", port=srv.port)
        plot = cli("plot", "main.mefd", "--follow", "--frames", str(tmp_path), "--seconds",
                   "2", "--step", "1", "--max-frames", "2", port=srv.port)
    assert info.returncode == 0 and "growing" in info.stdout, info.stderr
    assert plot.returncode == 0, plot.stderr
    assert sorted(os.listdir(tmp_path)) == [f"frame_{k:05d}.png" for k in range(2)]
