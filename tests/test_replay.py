"""Replay of a real MEF3 recording as a live stream: exact continuity per stretch across
pause, seek, speed changes and loops, the controls over RPyC, and the launcher."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import software
from software import MefStreamServer, get_connection
from software.client.iterators import StreamSegmentIterator
from software.errors import InvalidRangeError, PushRefusedError, StreamError
from software.live import launch
from software.live.replay import Replay, chunk_samples
from software.live.source import LiveStream
from tests.util import START, reference, wait_until

#: The default-rate channels in the order the file lists them (the stream's rows).
NAMES = ("Cz", "Fp1", "Fp2", "O1", "O2", "index")


@pytest.fixture(scope="module")
def ref(main_path):
    return reference(main_path, NAMES)


def replay_server(data_root, main_path, **kwargs):
    def make(registry):
        return Replay(registry.acquire(main_path), release=registry.release, **kwargs).start()\
            .stream
    return MefStreamServer(port=0, data_root=data_root, workers=2, cache_mb=32, live=make)


def take(svc, start: int, n: int, chunk: int = 256) -> np.ndarray:
    """Samples [start, start + n) of the stream, followed with next_or_wait."""
    it = StreamSegmentIterator(chunk, start=start)
    parts = []
    while it.position < start + n:
        it.range = min(chunk, start + n - it.position)    # the last one: exactly to the end
        data = it.next_or_wait(svc, timeout=60)
        assert data is not False, f"nothing at {it.position}"
        parts.append(data)
    return np.concatenate(parts, axis=1)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def test_chunks_are_at_most_10_ms_and_1000_samples():
    assert chunk_samples(256.0) == 2 and chunk_samples(30000.0) == 300
    assert chunk_samples(200000.0) == 1000 and chunk_samples(50.0) == 1


def test_a_looped_replay_equals_the_file_in_every_stretch(data_root, main_path, ref):
    """Read once the replay is paused past the loop, from a history far longer than what
    was pushed: nothing is overwritten however slowly the client reads (it used to read
    while a 400x replay wrapped its ring: 4 failures in 8 runs on a loaded machine)."""
    n = ref.shape[1]
    with replay_server(data_root, main_path, speed=100.0, loop=True,
                       history_seconds=2000) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        try:
            svc = conn.root
            info = dict(svc.get_info())
            assert info["growing"] and info["channels"] == NAMES and info["fs"] == 256.0
            assert info["speed"] == 100.0 and info["paused"] is False
            wait_until(lambda: dict(svc.get_info())["n_samples"] >= n + 3000, timeout=60)
            svc.pause()
            assert dict(svc.get_info())["first_available"] == 0
            data = take(svc, 0, n + 3000)
            assert same(data[:, :n], ref)                  # NaN in the gap, as the file
            assert same(data[:, n:], ref[:, :3000])        # the loop starts again
            stretches = dict(svc.get_info())["stretches"]
            assert stretches[:2] == ((0, START), (n, START))
        finally:
            conn.close()


def test_pause_seek_and_speed_keep_each_stretch_exact(data_root, main_path, ref):
    fs = 256.0
    with replay_server(data_root, main_path, speed=20.0, history_seconds=400) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        try:
            svc = conn.root
            wait_until(lambda: dict(svc.get_info())["n_samples"] > 1000)
            svc.pause()
            info = dict(svc.get_info())
            h1 = info["n_samples"]
            assert info["paused"] is True
            assert info["position_uutc"] == START + int(round(h1 * 1e6 / fs))
            threading.Event().wait(0.3)                   # time passes: nothing is pushed
            assert dict(svc.get_info())["n_samples"] == h1
            at = START + 100 * 1_000_000 + 3906            # off the grid: snapped
            assert svc.seek(at) == h1
            p = int(100 * fs + 1)
            assert dict(svc.get_info())["position_uutc"] == START + int(round(p * 1e6 / fs))
            with pytest.raises(InvalidRangeError):
                svc.seek(START - 10**9)
            svc.resume()
            assert svc.set_speed(200.0) == 200.0
            data = take(svc, 0, h1 + 5000)
            assert same(data[:, :h1], ref[:, :h1])
            assert same(data[:, h1:], ref[:, p:p + 5000])
            info = dict(svc.get_info())
            assert info["stretches"] == ((0, START), (h1, START + int(round(p * 1e6 / fs))))
            assert info["speed"] == 200.0
            # the end without loop: the stream stops growing at the file's end
            data = take(svc, h1 + 5000, ref.shape[1] - p - 5000)
            assert same(data, ref[:, p + 5000:])
            with pytest.raises(PushRefusedError) as caught:   # the replay owns the stream
                svc.append_stream_segment_data((0.0,) * 6)
            assert "replays" in str(caught.value)
        finally:
            conn.close()


def test_a_plain_live_stream_has_no_replay_controls():
    stream = LiveStream("rig", ["a"], 100.0)
    with MefStreamServer(port=0, workers=1, cache_mb=8, live=stream) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        try:
            with pytest.raises(StreamError) as caught:
                conn.root.pause()
            assert "not replayed" in str(caught.value)
        finally:
            conn.close()


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("session", nargs="?")
    parser.add_argument("--password", default=None)
    launch.add_arguments(parser)
    args = parser.parse_args(argv)
    launch.check(args, parser)
    return args


def test_the_launcher_builds_a_live_stream_and_refuses_bad_options(capsys):
    args = parse(["--live", "rig", "--channels", "a,b,c", "--fs", "30000", "--dtype",
                  "float32", "--history-seconds", "2"])
    stream, replay = launch.build(args)
    assert replay is None and stream.channels == ("a", "b", "c") and stream.fs == 30000
    assert stream.dtype == np.float32 and stream.history_seconds == 2.0
    assert launch.server_live(parse([])) is None
    for bad in (["--live", "rig"], ["--live", "x", "--channels", "a,a", "--fs", "1"],
                ["--replay"], ["x.mefd", "--replay", "--speed", "0"],
                ["x.mefd", "--replay", "--speed", "1e-4"],
                ["--live", "x", "--channels", "a", "--fs", "1", "--dtype", "int8"]):
        with pytest.raises(SystemExit):
            parse(bad)
    assert "--live NAME needs" in capsys.readouterr().err


LAUNCHED = textwrap.dedent("""
    import argparse, sys, threading
    from software import MefStreamServer
    from software.live import launch
    parser = argparse.ArgumentParser()
    parser.add_argument("session", nargs="?")
    parser.add_argument("--port", type=int, default=0)
    launch.add_arguments(parser)
    args = parser.parse_args(sys.argv[1:])
    launch.check(args, parser)
    with MefStreamServer(port=args.port, data_root=".", workers=1,
                         live=launch.server_live(args)) as server:
        print(server.port, flush=True)
        sys.stdin.readline()
