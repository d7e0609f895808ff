"""The README's quick start, run as written against `python start.py` in a subprocess."""
from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from software import get_connection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_quickstart() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    match = re.search(r"<!-- quickstart -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its quick-start client block"
    return match.group(1)


@pytest.fixture
def launcher(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "start.py", "--port", str(port), "--data-root",
                             str(tmp_path / "data"), "--log-level", "WARNING"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield proc, port, tmp_path / "data"
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()


def test_start_writes_the_demo_and_the_readme_client_works(launcher):
    proc, port, data = launcher
    get_connection(port, timeout=60).close()          # waits while the demo is written
    assert (data / "demo.mefd").is_dir()
    code = readme_quickstart().replace("get_connection()", f"get_connection({port})")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README quickstart", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("('EEG01', 'EEG02'") and "256.0 460800" in lines[0]
    assert len(lines) == 1 + 460800 // 2560 and lines[1].startswith("(16, 2560)")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    with socket.socket() as sock:                     # the port is free at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_start_refuses_a_bad_session_clearly(tmp_path):
    result = subprocess.run([sys.executable, "start.py", str(tmp_path / "nothing.mefd"),
                             "--port", str(free_port())], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "nothing.mefd" in result.stderr and "no such session" in result.stderr
