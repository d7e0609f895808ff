"""The analysis examples run against a demo recording (each in a subprocess, briefly)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_quickstart import ROOT


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> str:
    """A small demo recording (8 ch x 4 min, gap 120-130 s)."""
    from software.mef3.demo import write_demo_recording
    root = tmp_path_factory.mktemp("demo")
    write_demo_recording(str(root / "demo.mefd"), n_channels=8, minutes=4,
                         gap_seconds=(120.0, 130.0))
    return str(root)


def test_whole_file_loop_example_runs(demo_root):
    result = subprocess.run([sys.executable, "examples/whole_file_loop.py", "--data-root",
                             demo_root, "--chunk-seconds", "30"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("8 channels at 256 Hz, 61440 samples")
    assert len([x for x in lines if x.startswith("chunk ")]) == 8     # 4 min / 30 s
    assert lines[-1] == "done: 61440 samples per channel"
