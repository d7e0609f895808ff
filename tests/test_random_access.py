"""Random access reads only what the window needs (issue 15): a request that jumps, also
right after the channels changed, starts no read-ahead; a request that continues the last
one still does. Counted in the cache of a real server with real reader processes."""
from __future__ import annotations

import pytest

from software import MefStreamServer, decode_segment, get_connection
from tests.util import wait_until

SIZE = 2560   # samples per cache block (10 s at 256 Hz)


@pytest.fixture
def ahead_server(data_root):
    srv = MefStreamServer(host="127.0.0.1", port=0, data_root=data_root, workers=2,
                          prefetch=2, cache_mb=64)
    srv.start()
    yield srv
    srv.close()


def settled(srv) -> int:
    """Blocks cached once no read is in flight."""
    wait_until(lambda: dict(srv.cache.stats())["in_flight"] == 0 and srv.pool.queued() == 0,
               timeout=30)
    return len(srv.cache)


def test_a_jump_after_a_channel_change_reads_nothing_ahead(ahead_server):
    """Kills: forgetting the position when the channels change (the old code): every
    random window of a loader that picks channels per window then counted as the start
    of a stream and queued reads ahead that the next window waited behind."""
    srv = ahead_server
    with get_connection(srv.port, host="127.0.0.1", timeout=10) as conn:
        svc = conn.root.open_file("main.mefd")
        svc.set_active_channels(["Cz", "O1"])
        decode_segment(svc.get_stream_segment(SIZE, 12 * SIZE))  # a view's first request
        before = settled(srv)
        assert before > 2                                         # ... reads ahead
        for names, block in ((["Fp1", "O2"], 14), (["index", "Fp2"], 2), (["Cz"], 3)):
            svc.set_active_channels(names)
            decode_segment(svc.get_stream_segment(SIZE - 100, block * SIZE + 50))
            cached = settled(srv)
            assert cached == before + len(names), (names, block)  # its own block only
            before = cached


def test_a_request_that_continues_after_a_channel_change_still_reads_ahead(ahead_server):
    srv = ahead_server
    with get_connection(srv.port, host="127.0.0.1", timeout=10) as conn:
        svc = conn.root.open_file("main.mefd")
        svc.set_active_channels(["Cz"])
        decode_segment(svc.get_stream_segment(SIZE, 0))
        before = settled(srv)
        svc.set_active_channels(["O1"])
        decode_segment(svc.get_stream_segment(SIZE, SIZE))        # continues: a stream
        assert settled(srv) > before + 1
