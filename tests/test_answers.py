"""SegmentEncoder and ServerArea on the arena: what an encoder counts, and an area's
regions, slots and lifecycle (unit tests, no server)."""
from __future__ import annotations

import mmap
import os
import time

import numpy as np
import pytest

from software.shm.layout import DATA_OFFSET, MAGIC, SHM_DIR, TOKEN_BYTES, slot_views
from software.stream.answers import MIN_AREA, SegmentEncoder, ServerArea
from software.stream.counters import Counters
from software.transport.wire import SHARED_TAG

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="no /dev/shm here")


@pytest.fixture
def directory():
    """A tmpfs directory of its own (other test runs sweep /dev/shm itself)."""
    path = os.path.join(SHM_DIR, f"mefstream-test-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(path, 0o700)
    yield path
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)


class Conn:
    """Stands in for the connection: the encoder only asks whether it sends buffers."""
    sends_buffers = False


def test_the_encoder_counts_bytes_shared_answers_and_fallbacks(directory):
    counters = Counters()
    encoder = SegmentEncoder(Conn(), directory, counters=counters)
    assert encoder.form == "plain"                      # a connection's default (issue 18)
    encoder.set_form("packed")                          # what get_connection asks for
    try:
        plain = np.arange(12.0).reshape(3, 4)
        value = encoder(plain)                             # no area yet: the socket
        assert value[0] != SHARED_TAG
        name, capacity = encoder.offer(MIN_AREA)
        with open(os.path.join(directory, name), "rb") as fh:
            token = fh.read(8 + TOKEN_BYTES)[8:]
        assert encoder.attach(token) and not os.path.exists(os.path.join(directory, name))
        big = np.ones((2, capacity // 16 - 8))             # most of the area
        assert encoder(big)[0] == SHARED_TAG
        assert encoder(big)[0] != SHARED_TAG               # full (nothing released): socket
        built = encoder.reserve((1, 8))
        built[:] = 3.0
        assert encoder(built)[0] == SHARED_TAG             # built in place: handed over
        encoder.discard()
        assert (encoder.shared, encoder.fallbacks) == (2, 1)
        assert dict(counters.snapshot()) == {
            "bytes_served": plain.nbytes + 2 * big.nbytes + built.nbytes,
            "answers_shared": 2, "shm_fallbacks": 1}
    finally:
        encoder.close()
    assert "shared=2" in repr(encoder)
    assert SegmentEncoder(None, directory).offer(MIN_AREA) is False   # in-process: none


def test_server_area_header_slots_and_reuse(directory):
    with ServerArea(MIN_AREA, directory) as area:
        with open(area.path, "rb") as fh:
            head = fh.read(DATA_OFFSET)
        assert head[:8] == MAGIC and head[8:8 + TOKEN_BYTES] == area.token
        assert np.frombuffer(head, np.uint64, 3, 24).tolist() == [1024, DATA_OFFSET,
                                                                   MIN_AREA]
        first = area.put(np.full((2, 100), 1.0))
        second = area.put(np.full((3,), 2.0))
        assert first[0] == SHARED_TAG and (first[3], first[4]) == (0, 1)
        assert (second[3], second[4], second[5]) == (1, 2, 1600)   # slot, seq, offset
        assert area.in_use == 2

        with open(area.path, "r+b") as fh:                 # the client's end of it
            client = mmap.mmap(fh.fileno(), 0)
        issued, released = slot_views(client)
        assert issued[0] == 1 and issued[1] == 2
        released[0] = 1                                    # the client read the first
        third = area.put(np.full((2, 100), 3.0))           # its region and slot again
        assert (third[3], third[4], third[5]) == (0, 3, 0) and area.in_use == 2
        samples = np.frombuffer(client, np.float64, 200, DATA_OFFSET).reshape(2, 100)
        assert (samples == 3.0).all()
        dest, ticket = area.reserve((4,))
        area.cancel(ticket)
        area.cancel(ticket)                                # twice: frees once
        assert area.in_use == 2
        area.attach()
        assert not os.path.exists(area.path) and "attached" in repr(area)
        del samples, issued, released, dest
        client.close()
    assert area.closed and area.put(np.ones(3)) is None and "closed" in repr(area)
    area.close()
