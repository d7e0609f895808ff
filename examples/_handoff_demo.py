"""What the hand-off examples share: a server to talk to, over the demo recording.

``--port N`` uses a server already running (``python start.py``); without it the example
starts its own on a free loopback port over ``--data-root`` (default: the current
directory, like ``start.py``), writing the demo recording there first if the root holds
no session.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys


def reexec_as_module(name: str) -> None:
    """Run as a file (``python examples/x.py``): re-run as ``python -m examples.x`` with
    the repository on the path, so that spawned processes import the same modules."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    os.execve(sys.executable, [sys.executable, "-m", f"examples.{name}", *sys.argv[1:]], env)


def parser(description: str) -> argparse.ArgumentParser:
    """Arguments every hand-off example takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1", help="server host (with --port)")
    p.add_argument("--port", type=int, default=None,
                   help="use the server on this port (default: start one here)")
    p.add_argument("--data-root", default=".",
                   help="data root of the server started here (demo written if empty)")
    p.add_argument("--session", default="demo.mefd", help="session path under the root")
    return p


def ensure_demo(data_root: str) -> None:
    """Write ``demo.mefd`` under ``data_root`` unless it holds a session (as start.py)."""
    if not glob.glob(os.path.join(data_root, "*.mefd")):
        from software.mef3.demo import write_demo_recording
        os.makedirs(data_root, exist_ok=True)
        print(f"writing the demo recording under {os.path.abspath(data_root)} ...")
        write_demo_recording(os.path.join(data_root, "demo.mefd"))


@contextlib.contextmanager
def demo_server(args: argparse.Namespace, workers: int = 2):
    """Yield ``(host, port)`` of the server to use (started here unless ``--port``)."""
    if args.port is not None:
        yield args.host, args.port
        return
    from software import MefStreamServer
    ensure_demo(args.data_root)
    with MefStreamServer(host="127.0.0.1", port=0, data_root=args.data_root,
                         workers=workers) as server:
        yield "127.0.0.1", server.port
