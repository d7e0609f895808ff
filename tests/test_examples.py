"""The analysis examples run against a demo recording (each in a subprocess, briefly)."""
from __future__ import annotations

import subprocess
import sys

from tests.test_quickstart import ROOT


def test_whole_file_loop_example_runs(demo_root):
    result = subprocess.run([sys.executable, "examples/whole_file_loop.py", "--data-root",
                             demo_root, "--chunk-seconds", "30"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("8 channels at 256 Hz, 61440 samples")
    assert len([x for x in lines if x.startswith("chunk ")]) == 8     # 4 min / 30 s
    assert lines[-1] == "done: 61440 samples per channel"
