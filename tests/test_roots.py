"""The connection roots (issue 9): counts and limits reach the client, close_file works after
the session folder moved, and a view method asked of the root says to call open_file."""
from __future__ import annotations

import os

import numpy as np
import pytest
import rpyc

import settings
import software
from software import MefStreamServer, decode_segment, get_connection
from software.errors import NoFileOpenError
from software.mef3.writer import write_session
from software.server.roots import VIEW_METHODS
from tests.util import START, wait_until


@pytest.fixture
def own_root(tmp_path) -> str:
    """A data root of its own (sessions in it may be moved): two small sessions."""
    rng = np.random.default_rng(11)
    write_session(tmp_path / "alpha.mefd", {"a": rng.normal(0, 10, 256 * 20)}, 256.0, START)
    os.makedirs(tmp_path / "sub")
    write_session(tmp_path / "sub" / "beta.mefd", {"b": rng.normal(0, 10, 256 * 20)}, 256.0,
                  START)
    return str(tmp_path)


@pytest.fixture
def own_server(own_root):
    # prefetch=0: nothing reads the moved session behind the tests' back
    with MefStreamServer(port=0, data_root=own_root, workers=1, cache_mb=16, prefetch=0,
                         max_request_mb=1) as srv:
        yield srv


# ---- close_file after the folder moved ----------------------------------------------------

def test_close_file_after_the_session_folder_was_renamed(own_server, own_root):
    """Was: close_file resolved the path again, so a moved folder raised NotMefSessionError
    and the view (and its reader handles, and its cache blocks) stayed open."""
    conn = get_connection(own_server.port, timeout=10)
    try:
        svc = conn.root.open_file("alpha.mefd")
        assert decode_segment(svc.get_stream_segment(10, 0)).shape == (1, 10)
        os.rename(os.path.join(own_root, "alpha.mefd"), os.path.join(own_root, "moved.mefd"))
        assert conn.root.close_file("alpha.mefd") is True
        assert conn.root.list_open_files() == ()
        assert own_server.registry.open_paths() == ()      # the session was given back
        with pytest.raises(software.ServiceClosedError):
            svc.get_info()
        assert conn.root.close_file("alpha.mefd") is False  # no longer open, not an error
    finally:
        conn.close()


def test_close_file_accepts_the_display_path_or_the_argument(own_server, own_root):
    conn = get_connection(own_server.port, timeout=10)
    try:
        absolute = os.path.join(own_root, "sub", "beta.mefd")
        conn.root.open_file(absolute)                       # opened by its absolute path
        assert conn.root.list_open_files() == (os.path.join("sub", "beta.mefd"),)
        assert conn.root.close_file(os.path.join("sub", "beta.mefd")) is True   # shown path
        conn.root.open_file("./sub/beta.mefd")
        assert conn.root.close_file("./sub/beta.mefd") is True                 # argument
        conn.root.open_file("sub/beta.mefd")
        assert conn.root.close_file(absolute) is True       # another spelling: resolved
        assert conn.root.close_file("nothing.mefd") is False    # names nothing
        with pytest.raises(software.InvalidTypeError):
            conn.root.close_file(3)
    finally:
        conn.close()


# ---- get_stats, get_limits ----------------------------------------------------------------

REQUIRED = ("cache_hits", "cache_misses", "cache_bytes", "cache_budget", "bytes_served",
            "reads", "reads_landed", "reads_piped", "reader_restarts", "reads_retried",
            "open_sessions", "connections", "connections_total", "hung_callbacks",
            "client_callback_errors", "shm_fallbacks")


