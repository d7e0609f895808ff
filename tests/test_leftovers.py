"""Nothing of a dead reader or server outlives the next server's start (issue 19).

Before: readers killed while opening a session left their ``mefstream-shadow-*`` trees
(6 after 18 restarts), and a killed server's landing area in ``/dev/shm`` stayed until a
client asked for shared memory. The states are built on purpose: a process that made a
shadow tree (as a reader opening a session does) or a reader pool (as a server does) is
killed with SIGKILL, then a new server starts.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from software import MefStreamServer
from software.mef3.scratch import SHADOW_PREFIX, OwnedDir, sweep_owned
from tests.util import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OPENING = textwrap.dedent("""
    import sys
    from software.mef3.pymef_window import build_shadow
    shadow, dest = build_shadow(sys.argv[1])    # as a reader opening a session does
    print(shadow.path, flush=True)
    sys.stdin.read()                            # killed here
""")

SERVER = textwrap.dedent("""
    import sys
    import software.readers.landing
    from software.readers.pool import ReaderPool
    software.readers.landing.SHM_DIR = sys.argv[2]   # the test's own, not /dev/shm
    pool = ReaderPool(workers=1, landing_mb=1)
    pool.open_everywhere(sys.argv[1], None)     # a broadcast's check-in directory
    print(pool._landing.path, pool._procs._board.path, flush=True)
    sys.stdin.read()                            # killed here
""")


def run_until_killed(script: str, tmp: str, *args: str) -> list[str]:
    """Run ``script`` with TMPDIR=``tmp``; return the paths it prints, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "TMPDIR": tmp})
    try:
        paths = proc.stdout.readline().split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    return paths


@pytest.fixture
def tmp(tmp_path, monkeypatch) -> str:
    """A temporary directory of its own, for this process and its children, and a
    directory for shared memory (other tests' servers sweep /dev/shm too)."""
    import software.readers.landing
    import software.readers.leftovers
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(software.readers.landing, "SHM_DIR", str(shm))
    monkeypatch.setattr(software.readers.leftovers, "SHM_DIR", str(shm))
    return str(tmp_path)


def test_a_new_server_sweeps_what_killed_readers_and_servers_left(tmp, data_root,
                                                                  main_path):
    landing, board = run_until_killed(SERVER, tmp, main_path,   # (it sweeps as it starts)
                                      os.path.join(tmp, "shm"))
    shadows = [run_until_killed(OPENING, tmp, main_path)[0] for _ in range(3)]
    assert all(os.path.isdir(p) for p in shadows + [board]) and os.path.exists(landing)
    rendezvous = [n for n in os.listdir(tmp) if n.startswith("mefstream-rendezvous-")]
    old = time.time() - 60          # a landing area is swept once it is a second old
    os.utime(landing, (old, old))
    with OwnedDir.create(SHADOW_PREFIX) as alive:      # a live reader's: kept
        alive_path = alive.path
        with MefStreamServer(port=0, data_root=data_root, workers=1) as srv:
            assert os.path.isdir(alive_path)
            assert not any(os.path.exists(p) for p in shadows + [landing, board])
            assert not any(os.path.exists(os.path.join(tmp, n)) for n in rendezvous)
            left = [n for n in os.listdir(tmp) if n.startswith("mefstream-")]
            assert os.path.basename(srv.pool._procs._board.path) in left
            assert all(f"-{os.getpid()}-" in n for n in left), left   # ours only
    assert not os.path.exists(alive_path)
    # the server removed its own board (and check-ins) on close
    wait_until(lambda: [n for n in os.listdir(tmp) if n.startswith("mefstream-")] == [])


def test_the_sweep_keeps_a_directory_being_made_and_removes_one_without_owner(tmp):
    """A directory unlocked but of a live pid is being made (kept); one without a pid in
    its name (an older version's) goes only once it is stale."""
    making = tempfile.mkdtemp(prefix=f"{SHADOW_PREFIX}{os.getpid()}-")   # not locked yet
    legacy = tempfile.mkdtemp(prefix=SHADOW_PREFIX + "x")
    assert sweep_owned(SHADOW_PREFIX) == 0
    assert os.path.isdir(making) and os.path.isdir(legacy)
    old = time.time() - 3600
    os.utime(legacy, (old, old))
    assert sweep_owned(SHADOW_PREFIX) == 1 and not os.path.exists(legacy)
    assert os.path.isdir(making)


def test_a_reader_killed_while_opening_leaves_nothing_after_the_rebuild(tmp, data_root,
                                                                        main_path):
    """A real reader of a running server killed (its shadow tree of a session being
    opened left behind): the pool's rebuild sweeps it, without waiting for a restart."""
    with MefStreamServer(port=0, data_root=data_root, workers=1) as srv:
        srv.pool.warm_up()
        pid = srv.pool.pids()[0]
        shadow = OwnedDir.create(SHADOW_PREFIX)          # stands in for the reader's ...
        os.rename(shadow.path, os.path.join(tmp, f"{SHADOW_PREFIX}{pid}-opening"))
        shadow.remove()                                  # ... unlocked once it dies
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: srv.pool.pids() == [], timeout=20)
        srv.registry.acquire("main.mefd")                 # needs a reader: rebuilt
        wait_until(lambda: not os.path.exists(os.path.join(tmp, f"{SHADOW_PREFIX}{pid}-"
                                                                 "opening")), timeout=20)
        assert srv.pool.restarts == 1
