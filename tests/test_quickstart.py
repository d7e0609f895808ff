"""`python start.py` as the README's set-up runs it: the demo written, served, stopped.

The README's own blocks are run by tests/test_readme.py."""
from __future__ import annotations

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


def test_start_writes_the_demo_serves_it_and_sigterm_frees_the_port(launcher):
    proc, port, data = launcher
    conn = get_connection(port, timeout=60)           # waits while the demo is written
    try:
        assert (data / "demo.mefd").is_dir()
        with conn.root.open_file("demo.mefd") as svc:
            info = svc.get_info()
            assert info["n_samples"] == 460800 and len(info["channels"]) == 16
            assert svc.get_stream_segment(2560, 0).shape == (16, 2560)
    finally:
        conn.close()
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


def test_server_process_never_loads_pymef_or_pandas(launcher):
    """Was: start.py wrote the demo in the server process, loading pymef, mef_tools and
    pandas into it for good (issue 9, fault 7)."""
    import psutil

    proc, port, _ = launcher
    conn = get_connection(port, timeout=60)          # waits while the demo is written
    try:
        svc = conn.root.open_file("demo.mefd")
        assert svc.get_stream_segment(256, 0).shape == (16, 256)    # served
        mapped = [m.path for m in psutil.Process(proc.pid).memory_maps()]
    finally:
        conn.close()
    assert any("numpy" in path for path in mapped)   # the check can see a package's files
    loaded = [path for path in mapped if re.search(r"pymef|pandas|mef_tools", path)]
    assert loaded == []


@pytest.mark.parametrize("where", ["data root under a file", "demo under a file"])
def test_start_says_plainly_when_the_demo_cannot_be_written(tmp_path, where):
    """Was: a data root the demo cannot be written to gave a traceback. Tests run as root,
    which chmod does not stop, so a path under a regular file stands for a read-only one."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    env = dict(os.environ)
    if where == "data root under a file":
        data = blocker / "sub"
    else:                                             # the root is fine; the write fails
        data = tmp_path / "data"
        data.mkdir()
        os.symlink(blocker, data / "blocked")
        env["MEFSTREAM_DEMO_NAME"] = os.path.join("blocked", "demo.mefd")
    result = subprocess.run([sys.executable, "start.py", "--port", str(free_port()),
                             "--data-root", str(data)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=env, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot start" in result.stderr and "--data-root" in result.stderr
    assert "Not a directory" in result.stderr or "NotADirectoryError" in result.stderr
