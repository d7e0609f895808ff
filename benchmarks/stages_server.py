"""``start.py`` with wall-clock stamps along the path of each request, for random windows.

    python -m benchmarks.stages_server --port P --data-root D [start.py options]

Identical to ``python start.py`` except that the stages a cold request goes through are
stamped with ``time.perf_counter()`` (one clock for every thread of the server process):
the service call, the cache lookup and claim (``Recording.gather``), each reader task's
entry in the pool's queue (``ReaderPool._submit``), its hand-over to the executor
(``ReaderProcesses.submit``), the moment its result reaches the pool's result thread (the
start of ``consume``: reader decode + executor round trip), the landing copy
(``consume``), the request's blocks all there (``_resolve``), assembling the answer
(``Blocks.assemble``) and sending the reply (``FastConnection._send``). The stamps of the
last request are written to ``$MEFSTREAM_STAGES`` (JSON lines, one per request) at the end
of each reply. Used by :mod:`benchmarks.random_access`.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

_LOCK = threading.Lock()
_EVENTS: list[tuple[str, float]] = []
_OUT = None


def _stamp(label: str) -> None:
    with _LOCK:
        _EVENTS.append((label, time.perf_counter()))


def _around(owner, attr: str, label: str) -> None:
    original = getattr(owner, attr)

    def timed(*args, **kw):
        _stamp(label + ">")
        try:
            return original(*args, **kw)
        finally:
            _stamp(label + "<")

    setattr(owner, attr, timed)


def _patch() -> None:
    from software.cache import recording
    from software.readers.pool import ReaderPool
    from software.readers.processes import ReaderProcesses
    from software.stream.service import StreamService
    from software.transport.connection import FastConnection

    _around(StreamService, "exposed_get_stream_segment", "service")
    _around(StreamService, "exposed_get_time_segment", "service")
    _around(recording.Recording, "gather", "gather")
    _around(recording.Blocks, "assemble", "assemble")
    _around(ReaderProcesses, "submit", "executor_submit")
    original_submit = ReaderPool._submit

    def submit(self, priority, fn, *args, consume=None, owner=None):
        _stamp(f"queued{priority}")
        if consume is not None:
            inner = consume

            def consume(data, _inner=inner):
                _stamp("result")      # the pool's result thread has the reader's answer
                try:
                    return _inner(data)
                finally:
                    _stamp("copied")
        return original_submit(self, priority, fn, *args, consume=consume, owner=owner)

    ReaderPool._submit = submit
    original_resolve = recording._resolve

    def resolve(result, blocks):
        _stamp("resolved")
        return original_resolve(result, blocks)

    recording._resolve = resolve
    original_send = FastConnection._send

    def send(self, msg, seq, args):
        _stamp("send>")
        try:
            return original_send(self, msg, seq, args)
        finally:
            _stamp("send<")
            _flush()

    FastConnection._send = send


def _flush() -> None:
    """Write the events since the last flush as one JSON line (one per reply)."""
    global _OUT
    with _LOCK:
        events = list(_EVENTS)
        _EVENTS.clear()
    path = os.environ.get("MEFSTREAM_STAGES")
    if not path or not events:
        return
    if _OUT is None:
        _OUT = open(path, "a", buffering=1)
    _OUT.write(json.dumps(events) + "\n")


def main() -> int:
    _patch()
    import start
    return start.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
