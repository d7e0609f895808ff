"""The crash-safe recorder: atomic MEF3 appends (SIGKILL at random moments), metadata kept
right, and the follow loop over a growing stream served in-process."""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import threading
import warnings
from concurrent.futures import Future

import numpy as np
import pytest

from software.live.recorder import Recorder
from software.mef3.append import AppendingSession
from software.mef3.crc import crc_patched, crc_update
from software.mef3.metadata import ChannelInfo, SessionInfo
from software.stream.options import ServiceOptions
from software.stream.service import StreamService
from software.stream.source import Source
from tests.util import START, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def signal_values(n_channels: int, first: int, stop: int) -> np.ndarray:
    """Deterministic samples: channel c, index i (to two decimals) encodes both."""
    i = np.arange(first, stop, dtype=np.float64)
    rows = [np.round(np.sin(i * 0.0007 * (c + 1)) * 900.0 + c * 0.01, 2)
            for c in range(n_channels)]
    return np.vstack(rows)


def read(path: str, names) -> tuple[np.ndarray, object]:
    from mef_tools.io import MefReader
    reader = MefReader(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = np.array(reader.get_data(list(names)))
    return data, reader


def check_metadata(path: str, names, data: np.ndarray, reader) -> None:
    """min/max are those of all samples, and every .tmet's CRCs are valid."""
    md = reader.session.session_md["time_series_channels"]
    for row, name in enumerate(names):
        s2 = md[name]["section_2"]
        assert float(s2["maximum_native_sample_value"][0]) == pytest.approx(
            np.nanmax(data[row]), abs=1e-9)
        assert float(s2["minimum_native_sample_value"][0]) == pytest.approx(
            np.nanmin(data[row]), abs=1e-9)
        base = os.path.join(path, f"{name}.timd", f"{name}-000000.segd", f"{name}-000000")
        raw = open(base + ".tmet", "rb").read()
        assert struct.unpack_from("<II", raw, 0) == (crc_update(raw[4:1024]),
                                                     crc_update(raw[1024:]))


def test_crc_patch_equals_a_full_recomputation():
    rng = random.Random(3)
    msg = bytearray(rng.randbytes(3000))
    crc = crc_update(bytes(msg))
    old = bytes(msg[1200:1216])
    new = rng.randbytes(16)
    msg[1200:1216] = new
    assert crc_patched(crc, old, new, 3000 - 1216) == crc_update(bytes(msg))


def test_appends_round_trip_with_nan_gap_and_metadata(tmp_path):
    names = ("a", "b", "c")
    data = signal_values(3, 0, 9000)
    data[1, 100:120] = np.nan
    path = str(tmp_path / "rt.mefd")
    with AppendingSession(path, names, 1000.0, START) as session:
        for first in range(0, 6000, 1000):
            session.append(data[:, first:first + 1000])
        session.append(data[:, 7000:9000], first=7000)            # 1 s never pushed
        assert session.n_samples == 9000
    got, reader = read(path, names)
    assert got.shape == (3, 9000)
    expected = data.copy()
    expected[:, 6000:7000] = np.nan
    np.testing.assert_allclose(got, expected, atol=1e-9, equal_nan=True)
    assert reader.get_property("end_time", "a") == START + 9_000_000
    check_metadata(path, names, expected, reader)
    assert not os.path.exists(str(tmp_path / ".rt.mefd.spare"))    # closed cleanly
    with pytest.raises(FileExistsError):
        AppendingSession(path, names, 1000.0, START)


def test_a_session_is_whole_while_an_append_is_half_done(tmp_path, monkeypatch):
    """Between pymef's appends to the spare copy, the live copy still reads as before."""
    names = ("a", "b")
    path = str(tmp_path / "half.mefd")
    session = AppendingSession(path, names, 1000.0, START)
    session.append(signal_values(2, 0, 1000))
    import software.mef3.append as mefappend

    def boom(a, b):
        got, reader = read(path, names)       # the moment before the swap
        np.testing.assert_allclose(got, signal_values(2, 0, 1000), atol=1e-9)
        raise OSError("killed here")

    monkeypatch.setattr(mefappend, "exchange", boom)
    with pytest.raises(OSError, match="killed here"):
        session.append(signal_values(2, 1000, 2000))
    got, reader = read(path, names)
    np.testing.assert_allclose(got, signal_values(2, 0, 1000), atol=1e-9)
    check_metadata(path, names, got, reader)


CHILD = """
import sys
from software.mef3.append import AppendingSession
from tests.test_recorder import signal_values
from tests.util import START
path, n_ch, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = AppendingSession(path, [f"ch{c:02d}" for c in range(n_ch)], 5000.0, START)
first = 0
while True:
    s.append(signal_values(n_ch, first, first + chunk))
    first += chunk
    print(first, flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_leaves_a_whole_session(tmp_path):
    n_ch, chunk = 8, 5000                       # 8 channels x 5 kHz, 1 s per append
    names = [f"ch{c:02d}" for c in range(n_ch)]
    rng = random.Random(20261202)
    env = dict(os.environ, PYTHONPATH=ROOT)
    for run in range(8):
        path = str(tmp_path / f"kill{run}.mefd")
        child = subprocess.Popen([sys.executable, "-c", CHILD, path, str(n_ch), str(chunk)],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        done = 0
        for _ in range(rng.randint(1, 6)):
            done = int(child.stdout.readline())
        threading.Event().wait(rng.uniform(0.0, 0.05))   # a random moment, not a sync
        child.kill()
        child.wait()
        for line in child.stdout.read().split():
            done = int(line)
        got, reader = read(path, names)
        n = got.shape[1]
        assert n in (done, done + chunk), (run, n, done)  # the last append, or the one after
        assert set(reader.get_property("nsamp")) == {n}  # every channel the same length
        np.testing.assert_allclose(got, signal_values(n_ch, 0, n), atol=1e-9)
        check_metadata(path, names, got, reader)


class GrowingSource(Source):
    """A stand-in live stream: channels pushed as one block, requests wait for the head."""

    growing = True

    def __init__(self, names, fs: float) -> None:
        self.names, self.fs = tuple(names), fs
        self.data = np.zeros((len(names), 0))
        self.waiting: list[tuple[Future, tuple, int, int]] = []
        self.lock = threading.Lock()

    @property
    def info(self) -> SessionInfo:
        n = self.data.shape[1]
        end = START + int(round(n * 1e6 / self.fs))
        return SessionInfo(path="live", channels=tuple(
            ChannelInfo(name, self.fs, START, end, "uV", 1.0, n) for name in self.names))

    def group(self, fs):
        return self.info.group(fs)

    def gather(self, names, group, start, stop):
        future: Future = Future()
        with self.lock:
            if stop <= self.data.shape[1]:
                future.set_result(_Rows(self, names, start, stop))
            else:
                self.waiting.append((future, tuple(names), start, stop))
        return future

    def push(self, block: np.ndarray) -> None:
        with self.lock:
            self.data = np.hstack([self.data, block])
            ready = [w for w in self.waiting if w[3] <= self.data.shape[1]]
            self.waiting = [w for w in self.waiting if w[3] > self.data.shape[1]]
        for future, names, start, stop in ready:
            if future.set_running_or_notify_cancel():
                future.set_result(_Rows(self, names, start, stop))


class _Rows:
    def __init__(self, source, names, start, stop):
        rows = [source.names.index(n) for n in names]
        self.values = source.data[rows, start:stop].copy()
        self.shape = self.values.shape

    def assemble(self, out=None):
        return self.values


def test_recorder_follows_a_growing_stream_from_its_head(tmp_path):
    names = ("x", "y", "z")
    source = GrowingSource(names, 1000.0)
    source.push(signal_values(3, 0, 700))             # before the recorder connects
    svc = StreamService(source, ServiceOptions(segment_seconds=1.0), "live")
    path = str(tmp_path / "follow.mefd")
    with Recorder(svc, path, flush_seconds=0.5) as recorder:
        assert recorder.head == 700
        for first in range(700, 4700, 50):                # 50-sample pushes
            source.push(signal_values(3, first, first + 50))
        wait_until(lambda: recorder.n_samples >= 4000, timeout=30)
    assert recorder.closed and recorder.error is None
    recorder.close()                                   # idempotent
    got, reader = read(path, names)
    assert got.shape == (3, 4000)                      # all pushed after the head, flushed
    np.testing.assert_allclose(got, signal_values(3, 700, 4700), atol=1e-9)
    assert reader.get_property("start_time", "x") == START + 700_000
    check_metadata(path, names, got, reader)
    svc.close()


def test_recorder_stops_after_its_seconds(tmp_path):
    source = GrowingSource(("x",), 1000.0)
    source.push(signal_values(1, 0, 10))
    svc = StreamService(source, ServiceOptions(segment_seconds=1.0), "live")
    recorder = Recorder(svc, str(tmp_path / "timed.mefd"), seconds=1.0).start()
    source.push(signal_values(1, 10, 210))
    assert recorder.wait(10)
    assert recorder.closed and recorder.n_samples == 200
    got, _ = read(recorder.path, ("x",))
    np.testing.assert_allclose(got, signal_values(1, 10, 210), atol=1e-9)
    svc.close()


def test_a_file_is_refused_with_a_clear_error(tmp_path):
    source = GrowingSource(("x",), 1000.0)
    source.growing = False
    svc = StreamService(source, ServiceOptions(), "file")
    with pytest.raises(ValueError, match="not a live stream"):
        Recorder(svc, str(tmp_path / "no.mefd"))
    assert not os.path.exists(tmp_path / "no.mefd")