""")


def test_a_launched_replay_serves_the_file_at_the_root(data_root, main_path, ref):
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHED, main_path, "--replay", "--speed",
                             "300", "--history-seconds", "100"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=data_root,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(
                                os.path.dirname(software.__file__))})
    try:
        port = int(proc.stdout.readline())
        conn = get_connection(port, host="127.0.0.1")
        try:
            info = dict(conn.root.get_info())
            assert info["path"] == "main.mefd" and info["speed"] == 300.0
            assert same(take(conn.root, 0, 3000), ref[:, :3000])
        finally:
            conn.close()
    finally:
        proc.stdin.close()
        assert proc.wait(60) == 0


def test_a_speed_out_of_range_is_refused_and_the_replay_goes_on(data_root, main_path, ref):
    """set_speed(1e-13) used to kill the replay thread for good (OverflowError)."""
    with replay_server(data_root, main_path, speed=50.0, history_seconds=400) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        try:
            svc = conn.root
            for bad in (1e-13, 0.0009, 2e6):
                with pytest.raises(InvalidRangeError) as caught:
                    svc.set_speed(bad)
                assert f"x={bad:g}" in str(caught.value)
            assert "0.001" in str(caught.value) or "1e+06" in str(caught.value)
            assert dict(svc.get_info())["speed"] == 50.0
            head = dict(svc.get_info())["n_samples"]
            wait_until(lambda: dict(svc.get_info())["n_samples"] > head + 500)
            assert same(take(svc, 0, 1000), ref[:, :1000])
            assert svc.set_speed(0.001) == 0.001          # the bounds themselves are fine
        finally:
            conn.close()
    with pytest.raises(InvalidRangeError):
        Replay(None, speed=1e-4)


def test_a_looping_replay_keeps_only_the_stretches_its_ring_holds(data_root, main_path, ref):
    """A stretch per loop grew without bound; now those wholly overwritten are dropped."""
    n = ref.shape[1]
    with replay_server(data_root, main_path, speed=1000.0, loop=True,
                       history_seconds=30) as srv:
        conn = get_connection(srv.port, host="127.0.0.1")
        try:
            svc = conn.root
            wait_until(lambda: dict(svc.get_info())["n_samples"] > 3 * n + 100, timeout=90)
            svc.pause()
            info = dict(svc.get_info())
            stretches, oldest = info["stretches"], info["first_available"]
            assert 1 <= len(stretches) <= 2, stretches
            assert stretches[0][0] <= oldest and all(s[1] == START for s in stretches)
            assert all(first > oldest for first, _ in stretches[1:])
            assert stretches[-1][0] % n == 0 and stretches[-1][0] >= 3 * n
        finally:
            conn.close()
