"""Same-host shared memory (issue 4): negotiated by ``get_connection``, byte-exact with the
socket and with ``MefReader`` for sync calls, callbacks and iterators; silent fallback to
the socket; a full area falls back per answer and is never overwritten; nothing is left in
``/dev/shm`` (and no mapping in the server) when a client or the server is SIGKILLed.

Real servers (in-process on port 0, or ``start.py`` processes), real reader processes, real
client processes. Leftovers are checked by name: other test runs may use /dev/shm too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest
import rpyc
from rpyc.core import consts
from rpyc.utils.server import ThreadedServer

import settings
import software
from software import (
    MefStreamServer,
    StreamRowIterator,
    StreamSegmentIterator,
    decode_segment,
    get_connection,
)
from software.client.connect import CLIENT_RPYC_CONFIG
from software.client.shared_memory import negotiate
from software.shm.layout import SHM_DIR
from software.transport.connection import FastConnection, fast_connect
from software.transport.wire import SHARED_TAG
from tests.test_faults import MAIN_CHANNELS, ROOT, readers_of, same, spawn_server
from tests.util import START, reference, wait_until

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="no /dev/shm here")


@pytest.fixture(scope="module")
def main_ref(main_path):
    return reference(main_path, MAIN_CHANNELS)


def named(name: str) -> bool:
    """Whether the area file ``name`` still exists in /dev/shm."""
    return os.path.exists(os.path.join(SHM_DIR, name))


def mapped(name: str, pid: int | str = "self") -> bool:
    """Whether process ``pid`` still maps the area ``name`` (its memory is not freed)."""
    with open(f"/proc/{pid}/maps") as fh:
        return name in fh.read()


def is_bytes_segment(value) -> bool:
    """The wire form; get_connection receives the payload as a (writable) bytearray."""
    return (type(value) is tuple and len(value) == 3 and type(value[0]) in (bytes, bytearray)
            and type(value[1]) is str and type(value[2]) is tuple)


# ---- values -------------------------------------------------------------------------------

def test_answers_equal_the_socket_and_mefreader(server, main_ref):
    shm = get_connection(server.port, host="127.0.0.1")
    sock = get_connection(server.port, host="127.0.0.1", shared_memory=False)
    try:
        area = shm.shared_memory
        assert area is not None and sock.shared_memory is None
        assert not named(area.name) and mapped(area.name)     # unlinked, still mapped
        a, b = shm.root.open_file("main.mefd").proxy, sock.root.open_file("main.mefd").proxy
        calls = [
            (lambda s: s.get_stream_segment(3000, 100), main_ref[:, 100:3100]),
            (lambda s: s.get_row_segment(2, 5000, 7), main_ref[2, 7:5007]),
            (lambda s: s.get_row_segment("index", 50, 46070), main_ref[5, 46070:46120]),
            (lambda s: s.get_segment(3), main_ref[:, 3 * 1792:4 * 1792]),
            (lambda s: s.get_time_segment(START - 2_000_000, START + 3_000_000), None),
        ]
        before = area.adopted
        for call, expected in calls:
            va, vb = call(a), call(b)
            assert is_bytes_segment(va) and is_bytes_segment(vb)
            assert same(decode_segment(va), decode_segment(vb))
            if expected is not None:
                assert same(decode_segment(va), expected)
        padded = decode_segment(va)
        assert np.isnan(padded[:, :512]).all() and same(padded[:, 512:], main_ref[:, :768])
        assert area.adopted - before == len(calls)
        assert shm.root.open_shared_memory(2**20) is False        # one area per connection
    finally:
        shm.close()
        sock.close()
    wait_until(lambda: not mapped(area.name))          # unmapped on close, both sides


def test_cached_answers_are_built_in_the_area(server, main_ref, monkeypatch):
    """An answer sent as it is is assembled in the area (no copy into it), read for it or
    cached; rows and padded windows are copied in; an answer reserved but not sent frees
    its region."""
    from software.stream.answers import SegmentEncoder, ServerArea
    copies = []
    put = ServerArea.put
    monkeypatch.setattr(ServerArea, "put", lambda self, data: copies.append(data.shape)
                        or put(self, data))
    with get_connection(server.port, host="127.0.0.1") as conn:
        svc = conn.root.open_file("main.mefd")
        assert same(decode_segment(svc.get_stream_segment(3000, 40000)),  # read for it
                    main_ref[:, 40000:43000])
        decode_segment(svc.get_stream_segment(3000, 9000))      # cache it
        wait_until(lambda: dict(server.cache.stats())["in_flight"] == 0, timeout=30)
        for _ in range(3):
            assert same(decode_segment(svc.get_stream_segment(3000, 9000)),
                        main_ref[:, 9000:12000])
        assert copies == []                                     # built in place
        assert same(decode_segment(svc.get_row_segment(2, 3000, 9000)), main_ref[2, 9000:12000])
        assert copies == [(3000,)]                              # one row: copied in
        assert conn.shared_memory.adopted >= 4
    assert SegmentEncoder().reserve((2, 3)) is None             # no area: build elsewhere
    area = ServerArea(2**20)
    try:
        first, ticket = area.reserve((4, 100))
        assert first.shape == (4, 100) and area.in_use == 1
        area.cancel(ticket)                                     # not sent: freed
        assert area.in_use == 0
        again, ticket = area.reserve((4, 100))
        assert again.ctypes.data == first.ctypes.data           # the same region again
        del first, again
    finally:
        area.close()


def test_callbacks_iterators_views_and_connections(data_root, main_path, main_ref):
    """Many callbacks outstanding at once on two files, and iterators on three
    connections at the same time, all through shared memory (cold cache: data pending)."""
    mixed_ref = reference(os.path.join(data_root, "mixed.mefd"), ["fast2", "fast1"])
    with MefStreamServer(port=0, data_root=data_root, workers=2, prefetch=0, cache_mb=64,
                         block_seconds=1.0) as srv:
        conns = [get_connection(srv.port, host="127.0.0.1") for _ in range(3)]
        try:
            assert all(c.shared_memory is not None for c in conns)
            main, mixed = (conns[0].root.open_file(p).proxy for p in ("main.mefd",
                                                                       "mixed.mefd"))
            mixed.set_active_channels(["fast2", "fast1"])
            got: dict = {}
            lock = threading.Lock()

            def keep(key):
                def callback(value):
                    with lock:
                        got[key] = value
                return callback

            asked = {}
            for start in range(0, main_ref.shape[1], 2560):
                asked[("main", start)] = main.get_stream_segment(2560, start,
                                                                 keep(("main", start)))
            for start in range(0, mixed_ref.shape[1], 1024):
                asked[("mixed", start)] = mixed.get_stream_segment(1024, start,
                                                                   keep(("mixed", start)))
            pending = [k for k, v in asked.items() if v is False]
            assert len(pending) > 10
            wait_until(lambda: len(got) == len(pending), timeout=30)
            assert conns[0].shared_memory.adopted == len(asked)     # each one in the area
            for key, value in {**got, **{k: v for k, v in asked.items() if v}}.items():
                assert is_bytes_segment(value), key
                name, start = key
                ref, size = (main_ref, 2560) if name == "main" else (mixed_ref, 1024)
                assert same(decode_segment(value), ref[:, start:start + size]), key

            results: dict = {}

            def iterate(i, conn):
                svc = conn.root.open_file("main.mefd")
                if i == 1:
                    chunks = list(StreamRowIterator("index", _range=4096, target=svc))
                    results[i] = np.concatenate(chunks)
                else:
                    chunks = list(StreamSegmentIterator(_range=3000 + i, target=svc))
                    results[i] = np.concatenate(chunks, axis=1)

            threads = [threading.Thread(target=iterate, args=(i, c)) for i, c in
                       enumerate(conns)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert same(results[0], main_ref) and same(results[2], main_ref)
            assert same(results[1], main_ref[5])
            assert all(c.shared_memory.adopted > 0 for c in conns)
        finally:
            for conn in conns:
                conn.close()


def test_session_at_the_root(data_root, main_path, main_ref):
    """CREPE style (``start.py PATH.mefd``): the root is the view, negotiated the same way."""
    with MefStreamServer(port=0, data_root=data_root, workers=1, session=main_path) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        try:
            area = conn.shared_memory
            assert area is not None
            got = []
            value = conn.root.proxy.get_stream_segment(2000, 300, got.append)  # wire form
            if value is False:
                wait_until(lambda: got, timeout=30)
                value = got[0]
            assert is_bytes_segment(value) and same(decode_segment(value),
                                                    main_ref[:, 300:2300])
            assert same(decode_segment(conn.root.get_row_segment("Cz", 100, 5)),
                        main_ref[0, 5:105])
            assert area.adopted == 2
        finally:
            conn.close()
        wait_until(lambda: not mapped(area.name))                  # server side too


# ---- fallbacks ----------------------------------------------------------------------------

def test_clients_that_did_not_negotiate_get_bytes(server, main_ref, tmp_path):
    # a CREPE-style plain rpyc.connect client: stock Connection, CREPE's nested tuples by
    # default (issue 18), bytes once it asks for the packed form; callbacks too
    plain = rpyc.connect("127.0.0.1", server.port, config=settings.RPYC_CONFIG)
    try:
        assert not isinstance(plain, FastConnection)
        svc = plain.root.open_file("main.mefd")
        value = svc.get_stream_segment(700, 9000)
        assert len(value) == 6 and same(decode_segment(value), main_ref[:, 9000:9700])
        plain.root.set_answer_form("packed")
        value = svc.get_stream_segment(700, 9000)
        assert is_bytes_segment(value) and same(decode_segment(value), main_ref[:, 9000:9700])
        it = StreamSegmentIterator(_range=1000, start=20000)
        assert same(it.next_or_wait(svc, timeout=30), main_ref[:, 20000:21000])
    finally:
        plain.close()
    # the client cannot open what the server created (another host): declined, removed
    conn = fast_connect("127.0.0.1", server.port, config=CLIENT_RPYC_CONFIG)
    try:
        name, capacity = conn.root.open_shared_memory(3 * 2**20)
        assert type(name) is str and capacity == 3 * 2**20 and named(name)
        assert conn.root.attach_shared_memory(False) is False and not named(name)
        assert negotiate(conn, 2**20, directory=str(tmp_path)) is None   # not found there
        assert conn.value_hook is None
        svc = conn.root.open_file("main.mefd")
        assert conn.root.set_answer_form("packed") == "packed"
        assert is_bytes_segment(svc.get_row_segment(0, 10, 0))
    finally:
        conn.close()


def test_stock_server_means_socket(server):
    """An older or stock server has no negotiation methods: the connection just works."""
    class Old(rpyc.Service):
        def exposed_echo(self, x):
            return x

    old = ThreadedServer(Old, hostname="127.0.0.1", port=0)
    old._listen()
    thread = threading.Thread(target=old.start, daemon=True)
    thread.start()
    try:
        conn = get_connection(old.port, host="127.0.0.1")
        try:
            assert conn.shared_memory is None and conn.root.echo(b"x" * 100_000) == \
                b"x" * 100_000
        finally:
            conn.close()
    finally:
        old.close()
        thread.join(10)


def test_full_area_falls_back_and_is_never_overwritten(server, main_ref):
    conn = get_connection(server.port, host="127.0.0.1", shared_memory_mb=1)
    try:
        area = conn.shared_memory
        assert area.capacity == 2**20
        svc = conn.root.open_file("main.mefd").proxy               # the wire form
        before = area.adopted
        big = svc.get_stream_segment(30000, 0)                  # 1.44 MB > the area
        assert is_bytes_segment(big) and same(decode_segment(big), main_ref[:, :30000])
        assert area.adopted == before
        conn.value_hook = None       # a client that has not read its answers yet
        held = [svc.get_stream_segment(8000, s) for s in (0, 8000)]   # 2 x 384 kB
        assert all(v[0] == SHARED_TAG for v in held)
        third = svc.get_stream_segment(8000, 16000)             # does not fit: socket
        assert is_bytes_segment(third) and same(decode_segment(third),
                                                main_ref[:, 16000:24000])
        with pytest.raises(software.StreamError, match="shared-memory"):
            decode_segment(held[0])
        # what the client holds was not overwritten; reading it frees the regions
        for value, start in zip(held, (0, 8000)):
            assert same(decode_segment(area.adopt(value)), main_ref[:, start:start + 8000])
        conn.value_hook = area.adopt
        again = [svc.get_stream_segment(8000, s) for s in (24000, 32000)]
        assert area.adopted == before + 4
        assert same(decode_segment(again[1]), main_ref[:, 32000:40000])
    finally:
        conn.close()


def test_negotiation_methods_refuse_bad_input_and_leak_nothing(server):
    first = fast_connect("127.0.0.1", server.port, config=CLIENT_RPYC_CONFIG)
    second = fast_connect("127.0.0.1", server.port, config=CLIENT_RPYC_CONFIG)
    try:
        for bad, error in (("big", software.InvalidTypeError), (-1, software.InvalidRangeError),
                           (2.5, software.InvalidTypeError), (None, software.InvalidTypeError)):
            with pytest.raises(error):
                first.root.open_shared_memory(bad)
        for bad in (123, "token", None, (b"x",)):
            with pytest.raises(software.InvalidTypeError):
                first.root.attach_shared_memory(bad)
        name, _ = first.root.open_shared_memory(10**15)          # cut to 1 GiB, not 1 PB
        assert os.path.getsize(os.path.join(SHM_DIR, name)) < 2**30 + 2**20
        with open(os.path.join(SHM_DIR, name), "rb") as fh:
            token = fh.read(24)[8:]
        assert second.root.attach_shared_memory(token) is False    # not its offer
        assert named(name)
        assert first.root.attach_shared_memory(b"\0" * 16) is False and not named(name)
        assert first.root.attach_shared_memory(token) is False      # offer gone
        view = first.root.open_file("main.mefd")
        for obj in (first.root, view):                  # the encoder stays out of reach
            with pytest.raises(AttributeError):
                first.sync_request(consts.HANDLE_GETATTR, obj, "_encoder")
    finally:
        first.close()
        second.close()


# ---- nothing left behind ------------------------------------------------------------------

CLIENT_SCRIPT = textwrap.dedent("""
    import sys
    from software import get_connection
    port = int(sys.argv[1])
    conn = get_connection(port, host="127.0.0.1")
    other = get_connection(port, host="127.0.0.1", shared_memory=False)
    offered, _ = other.root.open_shared_memory(2**20)      # offered, never attached
    svc = conn.root.open_file("main.mefd")
    svc.get_stream_segment(2560, 0)
    answers = [svc.get_stream_segment(2560, s, lambda v: None) for s in range(0, 46080, 2560)]
    print("ready", conn.shared_memory.name, offered, flush=True)
    sys.stdin.read()      # wait to be killed
