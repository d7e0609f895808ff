"""The cases of :mod:`benchmarks.live`: actor processes, one round of a case, its result.

Shared by :mod:`benchmarks.live` (the small and large rows) and :mod:`benchmarks.live_cost`
(the cost tables).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Proc:
    """One actor process: JSON lines out, commands in."""

    def __init__(self, module: str, *args: object, python: str = sys.executable) -> None:
        self.proc = subprocess.Popen([python, "-m", module, *map(str, args)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self) -> list:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.proc.args[2:4]} ended (exit {self.proc.wait(30)})")
        return json.loads(line)

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(30)


@dataclass
class Result:
    """One case: every follower's latencies, exactness and the CPU of each part."""

    latencies: np.ndarray
    exact: bool
    lag_ms: float
    producer_cpu: float | None
    server_cpu: float | None
    follower_cpu: float
    errors: list = field(default_factory=list)

    def row(self) -> str:
        lat = self.latencies
        parts = [f"median {np.median(lat):6.3f} ms", f"p99 {np.percentile(lat, 99):6.3f} ms",
                 f"max {lat.max():6.2f} ms", f"exact {self.exact}"]
        if self.producer_cpu is not None:
            parts.append(f"producer CPU {self.producer_cpu:5.1f} %")
        if self.server_cpu is not None:
            parts.append(f"server CPU {self.server_cpu:5.1f} %")
        parts.append(f"follower CPU {self.follower_cpu:5.1f} % each")
        return "  ".join(parts) + ("  ERRORS " + "; ".join(self.errors) if self.errors else "")


class Case:
    """Processes that run rounds: followers, then a producer (or a server that pushes)."""

    def __init__(self, producer: Proc, followers: list[Proc], server: Proc | None = None):
        self.producer, self.followers, self.server = producer, followers, server
        try:
            for proc in followers:
                proc.read()                   # ready
        except BaseException:
            self.close()
            raise

    def round(self) -> Result:
        """One round: every follower armed, then the pushes; what each process says."""
        producer, followers, server = self.producer, self.followers, self.server
        if server is not None:
            server.send("mark")
            server.read()
        for proc in followers:
            proc.send("go")
        for proc in followers:
            proc.read()                       # armed: waiting (callbacks registered)
        producer.send("go")
        pushed_line = producer.read()
        pushed = {int(k): v for k, v in pushed_line[1].items()}
        outs = [proc.read() for proc in followers]
        server_cpu = None
        if server is not None:
            server.send("report")
            server_cpu = server.read()[1]
        lats = [np.array([(t - pushed[end]) * 1e3 for end, t in out[1] if end in pushed])
                for out in outs]
        lats = [lat for lat in lats if lat.size] or [np.array([np.nan])]
        producer_cpu = pushed_line[2] if len(pushed_line) > 2 else None
        return Result(np.concatenate(lats), all(out[2] for out in outs),
                      max(float(lat[-1]) for lat in lats), producer_cpu, server_cpu,
                      float(np.mean([out[4] for out in outs])), [o[3] for o in outs if o[3]])

    def close(self) -> None:
        for proc in self.followers + [self.producer] + (
                [self.server] if self.server not in (None, self.producer) else []):
            proc.close()


def mef_case(c: int, fs: float, dtype: str, chunk: int, pushes: int, followers: int,
             producer: str = "handle", follow: str = "ring", history: float = 10) -> Case:
    """mefstream: a server process, a producer (``handle``, ``socket`` or ``server``:
    the server pushes) and followers (``ring[:SPIN]``, ``socket`` or ``callbacks``)."""
    server = Proc("benchmarks.live_actors", "server", c, fs, dtype, history, chunk, pushes)
    _, port, _ = server.read()
    fols = [Proc("benchmarks.live_actors", "follower", port, chunk, pushes, follow)
            for _ in range(followers)]
    if producer == "server":
        return Case(server, fols, server)
    prod = Proc("benchmarks.live_actors", "producer", port, chunk, pushes, producer)
    prod.read()
    return Case(prod, fols, server)


def lsl_case(c: int, fs: float, chunk: int, pushes: int, followers: int) -> Case | str:
    try:
        import pylsl
        pylsl.library_version()
    except Exception as exc:  # noqa: BLE001 - liblsl missing: the row is unavailable
        return f"unavailable ({exc})"
    name = f"mefbench{os.getpid()}"
    prod = Proc("benchmarks.live_peers", "lsl-producer", name, c, fs, chunk, pushes)
    prod.read()
    fols = [Proc("benchmarks.live_peers", "lsl-consumer", name, c, chunk, pushes)
            for _ in range(followers)]
    return Case(prod, fols)


def ezmsg_case(python: str | None, c: int, fs: float, chunk: int, pushes: int,
               followers: int) -> Case | str:
    if not python:
        return "not run (give --ezmsg-python: a venv with ezmsg 3.9)"
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prod = Proc("benchmarks.live_peers", "ezmsg-producer", port, c, fs, chunk, pushes,
                python=python)
    prod.read()
    fols = [Proc("benchmarks.live_peers", "ezmsg-consumer", port, chunk, pushes,
                 python=python) for _ in range(followers)]
    return Case(prod, fols)


def once(case: Case) -> Result:
    """One round of a case, its processes closed after."""
    try:
        return case.round()
    finally:
        case.close()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"
