"""examples/closed_loop.py run as written, for a few seconds at high speed."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

from software.mef3.demo import write_demo_recording

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_closed_loop_example_follows_a_replay_and_reacts_to_alpha(tmp_path):
    path = write_demo_recording(str(tmp_path / "demo.mefd"), n_channels=4, minutes=2.0,
                                gap_seconds=(30.0, 40.0))
    done = subprocess.run([sys.executable, os.path.join("examples", "closed_loop.py"),
                           "--data", path, "--speed", "50", "--seconds", "3", "--factor",
                           "1.5"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "following demo.mefd: 4 channels at 256 Hz, replayed at 50x" in out
    analysed = int(re.search(r"analysed (\d+) s of signal", out).group(1))
    assert 50 <= analysed <= 3 * 50 + 5          # about 50 s of signal per wall second
    assert "thresholds set" in out and "ALPHA" in out
    assert "Traceback" not in done.stderr


def test_alpha_power_finds_a_10_hz_rhythm():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from closed_loop import alpha_power
    t = np.arange(256) / 256.0
    window = np.vstack([np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 30 * t)])
    power = alpha_power(window, 256.0)
    assert power[0] > 100 * power[1]
