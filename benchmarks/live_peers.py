"""The peers of the live benchmark, as processes: pylsl (liblsl) and ezmsg.

    python -m benchmarks.live_peers lsl-producer NAME C FS CHUNK PUSHES
    python -m benchmarks.live_peers lsl-consumer NAME C CHUNK COUNT
    python -m benchmarks.live_peers ezmsg-producer PORT C FS CHUNK PUSHES
    python -m benchmarks.live_peers ezmsg-consumer PORT CHUNK COUNT

Same protocol as :mod:`benchmarks.live_actors` (``ready``, then rounds: ``go``;
``armed``, ``pushed`` and ``followed`` results). The LSL consumer polls ``pull_chunk(timeout=0.0)`` into a numpy
buffer without sleeping (LSL's lowest latency; it spins a core); the ezmsg consumer awaits
``Subscriber.recv()`` (a copy out of ezmsg's shared-memory buffers, notified over TCP).
Both are benchmark-only extras: pylsl comes with the project's venv, ezmsg from a venv
of its own (``benchmarks/README.md``).
"""
from __future__ import annotations

import asyncio
import sys
import time

import numpy as np

from .live_actors import SPIN, Blocks, commands, cpu_seconds, rounds, say


def lsl_producer(name: str, c: int, fs: float, chunk: int, pushes: int) -> None:
    import pylsl
    info = pylsl.StreamInfo(name, "EEG", c, fs, pylsl.cf_double64, name + "-id")
    outlet = pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=10)
    blocks = Blocks(c, chunk, np.float64)
    say("ready")

    def push(block) -> int:
        outlet.push_chunk(block)
        return int(block[-1, 0]) + 1

    rounds(push, lambda k: np.ascontiguousarray(blocks.block(k).T), pushes, chunk / fs)


def lsl_consumer(name: str, c: int, chunk: int, count: int) -> None:
    import pylsl
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name, timeout=10)[0],
                              max_buflen=10, processing_flags=0)
    inlet.open_stream(timeout=10)
    buf = np.empty((1000, c), dtype=np.float64)
    say("ready", "lsl")
    seen = 0
    for cmd in commands():
        if cmd != "go":
            break
        say("armed")
        stop, arrivals = seen + count * chunk, []
        start = (cpu_seconds(), time.monotonic())
        deadline = time.monotonic() + 60 + count / 10
        while seen < stop and time.monotonic() < deadline:
            _, stamps = inlet.pull_chunk(timeout=0.0, max_samples=1000, dest_obj=buf)
            if stamps:
                now = time.monotonic()
                seen = int(buf[len(stamps) - 1, 0]) + 1
                arrivals.append((seen, now))
        cpu = 100 * (cpu_seconds() - start[0]) / (time.monotonic() - start[1])
        say("followed", arrivals, seen == stop, "" if seen == stop else "samples missing", cpu)


async def _stdin_line() -> str:
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


async def _ezmsg_producer(port: int, c: int, fs: float, chunk: int, pushes: int) -> None:
    import ezmsg.core as ez
    blocks = Blocks(c, chunk, np.float64)
    async with ez.GraphContext(("127.0.0.1", port), auto_start=True) as ctx:
        pub = await ctx.publisher("BENCH", buf_size=c * chunk * 8 + 65536)
        say("ready")
        done = 0
        while await _stdin_line() == "go":
            start = (cpu_seconds(), time.monotonic())
            t0, times, spun = time.monotonic() + 0.2, {}, 0.0
            for k in range(done, done + pushes):
                block = blocks.block(k)
                due = t0 + (k - done) * chunk / fs
                delay = due - time.monotonic() - min(SPIN, chunk / fs / 10)
                if delay > 0:
                    await asyncio.sleep(delay)
                spinning = time.thread_time()
                while time.monotonic() < due:
                    pass
                spun += time.thread_time() - spinning
                at = time.monotonic()
                await pub.broadcast(block)
                times[(k + 1) * chunk] = at
            done += pushes
            say("pushed", times, 100 * (cpu_seconds() - start[0] - spun)
                / (time.monotonic() - start[1]))


async def _ezmsg_consumer(port: int, chunk: int, count: int) -> None:
    import ezmsg.core as ez
    async with ez.GraphContext(("127.0.0.1", port), auto_start=False) as ctx:
        sub = await ctx.subscriber("BENCH")
        say("ready", "ezmsg")
        seen = 0
        while await _stdin_line() == "go":
            say("armed")
            stop, arrivals = seen + count * chunk, []
            start = (cpu_seconds(), time.monotonic())
            while seen < stop:
                msg = await sub.recv()
                now = time.monotonic()
                seen = int(msg[0, -1]) + 1
                arrivals.append((seen, now))
            cpu = 100 * (cpu_seconds() - start[0]) / (time.monotonic() - start[1])
            say("followed", arrivals, seen == stop, "", cpu)


def main(argv: list[str]) -> None:
    role, *args = argv
    if role == "lsl-producer":
        lsl_producer(args[0], int(args[1]), float(args[2]), int(args[3]), int(args[4]))
    elif role == "lsl-consumer":
        lsl_consumer(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif role == "ezmsg-producer":
        asyncio.run(_ezmsg_producer(int(args[0]), int(args[1]), float(args[2]),
                                    int(args[3]), int(args[4])))
    elif role == "ezmsg-consumer":
        asyncio.run(_ezmsg_consumer(int(args[0]), int(args[1]), int(args[2])))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
