"""Nobody let in (issue 3): loopback by default, a warning for other interfaces without TLS,
no attribute of the server reachable but the exposed API, no pickle, views private to their
connection, and MEF passwords never shown (logs, get_info, errors, list_open_files).
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import socket

import psutil
import pytest
import rpyc
from rpyc.core import consts
from rpyc.core.netref import BaseNetref

import software
from software import MefStreamServer, decode_segment, get_connection
from tests.conftest import PASSWORD1, PASSWORD2
from tests.util import wait_until

#: Names a client must not reach on the root service or on a StreamService, even with
#: raw protocol requests (a netref resolves some of them locally, so plain getattr is
#: not proof enough).
PRIVATE = [
    "_registry", "_options", "_views", "_lock", "_recording", "_deliverer", "_group", "_names",
    "_display_path", "_segment_samples", "_serve", "_prefetch", "_check_open", "_row_name",
    "close", "closed", "on_connect", "on_disconnect", "_source", "_requests",
    "__class__", "__dict__", "__init__", "__module__", "__reduce__", "__reduce_ex__",
    "__getattribute__", "__setattr__", "__subclasshook__", "__init_subclass__", "__weakref__",
    "__sizeof__", "__globals__", "__builtins__", "_protocol", "_rpyc_getattr",
    "getmodule", "eval", "execute", "namespace",            # what rpyc's SlaveService has
]
#: What a bound method must not give away (its object, its function, the module globals).
METHOD_PRIVATE = ["__self__", "__func__", "__globals__", "__code__", "__closure__",
                  "__wrapped__", "__defaults__", "__kwdefaults__", "__module__", "__class__"]


def message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else ""


def raw_getattr(conn, obj, name):
    """An attribute request sent as is, without the netref's local shortcuts."""
    return conn.sync_request(consts.HANDLE_GETATTR, obj, name)


def no_netrefs(value) -> bool:
    """Whether ``value`` is made only of values sent by copy (no proxy into the server)."""
    if isinstance(value, BaseNetref):
        return False
    if isinstance(value, (tuple, list)):
        return all(no_netrefs(v) for v in value)
    return isinstance(value, (bytes, bytearray, str, int, float, bool, type(None)))


# ---- binding ---------------------------------------------------------------------------------

def external_ipv4() -> list[str]:
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def test_binds_loopback_by_default(data_root):
    import start  # the launcher's default too
    assert start.parse_args([]).host == "127.0.0.1"
    with MefStreamServer(port=0, data_root=data_root, workers=1) as srv:
        assert srv.host == "127.0.0.1"
        assert srv._server.listener.getsockname()[0] == "127.0.0.1"
        for address in external_ipv4():              # not reachable from another interface
            with socket.socket() as sock, pytest.raises(OSError):
                sock.settimeout(2)
                sock.connect((address, srv.port))
        get_connection(srv.port, host="127.0.0.1").close()


def test_other_interface_without_tls_logs_a_warning(data_root, caplog):
    caplog.set_level(logging.WARNING, logger="software.server.server")
    srv = MefStreamServer(host="0.0.0.0", port=0, data_root=data_root, workers=1)
    try:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and r.name == "software.server.server"]
        assert len(warnings) == 1
        text = warnings[0].getMessage()
        assert "0.0.0.0" in text and "without TLS" in text and "--tls-cert" in text
    finally:
        srv.close()
    caplog.clear()
    for host, authenticator in (("127.0.0.1", None), ("localhost", None),
                                ("0.0.0.0", lambda sock: (sock, None))):
        MefStreamServer(host=host, port=0, data_root=data_root, workers=1,
                        authenticator=authenticator).close()
    assert not [r for r in caplog.records if "without TLS" in r.getMessage()]


# ---- the RPyC surface ---------------------------------------------------------------------

@pytest.fixture
def view(conn):
    """The server's view itself (the proxy behind get_connection's RemoteStream)."""
    return conn.root.open_file("main.mefd").proxy


@pytest.mark.parametrize("name", PRIVATE)
def test_private_attributes_are_unreachable(conn, view, name):
    for obj in (conn.root.proxy, view):
        with pytest.raises(AttributeError):
            raw_getattr(conn, obj, name)
        with pytest.raises(AttributeError):
            conn.sync_request(consts.HANDLE_CALLATTR, obj, name, (), ())


@pytest.mark.parametrize("name", METHOD_PRIVATE)
def test_bound_methods_give_nothing_away(conn, view, name):
    root = conn.root.proxy
    for method in (root.open_file, root.list_open_files, view.get_info,
                   view.get_stream_segment):
        with pytest.raises(AttributeError):
            raw_getattr(conn, method, name)


