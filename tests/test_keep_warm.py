"""Sessions stay warm between tools (issue 15): after the last client closes a file its
blocks stay cached for ``keep_warm_seconds``; reopening it unchanged within that time
reads from the cache, after it the session is closed; a session changed on disk, or opened
with another password, is never served from the kept one.

Real servers with real reader processes; hits and misses are the cache's own counts.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from software import MefStreamServer, WrongPasswordError, decode_segment, get_connection
from software.mef3.writer import write_session
from tests.conftest import PASSWORD2
from tests.util import FS, START, reference, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = (1000, 1000 + 3 * 2560)     # 3 s .. 33 s: blocks 0-3 of 10 s
BLOCKS = 4 * 6                       # 4 blocks x 6 channels of main.mefd


def counts(srv) -> tuple[int, int]:
    return srv.cache.hits, srv.cache.misses


def read_once(srv, name: str = "main.mefd", password=None) -> np.ndarray:
    """One tool: connect, open, read the window, close (the file is released)."""
    with get_connection(srv.port, host="127.0.0.1", timeout=10) as conn:
        svc = conn.root.open_file(name, password)
        data = decode_segment(svc.get_stream_segment(WINDOW[1] - WINDOW[0], WINDOW[0]))
        conn.root.close_file(name)
    return data


@pytest.fixture
def warm_server(data_root):
    srv = MefStreamServer(host="127.0.0.1", port=0, data_root=data_root, workers=2,
                          prefetch=0, cache_mb=64, keep_warm_seconds=600)
    srv.start()
    yield srv
    srv.close()


def test_a_closed_session_is_reused_warm_within_the_time(warm_server, main_path):
    """Kills: the registry closing the session at its last release (the old code): the
    second tool's read then misses every block again."""
    srv = warm_server
    first = read_once(srv)
    hits, misses = counts(srv)
    assert misses >= BLOCKS
    assert srv.registry.open_paths() == () and srv.registry.warm.paths() == (main_path,)
    assert len(srv.cache) == BLOCKS                      # its blocks stayed
    second = read_once(srv)
    assert counts(srv) == (hits + BLOCKS, misses)        # every block a hit, no miss
    assert np.array_equal(first, second, equal_nan=True)
    assert srv.registry.warm.reused == 1


def test_a_session_kept_warm_is_closed_after_the_time(data_root, main_path):
    """Kills: a keep-warm thread that never closes what is due (wait_until times out),
    and a reopen that takes an expired session (its read would hit)."""
    with MefStreamServer(host="127.0.0.1", port=0, data_root=data_root, workers=2,
                         prefetch=0, cache_mb=64, keep_warm_seconds=0.2) as srv:
        read_once(srv)
        wait_until(lambda: srv.registry.warm.paths() == () and len(srv.cache) == 0,
                   timeout=20)
        assert srv.registry.warm.expired == 1
        hits, misses = counts(srv)
        read_once(srv)
        assert counts(srv)[1] == misses + BLOCKS and srv.registry.warm.reused == 0


def test_keep_warm_zero_closes_at_once(data_root):
    """The default of MefStreamServer: nothing kept (as before)."""
    with MefStreamServer(host="127.0.0.1", port=0, data_root=data_root, workers=1,
                         prefetch=0, cache_mb=64) as srv:
        read_once(srv)
        assert srv.registry.warm.paths() == () and len(srv.cache) == 0


def test_a_session_changed_on_disk_is_not_served_from_the_warm_one(tmp_path):
    """Kills: taking a warm session back without comparing the files' identity (the old
    samples would be served from the cache)."""
    root = tmp_path / "root"
    rng = np.random.default_rng(5)
    signals = {"a": rng.normal(0, 10, int(60 * FS)), "b": rng.normal(0, 10, int(60 * FS))}
    write_session(root / "s.mefd", signals, FS, START, precision=2)
    with MefStreamServer(host="127.0.0.1", port=0, data_root=str(root), workers=1,
                         prefetch=0, cache_mb=64, keep_warm_seconds=600) as srv:
        before = read_once(srv, "s.mefd")
        signals = {k: v + 1.0 for k, v in signals.items()}     # rewritten in place
        write_session(root / "s.mefd", signals, FS, START, precision=2, overwrite=True)
        after = read_once(srv, "s.mefd")
        want = reference(str(root / "s.mefd"), ["a", "b"])[:, WINDOW[0]:WINDOW[1]]
        assert np.array_equal(after, want, equal_nan=True)
        assert not np.array_equal(after, before, equal_nan=True)
        assert srv.registry.warm.stale == 1 and srv.registry.warm.reused == 0


def test_a_warm_encrypted_session_still_checks_the_password(data_root):
    """Kills: reuse that ignores the password the session was opened with."""
    with MefStreamServer(host="127.0.0.1", port=0, data_root=data_root, workers=1,
                         prefetch=0, cache_mb=64, keep_warm_seconds=600) as srv:
        with get_connection(srv.port, host="127.0.0.1", timeout=10) as conn:
            svc = conn.root.open_file("secret.mefd", PASSWORD2)
            decode_segment(svc.get_stream_segment(256, 0))
            conn.root.close_file("secret.mefd")
        assert len(srv.registry.warm.paths()) == 1
        with get_connection(srv.port, host="127.0.0.1", timeout=10) as conn:
            with pytest.raises(WrongPasswordError):
                conn.root.open_file("secret.mefd", "not-the-one")
            with pytest.raises(WrongPasswordError):
                conn.root.open_file("secret.mefd")
            svc = conn.root.open_file("secret.mefd", PASSWORD2)   # the right one works
            assert decode_segment(svc.get_stream_segment(256, 0)).shape == (1, 256)


def test_close_closes_the_sessions_kept_warm(data_root):
    srv = MefStreamServer(host="127.0.0.1", port=0, data_root=data_root, workers=1,
                          prefetch=0, cache_mb=64, keep_warm_seconds=600).start()
    read_once(srv)
    recording = srv.registry.warm._parked[os.path.join(data_root, "main.mefd")][0]
    srv.close()
    assert recording.closed and srv.registry.warm.closed
    srv.close()                                           # idempotent


def test_start_py_refuses_a_negative_keep_warm(tmp_path):
    result = subprocess.run([sys.executable, "start.py", "--keep-warm-seconds", "-1",
                             "--data-root", str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "--keep-warm-seconds -1" in result.stderr and ">= 0" in result.stderr
