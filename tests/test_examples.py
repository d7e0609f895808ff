"""The analysis examples run against a demo recording (each in a subprocess, briefly)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

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


def _options_without_help(text: str) -> list[str]:
    """Options of an argparse --help text that have no help of their own."""
    lines = text.split("options:", 1)[1].splitlines()[1:]
    missing = []
    for k, line in enumerate(lines):
        entry = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if not entry:
            continue
        follows = lines[k + 1] if k + 1 < len(lines) else ""
        if not entry.group(2) and not re.match(r"^\s{3,}[^\s-]", follows):
            missing.append(entry.group(1))
    return missing


@pytest.mark.parametrize("name", sorted(
    f for f in os.listdir(os.path.join(ROOT, "examples"))
    if f.endswith(".py") and not f.startswith("_")))
def test_every_example_option_has_help(name):
    """Was: closed_loop.py's --data and --speed had no help."""
    done = subprocess.run([sys.executable, os.path.join("examples", name), "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--port" in done.stdout
    assert _options_without_help(done.stdout) == []