def test_get_stats_reports_the_counts_of_the_whole_server(own_server):
    first = get_connection(own_server.port, timeout=10)
    second = get_connection(own_server.port, timeout=10)
    try:
        stats = first.root.get_stats()
        assert isinstance(stats, tuple) and all(type(p) is tuple for p in stats)
        names = [name for name, _ in stats]
        assert set(REQUIRED) <= set(names) and len(names) == len(set(names))
        assert [n for n, _ in own_server.stats()] == names      # one list, both ways
        start = dict(stats)
        assert start["connections"] == 2 and start["connections_total"] == 2
        assert start["cache_budget"] == 16 * 2**20 and start["open_sessions"] == 0
        svc = first.root.open_file("alpha.mefd")
        svc.get_stream_segment(256, 0)
        svc.get_stream_segment(256, 0)
        after = dict(second.root.get_stats())                   # any connection sees them
        assert after["open_sessions"] == 1
        assert after["cache_misses"] > start["cache_misses"]
        assert after["cache_hits"] > start["cache_hits"]
        assert after["cache_bytes"] > 0 and after["reads"] >= 1
        assert after["reads"] == after["reads_landed"] + after["reads_piped"]
    finally:
        second.close()
    wait_until(lambda: dict(own_server.stats())["connections"] == 1)
    try:
        assert dict(first.root.get_stats())["connections_total"] == 2
    finally:
        first.close()
    wait_until(lambda: dict(own_server.stats())["connections"] == 0)


def test_get_limits_tells_the_frame_limit_the_listener_uses(own_server):
    conn = get_connection(own_server.port, timeout=10)
    try:
        limits = conn.root.get_limits()
        assert limits == (("max_request_bytes", 2**20), ("max_frame", 2 * 2**20))
        assert dict(limits)["max_frame"] == own_server._server.max_frame
    finally:
        conn.close()


def test_file_root_service_has_stats_and_limits_too(own_root):
    session = os.path.join(own_root, "alpha.mefd")
    with MefStreamServer(port=0, data_root=own_root, session=session, workers=1) as srv:
        conn = get_connection(srv.port, timeout=10)
        try:
            decode_segment(conn.root.get_stream_segment(10, 0))
            stats = dict(conn.root.get_stats())
            assert stats["connections"] == 1 and stats["open_sessions"] == 1
            assert stats["cache_misses"] >= 1
            assert dict(conn.root.get_limits())["max_request_bytes"] == 256 * 2**20
        finally:
            conn.close()
        wait_until(lambda: dict(srv.stats())["connections"] == 0)


# ---- a view method asked of the root service -----------------------------------------------

@pytest.mark.parametrize("name", VIEW_METHODS)
def test_view_methods_on_the_root_say_to_open_a_file_first(own_server, name):
    """Was: rpyc's bare AttributeError("cannot access 'get_stream_segment'")."""
    conn = get_connection(own_server.port, timeout=10)
    try:
        with pytest.raises(NoFileOpenError) as info:
            getattr(conn.root, name)(10, 0)
        message = str(info.value)
        assert f"{name} is a method of an open file" in message
        assert "open_file(path)" in message
        assert "'alpha.mefd'" in message and repr(os.path.join("sub", "beta.mefd")) in message
        assert isinstance(info.value, software.StreamError)
        assert isinstance(info.value, AttributeError)      # hasattr() stays False
        assert not hasattr(conn.root, name)
        assert conn.root.open_file("alpha.mefd").get_info()  # the connection is fine
    finally:
        conn.close()


def test_plain_rpyc_connect_rebuilds_the_error_class(own_server):
    conn = rpyc.connect("127.0.0.1", own_server.port, config=settings.RPYC_CONFIG)
    try:
        with pytest.raises(software.StreamError) as info:
            conn.root.get_stream_segment(10, 0)
        assert isinstance(info.value, NoFileOpenError)    # rebuilt, not a GenericException
        assert "open_file(path)" in str(info.value)
        assert decode_segment(conn.root.open_file("alpha.mefd").get_stream_segment(5, 0)
                              ).shape == (1, 5)
    finally:
        conn.close()


def test_the_error_lists_at_most_ten_sessions(tmp_path):
    from software.server.roots import sessions_under
    for i in range(12):
        os.makedirs(tmp_path / f"s{i:02d}.mefd" / "a.timd")
    os.makedirs(tmp_path / ".hidden" / "x.mefd" / "a.timd")
    os.makedirs(tmp_path / "s00.mefd" / "inner.mefd" / "a.timd")  # a session is not entered
    os.makedirs(tmp_path / "empty.mefd")                       # no channel: not a session
    found, more = sessions_under(str(tmp_path))
    assert found == tuple(f"s{i:02d}.mefd" for i in range(10)) and more
    assert sessions_under(str(tmp_path / "s05.mefd")) == ((), False)
