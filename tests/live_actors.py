"""Processes the shared-ring tests drive line by line: a follower and a producer on this host.

    python -m tests.live_actors follow PORT [socket]
    python -m tests.live_actors produce PORT

Each reads one command per line on stdin and answers one JSON list per command on stdout,
so a test moves them step by step and builds hard states on purpose (a producer stopped
while it holds the write position, a follower killed while it reads) without sleeping.
The samples are :func:`ramp`: channel ``r`` at index ``i`` holds ``i + 100000 r``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from software import StreamRowIterator, StreamSegmentIterator, get_connection


def ramp(c: int, start: int, n: int, dtype=np.float64) -> np.ndarray:
    """Channel r, index i holds i + 100000 r (exact in float32 and int32)."""
    i = np.arange(start, start + n, dtype=np.float64)
    return (i[None, :] + 100000.0 * np.arange(c)[:, None]).astype(dtype)


def say(*items) -> None:
    print(json.dumps(list(items)), flush=True)


def follow(port: int, memory: bool) -> None:
    conn = get_connection(port, host="127.0.0.1", shared_memory=memory)
    svc = conn.root
    say("ready", "ring" if svc.ring_follower() is not None else "socket")
    it = None
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "from":          # from CHUNK START [ROW]
                it = StreamSegmentIterator(int(args[0]), start=int(args[1])) if len(args) == 2 \
                    else StreamRowIterator(args[2], int(args[0]), start=int(args[1]))
                say("ok")
            elif cmd == "next":        # next [TIMEOUT]: the next chunk, checked
                data = it.next_or_wait(svc, timeout=float(args[0]) if args else None)
                if data is False:
                    say("false", it.position)
                    continue
                first = it.position - data.shape[-1]
                want = ramp(len(dict(svc.get_info())["all_channels"]), first, data.shape[-1],
                            data.dtype)
                if data.ndim == 1:
                    want = want[int(dict(svc.get_info())["all_channels"].index(it.channel))]
                say("chunk", first, int(data.shape[-1]), bool(np.array_equal(data, want)),
                    str(data.dtype))
            elif cmd == "seek":        # seek POSITION
                it.position = int(args[0])
                say("ok")
            elif cmd == "spin":        # spin N START: read [START, START + N) until killed
                say("spinning")
                while True:
                    svc.get_stream_segment(int(args[0]), int(args[1]))
            elif cmd == "quit":
                break
        except Exception as exc:  # noqa: BLE001 - the test reads it
            say("error", type(exc).__name__, str(exc))
    conn.close()


#: Pushes a producer handle must refuse, by name (the stream: 2 channels).
BAD = {
    "shape": lambda h, dt: h.append_stream_segment_data(np.zeros((3, 4), dt)),
    "nan": lambda h, dt: h.append_stream_segment_data(np.full((2, 4), np.nan)),
    "range": lambda h, dt: h.append_stream_segment_data(np.full((2, 4), 1e12)),
    "fraction": lambda h, dt: h.append_stream_segment_data(np.full((2, 4), 1.5)),
    "strings": lambda h, dt: h.append_stream_segment_data([["a", "b"], ["c", "d"]]),
    "unknown-row": lambda h, dt: h.append_stream_row_data("nope", [1.0]),
    "ahead": lambda h, dt: h.append_stream_row_data(0, np.zeros(1000, dt)),
}


def produce(port: int) -> None:
    conn = get_connection(port, host="127.0.0.1")
    try:
        handle = conn.root.producer()
    except Exception as exc:  # noqa: BLE001 - the test reads it
        say("error", type(exc).__name__, str(exc))
        return
    ring = getattr(handle, "_ring", None)
    info = dict(conn.root.get_info())
    c, dtype = len(info["all_channels"]), np.dtype(info["dtype"])
    say("ready", handle.shared)
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "push":          # push START N
                say("head", handle.append_stream_segment_data(
                    ramp(c, int(args[0]), int(args[1]), dtype)))
            elif cmd == "row":         # row ROW START N
                row = int(args[0])
                say("head", handle.append_stream_row_data(
                    row, ramp(c, int(args[1]), int(args[2]), dtype)[row]))
            elif cmd == "bad":         # bad NAME: a push that must be refused
                say("head", BAD[args[0]](handle, dtype))
            elif cmd == "partial":     # partial N: reserve, fill with garbage, hold there
                n = int(args[0])
                at = ring.reserve(slice(None), n)
                ring.fill(np.full((c, n), -7, dtype), slice(None), at)
                say("holding", at)
            elif cmd == "committed":   # committed N: reserve, fill, commit; no publish
                n = int(args[0])
                at = ring.reserve(slice(None), n)
                ring.fill(ramp(c, at, n, dtype), slice(None), at)
                ring.commit(slice(None), n)
                say("holding", at)
            elif cmd == "close":
                handle.close()
                say("closed")
            elif cmd == "quit":
                break
        except Exception as exc:  # noqa: BLE001 - the test reads it
            say("error", type(exc).__name__, str(exc))
    conn.close()


class Actor:
    """One actor process, driven from a test: :meth:`ask` sends a command, returns the
    answer line (parsed)."""

    def __init__(self, root: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.live_actors", *args],
                                     cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.first = self.read()

    def read(self) -> list:
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the actor {self.proc.args[3:]} ended "
                                 f"(exit {self.proc.wait(30)})")
        return json.loads(line)

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str) -> list:
        self.send(command)
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(30)


if __name__ == "__main__":
    role, port = sys.argv[1], int(sys.argv[2])
    if role == "follow":
        follow(port, memory=sys.argv[3:] != ["socket"])
    else:
        produce(port)
