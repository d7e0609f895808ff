"""Issue 18 §2, client side: a wait that times out withdraws its request on the server.

``next_or_wait(timeout=...)`` / ``over(timeout=...)`` call ``withdraw(callback)`` with the
very callback they registered (branch ``live`` gives every view and stream root
``exposed_withdraw``); an answer that arrives while withdrawing, or was already under way,
is returned now or by the next call, never lost or delivered twice; a server without
``withdraw`` still holds one request per iterator at most. The races are built on
purpose with an in-process target whose answer arrives at the hard moment.
"""
from __future__ import annotations

import numpy as np
import pytest

from software import MefStreamServer, StreamSegmentIterator, get_connection
from software.live.source import LiveStream
from tests.test_crepe_scripts import _waiting, plain, ramp, same


@pytest.mark.parametrize("kind", ["get_connection", "plain"])
def test_timed_out_waits_leave_no_request_and_one_push_one_answer(kind):
    """Failed before (needs branch live's withdraw): 40 timed-out waits left 40 requests,
    and the push after them delivered 40 callbacks."""
    stream = LiveStream("rig", ["a", "b"], 1000.0, history_seconds=10)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        conn = get_connection(srv.port, host="127.0.0.1") if kind == "get_connection" \
            else plain(srv.port)
        try:
            it = StreamSegmentIterator(10)
            for _ in range(40):
                assert it.next_or_wait(conn, timeout=0.01) is False
                assert _waiting(srv) == 0
            delivered = dict(srv.stats())["callbacks_delivered"]
            stream.append_stream_segment_data(ramp(2, 0, 10))
            assert same(it.next_or_wait(conn, timeout=30), ramp(2, 0, 10))
            assert dict(srv.stats())["callbacks_delivered"] - delivered <= 1
            assert it.position == 10 and _waiting(srv) == 0
        finally:
            conn.close()


def test_remote_stream_withdraw_reaches_the_server_with_the_wrapper_it_was_given():
    """(needs branch live's withdraw) The same callback, registered twice through a
    RemoteStream, is withdrawn by RemoteStream.withdraw(callback): it never fires."""
    stream = LiveStream("rig", ["a"], 1000.0, history_seconds=10)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live_streams=[stream]) as srv, \
            get_connection(srv.port, host="127.0.0.1") as conn:
        svc = conn.root.open_live("rig")
        fired = []
        assert svc.get_stream_segment(5, 0, fired.append) is False
        assert svc.get_stream_segment(5, 5, fired.append) is False
        assert _waiting(srv) == 2
        assert svc.withdraw(fired.append) == 2 and _waiting(srv) == 0
        assert svc.withdraw(fired.append, timeout=5) == 0
        stream.append_stream_segment_data(np.arange(10.0)[None, :])
        assert same(svc.get_stream_segment(10, 0), np.arange(10.0)[None, :])
        assert fired == []


class _Racing:
    """An in-process target whose answer arrives in the hard moments of a timed-out wait:
    ``during`` withdraw (which then finds nothing), ``after`` it (under way when withdraw
    looked), or never (``withdrawn``: withdraw finds and removes the request)."""

    def __init__(self, when: str) -> None:
        self.when = when
        self.registered = []
        self.answer = (np.arange(6.0).reshape(2, 3),)

    def get_info(self):
        return (("growing", True), ("n_samples", 0))

    def get_stream_segment(self, _range, _startIndex, _callback=None):
        if _callback is None:
            return False
        self.registered.append(_callback)
        return False

    def exposed_withdraw(self, _callback):
        assert _callback is self.registered[-1]
        if self.when == "during":
            _callback(self.answer[0])
            return 0
        return 1 if self.when == "withdrawn" else 0

    def deliver_late(self):
        self.registered[-1](self.answer[0])


@pytest.mark.parametrize("when", ["during", "after", "withdrawn"])
def test_an_answer_racing_a_withdrawal_is_neither_lost_nor_delivered_twice(when):
    target = _Racing(when)
    it = StreamSegmentIterator(3)
    first = it.next_or_wait(target, sleep=0.01, timeout=0.02)
    if when == "during":
        assert same(first, target.answer[0]) and it.position == 3
        return
    assert first is False and it.position == 0
    if when == "after":                     # under way: kept, not asked for again
        target.deliver_late()
        assert same(it.next_or_wait(target, timeout=5), target.answer[0])
        assert len(target.registered) == 1 and it.position == 3
    else:                                   # withdrawn: the next call asks again
        assert it.next_or_wait(target, sleep=0.01, timeout=0.02) is False
        assert len(target.registered) == 2


def test_an_older_server_without_withdraw_keeps_one_request_per_iterator():
    target = _Racing("after")
    del_withdraw = type("Old", (_Racing,), {"exposed_withdraw": None})("after")
    for each in (target, del_withdraw):
        it = StreamSegmentIterator(3)
        for _ in range(5):
            assert it.next_or_wait(each, sleep=0.01, timeout=0.01) is False
        assert len(each.registered) == 1
        each.deliver_late()
        assert same(it.next_or_wait(each, timeout=5), each.answer[0])
