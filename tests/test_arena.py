"""Arena: the one tmpfs lifecycle under the landing area and the connection areas
(first fit, pages committed as reached and given back, unlink/close, sweep)."""
from __future__ import annotations

import logging
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from software.shm import arena as arena_module
from software.shm.arena import COMMIT_STEP, Arena, sweep_stale
from software.shm.layout import SHM_DIR
from tests.test_faults import ROOT

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="no /dev/shm here")

MiB = 2**20


@pytest.fixture
def directory(tmp_path_factory):
    """A directory of its own on tmpfs (other test runs sweep /dev/shm itself)."""
    path = os.path.join(SHM_DIR, f"mefstream-test-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(path, 0o700)
    yield path
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)


def allocated(path_or_fd) -> int:
    """Bytes of tmpfs pages the file holds."""
    st = os.stat(path_or_fd) if isinstance(path_or_fd, str) else os.fstat(path_or_fd)
    return st.st_blocks * 512


def mapped(name: str) -> bool:
    with open("/proc/self/maps") as fh:
        return name in fh.read()


def test_first_fit_reuses_the_lowest_hole(directory):
    with Arena.create(1000, directory=directory) as arena:
        a = arena.allocate(100, tag="a")            # rounded up to 64: 128 bytes
        b = arena.allocate(200, tag="b")            # 256
        c = arena.allocate(64, tag="c")
        assert (a, b, c) == (0, 128, 384)
        assert arena.allocate(1000) is None          # no room left for that
        assert arena.free(b) and not arena.free(b)   # freed once
        assert arena.allocate(150) == 128            # the hole, lowest first: to 320
        assert arena.allocate(64) == 320             # the hole's rest, not after c
        assert arena.regions == 4
        freed = arena.free_where(lambda offset, tag: tag in ("a", "c"))
        assert sorted(freed) == [(0, "a"), (384, "c")]
        assert arena.allocate(0) is None and arena.regions == 2
        assert arena.allocate(600) is None           # 640 aligned; 616 free at the end
        assert arena.allocate(128) == 0
        assert arena.allocate(576) == 384
        assert arena.allocate(1) is None


def test_pages_are_committed_as_regions_reach_them_and_given_back(directory):
    with Arena.create(16 * MiB, directory=directory) as arena:
        assert arena.committed == 0 and allocated(arena.path) == 0
        low = arena.allocate(MiB)
        assert arena.committed == COMMIT_STEP and allocated(arena.path) >= COMMIT_STEP
        high = arena.allocate(9 * MiB)                 # reaches 10 MiB: 5 steps
        assert arena.committed == 5 * COMMIT_STEP
        view = arena.view(high, np.float64, (9 * MiB // 8,))
        view[:] = 1.5
        assert arena.give_back(keep=0) == 0            # every committed page is in use
        del view
        arena.free(high)
        assert arena.give_back(keep=0) == 4 * COMMIT_STEP   # above the low region
        assert arena.committed == COMMIT_STEP
        assert allocated(arena.path) < 3 * COMMIT_STEP
        again = arena.allocate(9 * MiB)
        assert again == high and arena.committed == 5 * COMMIT_STEP
        samples = arena.view(again, np.float64, (9 * MiB // 8,))
        kept = (COMMIT_STEP - again) // 8                # the first step was kept
        assert (samples[:kept] == 1.5).all() and (samples[kept:] == 0).all()  # a hole: 0
        del samples
        arena.free(again)
        arena.free(low)
        assert arena.give_back(keep=3 * MiB) == 3 * COMMIT_STEP  # keep rounds up to 4 MiB
        assert arena.committed == 2 * COMMIT_STEP


def test_a_full_dev_shm_fails_the_allocation_and_warns_once(directory, monkeypatch, caplog):
    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    with Arena.create(8 * MiB, directory=directory, full_note="they go elsewhere") as arena:
        monkeypatch.setattr(arena_module.os, "posix_fallocate", full)
        with caplog.at_level(logging.WARNING, logger="software.shm.arena"):
            assert arena.allocate(100) is None
            assert arena.allocate(100) is None
        assert arena.regions == 0 and arena.committed == 0
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and "they go elsewhere" in warnings[0], warnings
        monkeypatch.undo()
        assert arena.allocate(100) == 0


def test_header_comes_first_and_regions_after_it(directory):
    header = mmap.PAGESIZE
    with Arena.create(4096, header=header, directory=directory) as arena:
        assert os.path.getsize(arena.path) == header + 4096
        assert allocated(arena.path) >= header            # the header's pages: at once
        arena.mapping[:4] = b"HEAD"
        offset = arena.allocate(16)
        arena.view(offset, np.uint8, (16,))[:] = 7
        with open(arena.path, "rb") as fh:
            data = fh.read()
        assert data[:4] == b"HEAD" and data[header:header + 16] == bytes([7]) * 16
        assert oct(os.stat(arena.path).st_mode & 0o777) == "0o600"


def test_unlink_and_close_are_idempotent_and_a_held_view_keeps_the_mapping(directory):
    arena = Arena.create(4096, directory=directory)
    name, path = arena.name, arena.path
    assert os.path.exists(path) and arena.named and name in repr(arena)
    view = arena.view(arena.allocate(8), np.float64, (1,))
    arena.unlink()
    arena.unlink()
    assert not os.path.exists(path) and not arena.named and mapped(name)
    view[0] = 2.0                                       # still mapped: writes work
    arena.close()
    arena.close()
    assert arena.closed and "closed" in repr(arena)
    assert arena.allocate(8) is None and arena.give_back() == 0
    assert mapped(name) and view[0] == 2.0             # the view holds the mapping ...
    del view
    assert not mapped(name)                            # ... until it is dropped


OWNER = textwrap.dedent("""
    import sys
    from software.shm.arena import Arena
    arena = Arena.create(4096, directory=sys.argv[1])
    print(arena.path, "rpyc" in sys.modules, flush=True)
    sys.stdin.read()
""")


def test_sweep_removes_the_file_of_a_dead_owner_only(directory):
    proc = subprocess.Popen([sys.executable, "-c", OWNER, directory], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        path, rpyc_loaded = proc.stdout.readline().split()
        assert rpyc_loaded == "False"          # reader processes import shm: never rpyc
        old = time.time() - 60
        os.utime(path, (old, old))
        assert sweep_stale(directory) == 0     # its owner lives and holds the lock
        assert os.path.exists(path)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdin.close()
        proc.stdout.close()
    with Arena.create(4096, directory=directory) as mine:     # alive, locked: kept
        os.utime(mine.path, (old, old))
        young = Arena.create(4096, directory=directory)
        young.close()                                       # gone already: nothing to do
        other = os.path.join(directory, "not-an-arena")
        open(other, "w").close()
        os.utime(other, (old, old))
        assert sweep_stale(directory) == 1
        assert not os.path.exists(path) and os.path.exists(mine.path)
        assert os.path.exists(other)
        assert sweep_stale(directory) == 0


def test_create_refuses_nonsense_and_cleans_up(directory, monkeypatch):
    with pytest.raises(ValueError, match="capacity=0"):
        Arena.create(0, directory=directory)
    with pytest.raises(FileNotFoundError):
        Arena.create(4096, directory=os.path.join(directory, "missing"))

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(arena_module.os, "posix_fallocate", full)
    with pytest.raises(OSError):
        Arena.create(4096, header=4096, directory=directory)   # no room for its header
    assert os.listdir(directory) == []
