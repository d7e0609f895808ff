"""A port in use: the error names the port and the fix in the interface in use (issue 19).

Before: "[Errno 98] Address already in use" from ``MefStreamServer(port=...)``, from
``python start.py --port N`` and from ``python -m software registry --port N``.
"""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import pytest

from software import MefStreamServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def busy_port():
    """A loopback port another socket listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


def test_the_python_api_names_port(data_root, busy_port):
    with pytest.raises(OSError) as caught:
        MefStreamServer(host="127.0.0.1", port=busy_port, data_root=data_root, workers=1)
    text = str(caught.value)
    assert caught.value.errno == errno.EADDRINUSE
    assert f"port {busy_port} on 127.0.0.1 is in use" in text and "port=0" in text
    assert "Errno" not in text


@pytest.mark.parametrize("command", [["start.py", "--workers", "1"],
                                     ["-m", "software", "registry"]], ids=["start", "registry"])
def test_the_command_line_names_dash_dash_port(data_root, busy_port, command):
    done = subprocess.run([sys.executable, *command, "--port", str(busy_port),
                           *(["--data-root", data_root] if command[0] == "start.py" else [])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode in (1, 2), done.stderr
    assert f"port {busy_port}" in done.stderr and "is in use" in done.stderr
    assert "--port" in done.stderr and "port=" not in done.stderr
    assert "Errno" not in done.stderr and "Traceback" not in done.stderr