""")


def test_client_killed_leaves_nothing(server, main_ref, tmp_path):
    """SIGKILL a client holding an attached area (callbacks in flight) and a connection
    with an offer it never took: both files are gone, the server unmaps both."""
    out = tmp_path / "client.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, str(server.port)],
                                cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=fh)
    try:
        wait_until(lambda: "ready" in out.read_text() or proc.poll() is not None, timeout=60)
        line = [x for x in out.read_text().splitlines() if x.startswith("ready")]
        assert line, out.read_text()
        attached, offered = line[0].split()[1:]
        assert not named(attached) and mapped(attached) and mapped(attached, proc.pid)
        assert named(offered) and mapped(offered)
        proc.kill()
    finally:
        proc.wait(timeout=10)
        proc.stdin.close()
    wait_until(lambda: not named(offered) and not mapped(offered) and not mapped(attached),
               timeout=20)
    conn = get_connection(server.port, host="127.0.0.1")         # the server goes on
    try:
        svc = conn.root.open_file("main.mefd")
        assert conn.shared_memory is not None
        assert same(decode_segment(svc.get_stream_segment(5000, 40000)),
                    main_ref[:, 40000:45000])
    finally:
        conn.close()


def test_server_killed_leaves_nothing(data_root, main_ref, tmp_path):
    """SIGKILL ``start.py`` with an attached area and an offered one: the attached one has
    no name from the start and goes with the client's mapping; the offered one and the
    readers' landing area (their lock died with the server) are removed by the next
    server."""
    procs = []
    try:
        proc, port = spawn_server(data_root, tmp_path / "server1.log")
        procs.append(proc)
        conn = get_connection(port, host="127.0.0.1")
        area = conn.shared_memory
        assert area is not None and not named(area.name) and mapped(area.name, proc.pid)
        raw = fast_connect("127.0.0.1", port, config=CLIENT_RPYC_CONFIG)
        offered, _ = raw.root.open_shared_memory(2**20)
        svc = conn.root.open_file("main.mefd")
        kept = decode_segment(svc.get_stream_segment(4000, 100))
        readers = readers_of(psutil.Process(proc.pid))
        procs += readers
        landing = [n for n in os.listdir(SHM_DIR) if n.startswith("mefstream-")
                   and n != offered and mapped(n, proc.pid)]
        assert len(landing) == 1                                  # where readers put samples
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        with pytest.raises((EOFError, ConnectionError, OSError)):
            svc.get_stream_segment(10, 0)
        assert same(kept, main_ref[:, 100:4100])                  # received data stays
        conn.close()
        raw.close()
        assert not mapped(area.name)                              # freed with the client
        assert named(offered) and named(landing[0])
        _, alive = psutil.wait_procs(readers, timeout=10)         # readers end by themselves
        assert not alive
        old = time.time() - 60
        for name in (offered, landing[0]):
            os.utime(os.path.join(SHM_DIR, name), (old, old))
        proc2, port2 = spawn_server(data_root, tmp_path / "server2.log")
        procs.append(proc2)
        conn = get_connection(port2, host="127.0.0.1")            # its first offer sweeps
        try:
            assert not named(offered) and not named(landing[0])
            assert conn.shared_memory is not None
            svc = conn.root.open_file("main.mefd")
            assert same(decode_segment(svc.get_stream_segment(4000, 100)), kept)
        finally:
            conn.close()
        procs += readers_of(psutil.Process(proc2.pid))
    finally:
        for p in procs:
            try:
                p.kill()
            except (ProcessLookupError, psutil.Error):
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except (psutil.Error, subprocess.TimeoutExpired):
                pass


def area_resident_kib(name: str) -> int:
    """Resident KiB of this process's mappings of the area ``name`` (the largest one)."""
    best, current = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and ":" not in head[0]:     # a mapping's header
                current = name in line
            elif current and line.startswith("Rss:"):
                best = max(best, int(head[1]))
    return best


