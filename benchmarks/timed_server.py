"""``start.py`` with per-stage CPU times of the serving threads, for profiling round trips.

    python -m benchmarks.timed_server --port P --data-root D [start.py options]

Identical to ``python start.py`` except that a few internal stages are wrapped with
``time.thread_time()`` (CPU of the calling thread) and the totals, with call counts, are
written to ``$MEFSTREAM_TIMINGS`` (JSON) at exit: the whole dispatch of a request
(``Connection._dispatch_request``), the service call (``StreamService.
exposed_get_stream_segment``) and its parts (``FileSource.gather``, ``Blocks.assemble``,
``SegmentEncoder.__call__``), boxing the reply (``FastConnection._box``) and sending it
(``FastConnection._send``), reading a request (``FastChannel.recv``). Used by
``benchmarks.roundtrip``. SIGUSR1 sets the totals to zero.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time

TIMES: dict[str, list[float]] = {}
_LOCK = threading.Lock()


def _wrap(owner, attr: str, label: str) -> None:
    original = getattr(owner, attr)
    clock = time.thread_time
    slot = TIMES.setdefault(label, [0.0, 0])

    def timed(*args, **kw):
        t = clock()
        try:
            return original(*args, **kw)
        finally:
            dt = clock() - t
            with _LOCK:
                slot[0] += dt
                slot[1] += 1

    setattr(owner, attr, timed)


def _patch() -> None:
    from rpyc.core.protocol import Connection

    from software.cache.recording import Blocks
    from software.stream.answers import SegmentEncoder
    from software.stream.service import StreamService
    from software.stream.source import FileSource
    from software.transport.connection import FastConnection
    from software.transport.framing import FastChannel
    _wrap(Connection, "_dispatch_request", "dispatch_request (all of a call)")
    _wrap(StreamService, "exposed_get_stream_segment", "  service call")
    _wrap(FileSource, "gather", "    gather (cache lookup)")
    _wrap(Blocks, "assemble", "    assemble (copy into the area)")
    _wrap(SegmentEncoder, "__call__", "    encode (publish)")
    _wrap(FastConnection, "_box", "  box the reply")
    _wrap(FastConnection, "_send", "  send the reply")
    _wrap(FastChannel, "recv", "recv (read a request)")


def _dump() -> None:
    path = os.environ.get("MEFSTREAM_TIMINGS")
    if path:
        with open(path, "w") as fh:
            json.dump(TIMES, fh)


def _reset(signum, frame) -> None:
    with _LOCK:
        for slot in TIMES.values():
            slot[0], slot[1] = 0.0, 0


def main() -> int:
    import signal
    _patch()
    signal.signal(signal.SIGUSR1, _reset)
    atexit.register(_dump)
    import start
    try:
        return start.main(sys.argv[1:])
    finally:
        _dump()


if __name__ == "__main__":
    sys.exit(main())
