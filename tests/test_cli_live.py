"""The command line against live streams: record a pushed stream, and clear errors for
commands that need the other kind of server."""
from __future__ import annotations

import subprocess
import sys
import threading
import warnings

import numpy as np

from software import MefStreamServer
from software.live.source import LiveStream
from tests.test_quickstart import ROOT


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
    assert info.returncode == 1 and "one stream at its connection root" in info.stderr
    assert "Traceback" not in info.stderr
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