def test_read_answers_give_their_pages_back(server, main_ref, monkeypatch):
    """An area keeps at most RESIDENT_KEEP resident once its answers were read, so many
    connections do not each hold their high-water mark."""
    from software.stream.answers import ServerArea
    monkeypatch.setattr(ServerArea, "RESIDENT_KEEP", 2**21)
    conn = get_connection(server.port, host="127.0.0.1", shared_memory_mb=8)
    try:
        area = conn.shared_memory
        svc = conn.root.open_file("main.mefd").proxy               # the wire form
        whole = main_ref.shape[1]                                 # 2.2 MB per answer
        conn.value_hook = None                                    # hold them: 3 regions
        held = [svc.get_stream_segment(whole, 0) for _ in range(3)]
        assert all(v[0] == SHARED_TAG for v in held)
        assert area_resident_kib(area.name) >= 6 * 1024
        for value in held:
            assert same(decode_segment(area.adopt(value)), main_ref)   # read: released
        conn.value_hook = area.adopt
        assert same(decode_segment(svc.get_stream_segment(10, 5)), main_ref[:, 5:15])
        assert area_resident_kib(area.name) <= 2 * 1024 + 64
        assert same(decode_segment(svc.get_stream_segment(whole, 0)), main_ref)  # reused
    finally:
        conn.close()
