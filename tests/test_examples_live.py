"""examples/closed_loop.py run as written: on its own replay, against a running server's
replay and live stream, and when that server goes away."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from software import get_connection
from tests.test_quickstart import ROOT, free_port

sys.path.insert(0, os.path.join(ROOT, "examples"))
from closed_loop import BurstDetector, alpha_power  # noqa: E402


def test_the_closed_loop_example_follows_its_own_replay_and_reports_bursts(demo_root):
    done = subprocess.run([sys.executable, os.path.join("examples", "closed_loop.py"),
                           "--data-root", demo_root, "--speed", "50", "--seconds", "3",
                           "--baseline-seconds", "5", "--factor", "1.2", "--hold", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("following demo.mefd (a replay of the recording at 50x real time):"
                          " 8 channels at 256 Hz; watching EEG01\n")
    assert re.search(r"baseline: median alpha power of EEG01 over 5 s = [\d.]+ uV\^2", out)
    assert re.search(r"ALPHA BURST on EEG01: +[\d.]+ uV\^2 \(\+[\d.]+ dB over baseline", out)
    analysed = int(re.search(r"analysed (\d+) s of EEG01", out).group(1))
    assert analysed > 10                 # about 50 s of signal per wall-clock second
    assert "Traceback" not in done.stderr


def test_alpha_power_is_in_units_squared():
    """A 10 Hz sine of amplitude 10 uV has 50 uV^2 of alpha power; 30 Hz has none."""
    t = np.arange(256) / 256.0
    window = np.vstack([10 * np.sin(2 * np.pi * 10 * t), 10 * np.sin(2 * np.pi * 30 * t)])
    power = alpha_power(window, 256.0)
    assert power[0] == pytest.approx(50.0, rel=1e-6)
    assert power[1] < 1e-6
    assert np.isnan(alpha_power(np.array([[np.nan] + [0.0] * 255]), 256.0)[0])


def test_a_burst_needs_hold_seconds_above_the_threshold_and_respects_the_refractory():
    detector = BurstDetector(baseline_seconds=3, factor=2.0, hold=2, refractory=5)
    powers = [10, 10, 10,            # baseline 10
              25, 15, 25, 25,        # one high second, then a burst at second 7
              25, 25, 25, 25,        # still high: no new burst within 5 s
              25, 25]                # second 12: 5 s after the last, a new one
    fired = [s for s, p in enumerate(powers, 1) if detector.add(s, p)]
    assert detector.baseline == 10.0 and fired == [7, 12]
    assert detector.add(13, float("nan")) is False


@pytest.fixture
def replay_server(demo_root):
    """``python start.py demo.mefd --replay`` on a free port (the README's command)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "start.py", os.path.join(demo_root, "demo.mefd"),
                             "--replay", "--speed", "10", "--port", str(port),
                             "--log-level", "WARNING"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    get_connection(port, timeout=60).close()
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=20)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_example_stops_with_one_line_when_the_server_goes_away(replay_server, how):
    """Was (issue 18 section 3): the example went quiet until --seconds and exited 0. The
    replay is paused first, so that the example is waiting for a chunk when the server
    goes."""
    proc, port = replay_server
    follower = subprocess.Popen([sys.executable, os.path.join("examples", "closed_loop.py"),
                                 "--port", str(port), "--seconds", "300"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = follower.stdout.readline()
        assert first.startswith("following demo.mefd (a replay of the recording at 10x")
        control = get_connection(port)
        try:
            control.root.pause()
        finally:
            control.close()
        proc.send_signal(how)
        proc.wait(timeout=30)
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 1, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"closed_loop.py: the server at 127.0.0.1:{port} went away")


def test_a_live_stream_is_called_live_not_replayed(tmp_path):
    """Was: "replayed at 1x" for a stream a producer pushes."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "start.py", "--live", "rig", "--channels", "a,b",
                               "--fs", "100", "--port", str(port), "--log-level", "WARNING"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        get_connection(port, timeout=60).close()
        done = subprocess.run([sys.executable, os.path.join("examples", "closed_loop.py"),
                               "--port", str(port), "--seconds", "1", "--channel", "b"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("following rig (live): 2 channels at 100 Hz; watching b\n")
    assert "analysed 0 s of b: 0 alpha bursts" in done.stdout