def test_no_setattr_delattr_pickle_or_plain_access(conn, view):
    root = conn.root.proxy
    for obj, name in ((root, "_registry"), (view, "_options"), (root, "exposed_open_file"),
                      (view, "get_info"), (view, "segment_seconds")):
        with pytest.raises(AttributeError):
            conn.sync_request(consts.HANDLE_SETATTR, obj, name, None)
        with pytest.raises(AttributeError):
            conn.sync_request(consts.HANDLE_DELATTR, obj, name)
    with pytest.raises(AttributeError):
        view._recording = None
    with pytest.raises(AttributeError):
        del root._registry
    for name in ("_registry", "_recording", "getmodule", "_views"):   # ordinary access
        with pytest.raises(AttributeError):
            getattr(root if name != "_recording" else view, name)
    for obj in (root, view, view.get_info):
        with pytest.raises(ValueError, match="pickling is disabled"):
            conn.sync_request(consts.HANDLE_PICKLE, obj, pickle.HIGHEST_PROTOCOL)
        with pytest.raises(ValueError, match="pickling is disabled"):
            rpyc.classic.obtain(obj)
    # the netref's class is resolved on the client, never fetched from the server
    assert not isinstance(type(view), BaseNetref) and not isinstance(view.__class__, BaseNetref)
    assert decode_segment(view.get_stream_segment(4, 0)).shape == (6, 4)     # still fine


def test_exposed_methods_return_only_copies(conn, view):
    root = conn.root.proxy
    values = [view.get_info(), view.set_active_channels(["index", "Cz"]),
              view.set_segment_size(3.0), view.get_segment(1), view.get_row_segment(0, 5, 0),
              view.get_stream_segment(5, 0), view.get_time_segment(1_600_000_000_000_000,
                                                                   1_600_000_001_000_000),
              view.get_stream_segment(5, 10**9), root.list_open_files(),
              root.get_service_name(), root.close_file("mixed.mefd")]
    assert all(no_netrefs(v) for v in values), [type(v) for v in values]
    assert isinstance(root.open_file("mixed.mefd"), BaseNetref)   # the one proxy, by design


def test_views_are_private_to_their_connection(server):
    first = get_connection(server.port, host="127.0.0.1")
    second = get_connection(server.port, host="127.0.0.1")
    try:
        mine = first.root.open_file("main.mefd")
        theirs = second.root.open_file("main.mefd")
        mine.set_active_channels(["Cz"])
        mine.set_segment_size(1.0)
        first.root.open_file("mixed.mefd")
        info = dict(theirs.get_info())
        assert len(info["channels"]) == 6 and info["segment_seconds"] == 7.0
        assert second.root.list_open_files() == ("main.mefd",)     # not the other's files
        assert second.root.close_file("mixed.mefd") is False        # cannot close them
        assert first.root.list_open_files() == ("main.mefd", "mixed.mefd")
        assert second.root.close_file("main.mefd") is True
        assert dict(mine.get_info())["channels"] == ("Cz",)        # still served
        with pytest.raises(software.ServiceClosedError):
            theirs.get_info()
    finally:
        first.close()
        second.close()


# ---- passwords --------------------------------------------------------------------------------

def test_passwords_never_appear(data_root, caplog):
    """Right, wrong, level-1 and too long passwords, a second opener and a read retried after
    a reader died: no password in any log record (DEBUG), error, get_info or file list."""
    caplog.set_level(logging.DEBUG)
    wrong, too_long = "not-the-pass", "a-password-far-too-long-for-mef3"
    secrets = (PASSWORD1, PASSWORD2, wrong, too_long)
    seen: list[str] = []
    with MefStreamServer(port=0, data_root=data_root, workers=2, block_seconds=1.0,
                         prefetch=0) as srv:
        srv.pool.warm_up()
        conn = get_connection(srv.port, host="127.0.0.1")
        other = get_connection(srv.port, host="127.0.0.1")
        try:
            for password in (None, wrong, PASSWORD1, too_long):
                with pytest.raises(software.WrongPasswordError) as caught:
                    conn.root.open_file("secret.mefd", password)
                seen += [str(caught.value), repr(caught.value)]
            svc = conn.root.open_file("secret.mefd", PASSWORD2)
            assert decode_segment(svc.get_stream_segment(256, 0)).shape == (1, 256)
            seen += [repr(svc.get_info()), repr(conn.root.list_open_files()), repr(svc),
                     repr(srv.stats()), repr(srv.registry.open_paths())]
            for password in (wrong, PASSWORD1):      # the session is open: checked again
                with pytest.raises(software.WrongPasswordError) as caught:
                    other.root.open_file("secret.mefd", password)
                seen.append(str(caught.value))
            # a read of the encrypted session retried after its reader died: logged
            pids = srv.pool.pids()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                assert svc.get_stream_segment(256, 2560, lambda v: None) is False
                wait_until(lambda: dict(srv.cache.stats())["in_flight"] > 0)
                for pid in pids:                     # the read in flight must be retried
                    os.kill(pid, signal.SIGKILL)
            finally:
                for pid in pids:                     # never leave a reader stopped
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
            assert decode_segment(svc.get_stream_segment(256, 2560)).shape == (1, 256)
            assert srv.pool.tasks_retried >= 1
        finally:
            conn.close()
            other.close()
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert "retrying _read_task" in logged and "<password>" in logged
    for secret in secrets:
        assert secret not in logged
        for text in seen:
            assert secret not in text, text
