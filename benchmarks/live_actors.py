"""The processes of the live benchmark: a server, producers and followers of mefstream.

    python -m benchmarks.live_actors server C FS DTYPE HISTORY_S CHUNK PUSHES
    python -m benchmarks.live_actors producer PORT CHUNK PUSHES MODE      (handle | socket)
    python -m benchmarks.live_actors follower PORT CHUNK COUNT MODE
        (MODE: ring[:SPIN] | socket | callbacks; COUNT chunks per round)

Each prints JSON lines on stdout: ``["ready", ...]`` once set up, then runs rounds on
commands from stdin: ``go`` to a follower makes it say ``armed`` once it waits (callbacks
registered), then ``followed``; ``go`` to a producer (or a server that pushes) pushes the
next PUSHES blocks and says ``pushed``; ``mark`` / ``report``: the server's CPU over that
span; anything else ends it. A producer's result is ``{head after push: time before
push}``; a follower's is its ``(chunk end, time it had the chunk)`` list, whether every
sample came once and exact, and its CPU. Times are ``time.monotonic()``: one clock for
every process on Linux. Channel 0 of every sample carries its index (so a follower knows
which push a chunk came from); channel r > 0 holds (7 i + r) mod 4096 (exact in float32).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import numpy as np

PERIOD_BLOCK = 4096      # the signal of channels r > 0 repeats with this period


def signal_block(c: int, start: int, n: int, dtype) -> np.ndarray:
    """Row 0: the sample index; row r: (7 i + r) mod 4096."""
    i = np.arange(start, start + n, dtype=np.int64)
    block = ((7 * i[None, :] + np.arange(c)[:, None]) % PERIOD_BLOCK).astype(dtype)
    block[0] = i
    return block


class Blocks:
    """Pushes of ``n`` samples of ``c`` channels, made fast from one precomputed period."""

    def __init__(self, c: int, n: int, dtype) -> None:
        self.c, self.n = c, n
        self.base = signal_block(c, 0, PERIOD_BLOCK + n, np.dtype(dtype))

    def block(self, k: int) -> np.ndarray:
        at = (k * self.n) % PERIOD_BLOCK
        out = np.empty((self.c, self.n), dtype=self.base.dtype)
        np.copyto(out, self.base[:, at:at + self.n])
        out[0] = np.arange(k * self.n, (k + 1) * self.n)
        return out

    def exact(self, data: np.ndarray, first: int) -> bool:
        at = first % PERIOD_BLOCK
        n = data.shape[1]
        return bool(data[0, 0] == first and data[0, -1] == first + n - 1
                    and np.array_equal(data[1:], self.base[1:, at:at + n]))


def say(*items) -> None:
    print(json.dumps(list(items)), flush=True)


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


#: The last part of each wait before a push that the producer spins instead of sleeping
#: (mne-lsl's PlayerLSL spins the last 0.2 ms): every producer, ours and the peers', is
#: then running, not waking up, when it pushes. The CPU of that spin is left out of the
#: producer's (and a pushing server's) CPU figure.
SPIN = 0.0005


def paced(pushes: int, period: float, push, make, first: int = 0):
    """Call ``push(make(k))`` for ``k`` from ``first`` on an absolute schedule (the block
    made first; sleep, then spin the last :data:`SPIN`, a tenth of the period at most).

    Returns
    -------
    ({head after push: time just before the push}, CPU seconds spent spinning)
    """
    times: dict[int, float] = {}
    t0 = time.monotonic() + 0.2
    wait = threading.Event()
    clock, cpu = time.monotonic, time.thread_time
    spin, spun = min(SPIN, period / 10), 0.0
    for k in range(first, first + pushes):
        block = make(k)
        due = t0 + (k - first) * period
        delay = due - clock() - spin
        if delay > 0:
            wait.wait(delay)
        started = cpu()
        while clock() < due:
            pass
        spun += cpu() - started
        at = clock()
        times[int(push(block))] = at
    return times, spun


def commands():
    for line in sys.stdin:
        yield line.strip()


def rounds(push, make, pushes: int, period: float):
    """On each ``go``: push the next ``pushes`` blocks, say ``pushed`` with this process's
    CPU over the round. Ends on ``quit``."""
    done = 0
    for cmd in commands():
        if cmd != "go":
            return
        start = (cpu_seconds(), time.monotonic())
        pushed, spun = paced(pushes, period, push, make, done)
        done += pushes
        say("pushed", pushed, 100 * (cpu_seconds() - start[0] - spun)
            / (time.monotonic() - start[1]))


def server(c: int, fs: float, dtype: str, history: float, chunk: int, pushes: int) -> None:
    """A server of one live stream; it pushes itself when told ``go``, and says its CPU
    since ``mark`` when told ``report``."""
    from software import MefStreamServer
    from software.live.source import LiveStream
    stream = LiveStream("bench", [f"c{i}" for i in range(c)], fs, dtype,
                        history_seconds=history)
    blocks = Blocks(c, chunk, dtype)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        say("ready", srv.port, os.getpid())
        mark, done, spun = (cpu_seconds(), time.monotonic()), 0, 0.0
        for cmd in commands():
            if cmd == "mark":
                mark, spun = (cpu_seconds(), time.monotonic()), 0.0
                say("marked")
            elif cmd == "go":
                pushed, spun = paced(pushes, chunk / fs, stream.append_stream_segment_data,
                                     blocks.block, done)
                done += pushes
                say("pushed", pushed)
            elif cmd == "report":
                say("cpu", 100 * (cpu_seconds() - mark[0] - spun)
                    / (time.monotonic() - mark[1]))
            else:
                break


def producer(port: int, chunk: int, pushes: int, mode: str) -> None:
    """A producer process: through its handle (shared memory) or the socket."""
    from software import get_connection
    conn = get_connection(port, host="127.0.0.1", shared_memory=mode == "handle")
    info = dict(conn.root.get_info())
    c, fs, dtype = len(info["all_channels"]), float(info["fs"]), info["dtype"]
    handle = conn.root.producer()
    assert handle.shared == (mode == "handle"), handle
    say("ready", handle.shared)
    rounds(handle.append_stream_segment_data, Blocks(c, chunk, dtype).block, pushes,
           chunk / fs)
    handle.close()
    conn.close()


def follower(port: int, chunk: int, count: int, mode: str) -> None:
    """A follower process: on each ``go``, the next ``count`` chunks with ``next_or_wait``
    from the ring (same host) or over the socket, or by callbacks registered first."""
    from software import StreamSegmentIterator, get_connection
    mode, _, spin = mode.partition(":")         # ring:SECONDS: next_or_wait(spin=SECONDS)
    spin = float(spin or 0)
    conn = get_connection(port, host="127.0.0.1", shared_memory=mode == "ring")
    svc = conn.root
    info = dict(svc.get_info())
    blocks = Blocks(len(info["all_channels"]), chunk, info["dtype"])
    assert (svc.ring_follower() is not None) == (mode == "ring"), mode
    say("ready", mode)
    it = StreamSegmentIterator(chunk, start=0)
    for cmd in commands():
        if cmd != "go":
            break
        stop = it.position + count * chunk
        if mode == "callbacks":
            callbacks(svc, blocks, chunk, it.position, stop)
            it.position = stop
            continue
        say("armed")
        arrivals, exact, error = [], True, ""
        start = (cpu_seconds(), time.monotonic())
        try:
            while it.position < stop:
                data = it.next_or_wait(svc, timeout=30, spin=spin)
                now = time.monotonic()
                if data is False:
                    error = f"nothing for 30 s at {it.position}"
                    break
                arrivals.append((it.position, now))
                exact = exact and blocks.exact(data, it.position - data.shape[1])
        except Exception as exc:  # noqa: BLE001 - reported to the benchmark
            error = f"{type(exc).__name__}: {exc}"
        cpu = 100 * (cpu_seconds() - start[0]) / (time.monotonic() - start[1])
        say("followed", arrivals, exact and not error and it.position == stop, error, cpu)
    conn.close()


def callbacks(svc, blocks: Blocks, chunk: int, first: int, stop: int) -> None:
    """Every chunk of the round asked for at once with a callback; the time each starts."""
    arrivals, exact = [], []
    done = threading.Event()

    def arrived(data) -> None:            # in the connection's serving thread
        now = time.monotonic()
        end = int(data[0, -1]) + 1
        arrivals.append((end, now))
        exact.append(blocks.exact(data, end - data.shape[1]))
        if len(arrivals) == (stop - first) // chunk:
            done.set()

    for start in range(first, stop, chunk):
        assert svc.get_stream_segment(chunk, start, arrived) is False
    say("armed")
    start = (cpu_seconds(), time.monotonic())
    ok = done.wait(60 + (stop - first) / 100)
    cpu = 100 * (cpu_seconds() - start[0]) / (time.monotonic() - start[1])
    say("followed", sorted(arrivals), ok and all(exact), "" if ok else "callbacks missing", cpu)


def main(argv: list[str]) -> None:
    role, *args = argv
    if role == "server":
        server(int(args[0]), float(args[1]), args[2], float(args[3]), int(args[4]),
               int(args[5]))
    elif role == "producer":
        producer(int(args[0]), int(args[1]), int(args[2]), args[3])
    elif role == "follower":
        follower(int(args[0]), int(args[1]), int(args[2]), args[3])
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
