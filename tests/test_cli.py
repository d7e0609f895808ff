"""The command-line client, run as ``python -m software ...`` subprocesses against the
fixture server: output, exports equal to the service's samples, pictures, exit codes."""
from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading

import matplotlib.image as mpimg
import numpy as np
import pytest
import rpyc
from rpyc.utils.authenticators import SSLAuthenticator

from software import MefStreamServer, WrongPasswordError, decode_segment
from software.cli.formats import CsvSink, NpzSink
from software.cli.main import COMMANDS
from software.plot.window import DPI, GAP_COLOR, MARGINS, figure_size
from software.transport.connection import FastThreadedServer
from tests.conftest import GAP, PASSWORD2
from tests.util import FS, START, reference, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, port=None, timeout=60) -> subprocess.CompletedProcess:
    """Run ``python -m software ARGS`` (with --port) from the worktree."""
    extra = ["--port", str(port)] if port is not None else []
    return subprocess.run([sys.executable, "-m", "software", *args, *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def clock(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(START / 1e6 + seconds, dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def service_samples(conn, names, first, stop) -> np.ndarray:
    svc = conn.root.open_file("main.mefd")
    svc.set_active_channels(tuple(names))
    return np.array(decode_segment(svc.get_stream_segment(stop - first, first)))


def test_help_lists_every_command():
    done = cli("--help")
    assert done.returncode == 0
    for name in COMMANDS:
        assert f"    {name} " in done.stdout
    for option in ("--host", "--port", "--tls-cert", "--tls-key", "--tls-ca", "--timeout"):
        assert option in done.stdout


def test_info_shows_clock_times_duration_units_and_gaps(server):
    done = cli("info", "main.mefd", port=server.port)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"start     {clock(0)} UTC" in out
    assert f"end       {clock(185)} UTC" in out
    assert "duration  3 min 05 s (47,360 samples at 256 Hz)" in out
    assert "channels  6 at 256 Hz: Cz, Fp1, Fp2, O1, O2, index" in out
    assert "units     uV" in out
    gap_start = dt.datetime.fromtimestamp((START + GAP[0] * 1e6 / FS) // 1 / 1e6,
                                          dt.timezone.utc)
    assert "gaps      2, 16.531 s in all" in out
    assert gap_start.strftime("%H:%M:%S.") in out


def test_info_of_a_mixed_rate_session_lists_the_other_rate(server):
    done = cli("info", "mixed.mefd", "--channels", "fast1,fast2", port=server.port)
    assert done.returncode == 0, done.stderr
    assert "channels  2 at 512 Hz: fast1, fast2" in done.stdout
    assert "2 at 256 Hz: slow1, slow2 (select them with --channels)" in done.stdout


def test_info_of_an_encrypted_session_with_its_password(server):
    done = cli("info", "secret.mefd", "--password", PASSWORD2, port=server.port)
    assert done.returncode == 0, done.stderr
    assert "duration  20 s" in done.stdout


def test_ls_lists_the_sessions(server, conn):
    assert callable(conn.root.list_sessions)     # the root service has it: never skipped
    done = cli("ls", port=server.port)
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split()
    assert {"main.mefd", "mixed.mefd", "secret.mefd"} <= set(listed)
    assert "not_a_session.mefd" not in listed
    long = cli("ls", "--long", port=server.port)
    assert long.returncode == 0, long.stderr
    assert "6 ch  256 Hz" in long.stdout and "encrypted" in long.stdout


def test_stats_prints_the_root_service_counters(server, conn):
    stats = conn.root.get_stats()                # the root service has it: never skipped
    done = cli("stats", port=server.port)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(stats)
    assert [line.split()[0] for line in lines] == [str(name) for name, _ in stats]


@pytest.mark.parametrize("precision", [2, 1])
def test_exported_mef3_read_back_equals_the_service(server, conn, tmp_path, precision):
    """30-90 s of two channels in 10 s segments: the gap (40.5-52 s) spans a segment
    boundary; MefReader on the export gives the service's samples rounded to the precision."""
    out = tmp_path / "part.mefd"
    done = cli("export", "main.mefd", "--channels", "Fp1,index", "--start", "30",
               "--stop", clock(90).replace(" ", "T"), "--segment-seconds", "10",
               "--precision", str(precision), "--out", str(out), port=server.port)
    assert done.returncode == 0, done.stderr
    assert "2 channels x 15,360 samples at 256 Hz" in done.stdout
    expected = service_samples(conn, ["Fp1", "index"], int(30 * FS), int(90 * FS))
    got = reference(str(out), ["Fp1", "index"])
    assert got.shape == expected.shape
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(expected).any()
    if precision == 2:  # the session's own precision: bit-exact
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, np.round(expected, 1), rtol=0, atol=1e-9)


def test_exported_csv_and_npz_equal_the_service(server, conn, tmp_path):
    expected = service_samples(conn, ["O1", "Cz"], int(35 * FS), int(60 * FS))
    done = cli("export", "main.mefd", "--channels", "O1,Cz", "--start", "35s", "--stop", "60",
               "--segment-seconds", "7", "--out", str(tmp_path / "x.npz"), port=server.port)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "x.npz") as z:
        np.testing.assert_array_equal(z["data"], expected)
        assert list(z["channels"]) == ["O1", "Cz"] and float(z["fs"]) == FS
        assert int(z["start_uutc"]) == START + 35_000_000
    done = cli("export", "main.mefd", "--channels", "O1,Cz", "--start", "35", "--stop", "60",
               "--out", str(tmp_path / "x.csv"), port=server.port)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "x.csv") as f:
        assert f.readline().strip() == "time_uutc,O1,Cz"
    table = np.loadtxt(tmp_path / "x.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(table[:, 0], START + np.rint(
        (np.arange(int(35 * FS), int(60 * FS))) * 1e6 / FS))
    np.testing.assert_allclose(table[:, 1:].T, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("sink_class", [CsvSink, NpzSink])
def test_sinks_write_each_segment_to_disk_as_it_comes(tmp_path, sink_class):
    """Nothing is kept back: after each segment the partial file has grown by it."""
    path = str(tmp_path / ("x" + (".csv" if sink_class is CsvSink else ".npz")))
    sink = sink_class(path, ["a", "b"], 256.0, START, 3 * 4096, ["uV", "uV"], 2)
    sizes = []
    for k in range(3):
        sink.write(np.full((2, 4096), float(k)))
        getattr(sink, "_file", None) and sink._file.flush()
        sizes.append(os.path.getsize(path + ".partial"))
    assert sizes[0] >= 2 * 4096 * (8 if sink_class is NpzSink else 4) * 0.9
    assert sizes[2] - sizes[1] >= sizes[0] * 0.9
    sink.finish()
    assert os.path.exists(path) and not os.path.exists(path + ".partial")


def test_plot_writes_a_png_with_the_gap_shaded(server, tmp_path):
    out = tmp_path / "w.png"
    done = cli("plot", "main.mefd", "--start", clock(35).replace(" ", "T"), "--seconds", "20",
               "--out", str(out), port=server.port)
    assert done.returncode == 0, done.stderr
    image = mpimg.imread(out)[:, :, :3]
    width, height = figure_size(6)
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    left = MARGINS[0] * DPI
    axes_width = (width - MARGINS[0] - MARGINS[1]) * DPI
    col = [int(left + (GAP[k] / FS - 35) / 20 * axes_width) for k in (0, 1)]
    rows = slice(int(MARGINS[3] * DPI) + 20, int((height - MARGINS[2]) * DPI) - 2)
    shade = np.array(matplotlib_rgb(GAP_COLOR))
    inside = np.all(np.abs(image[rows, col[0] + 3:col[1] - 3] - shade) < 2.5 / 255, axis=-1)
    before = np.all(np.abs(image[rows, int(left) + 5:col[0] - 10] - shade) < 2.5 / 255, axis=-1)
    assert inside.mean() > 0.97 and before.mean() < 0.02


def matplotlib_rgb(colour: str):
    from matplotlib.colors import to_rgb
    return to_rgb(colour)


def test_plot_follow_writes_frames_headless(server, tmp_path):
    done = cli("plot", "main.mefd", "--follow", "--frames", str(tmp_path), "--start", "30",
               "--seconds", "5", "--step", "5", "--max-frames", "3", port=server.port)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == [f"frame_{k:05d}.png" for k in range(3)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_INPUT = [
    (["export", "main.mefd", "--channels", "Fp1,XX", "--out", "{tmp}/a.npz"], "--channels", "'XX'"),
    (["export", "mixed.mefd", "--channels", "slow1,fast1", "--out", "{tmp}/a.npz"],
     "--channels", "rate"),
    (["export", "main.mefd", "--start", "yesterday", "--out", "{tmp}/a.npz"], "--start",
     "'yesterday'"),
    (["export", "main.mefd", "--start", "1h", "--out", "{tmp}/a.npz"], "--start", "outside"),
    (["export", "main.mefd", "--start", "60", "--stop", "50", "--out", "{tmp}/a.npz"],
     "--stop", "not after"),
    (["export", "main.mefd", "--out", "{tmp}/a.txt"], "--out", "extension"),
    (["export", "nowhere.mefd", "--out", "{tmp}/a.npz"], "PATH", "nowhere.mefd"),
    (["export", "../outside.mefd", "--out", "{tmp}/a.npz"], "PATH", ""),
    (["info", "secret.mefd", "--password", "wrong"], "--password", "as --password"),
    (["plot", "main.mefd", "--seconds", "-3"], "--seconds", "-3"),
    (["plot", "main.mefd", "--out", "{tmp}/w.jpeg2"], "--out", "extension"),
    (["info", "main.mefd", "--tls-cert", "{tmp}/missing.pem"], "--tls-cert", "not a file"),
]


@pytest.mark.parametrize("args,argument,detail", BAD_INPUT,
                         ids=[f"{a[0]}-{arg}-{d or 'path'}" for a, arg, d in BAD_INPUT])
def test_bad_input_exits_2_naming_the_argument(server, tmp_path, args, argument, detail):
    done = cli(*[a.format(tmp=tmp_path) for a in args], port=server.port)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"error: {argument}: " in done.stderr
    assert detail in done.stderr
    assert "Traceback" not in done.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith("a.")]


def test_usage_errors_exit_2():
    for args in ([], ["export", "main.mefd"], ["frobnicate"], ["info"]):
        done = cli(*args)
        assert done.returncode == 2 and "usage:" in done.stderr and "Traceback" not in done.stderr


def test_an_existing_output_needs_overwrite(server, tmp_path):
    out = tmp_path / "a.csv"
    out.write_text("keep")
    done = cli("export", "main.mefd", "--stop", "1", "--out", str(out), port=server.port)
    assert done.returncode == 2 and "--out" in done.stderr and out.read_text() == "keep"
    done = cli("export", "main.mefd", "--stop", "1", "--out", str(out), "--overwrite",
               port=server.port)
    assert done.returncode == 0 and len(out.read_text().splitlines()) == 257


@pytest.mark.parametrize("ext", [".csv", ".npz", ".mefd"])
def test_an_interrupted_overwrite_keeps_the_old_output(data_root, tmp_path, ext):
    """``export --overwrite`` interrupted (Ctrl-C) while it waits for data: the old output
    is still there and no partial one is left; a finished export replaces it. Before, the
    old file was deleted first and Ctrl-C left neither."""
    out = tmp_path / f"x{ext}"
    if ext == ".mefd":
        out.mkdir()
        (out / "keep").write_text("old")
        old_there = lambda: (out / "keep").read_text() == "old"            # noqa: E731
    else:
        out.write_bytes(b"old")
        old_there = lambda: out.read_bytes() == b"old"                     # noqa: E731
    partial = [tmp_path / f"x{ext}.partial", tmp_path / f".x{ext}.partial"]
    with MefStreamServer(port=0, data_root=data_root, workers=1, prefetch=0,
                         cache_mb=16) as srv:
        srv.pool.warm_up()
        held = srv.registry.acquire("main.mefd")     # open: the export needs no reader
        pids = srv.pool.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)             # ... and its first read waits
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "software", "export", "main.mefd", "--overwrite",
                 "--segment-seconds", "1", "--out", str(out), "--port", str(srv.port)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # begun (its partial output made) and waiting for its first samples
            wait_until(lambda: any(p.exists() for p in partial)
                       and dict(srv.cache.stats())["in_flight"] > 0, timeout=60)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert proc.returncode == 130 and "interrupted" in err, err
        assert old_there() and not any(p.exists() for p in partial)
        done = cli("export", "main.mefd", "--overwrite", "--stop", "2", "--out", str(out),
                   port=srv.port)
        srv.registry.release(held)
    assert done.returncode == 0, done.stderr
    assert not any(p.exists() for p in partial)
    if ext == ".mefd":
        assert not (out / "keep").exists()
        assert reference(str(out), ["Cz"]).shape == (1, 512)
    else:
        assert not old_there()


def test_no_server_exits_1():
    done = cli("info", "main.mefd", "--timeout", "0.3", port=free_port())
    assert done.returncode == 1
    assert "no mefstream server answered" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


def test_cannot_write_exits_1(server, tmp_path):
    (tmp_path / "file").write_text("")
    base = tmp_path / "file"          # a file where a directory should be
    for args in (["export", "--stop", "2", "--out", str(base / "x.csv")],
                 ["export", "--stop", "2", "--out", str(base / "x.mefd")],
                 ["plot", "--seconds", "2", "--out", str(base / "w.png")]):
        done = cli(args[0], "main.mefd", *args[1:], port=server.port)
        assert done.returncode == 1, (args, done.stderr)
        assert "cannot write --out" in done.stderr and "Traceback" not in done.stderr


def test_tls_options_reach_get_connection(data_root, pki):
    auth = SSLAuthenticator(pki / "server.key", pki / "server.pem", ca_certs=pki / "ca.pem",
                            cert_reqs=ssl.CERT_REQUIRED)
    with MefStreamServer(host="127.0.0.1", port=0, data_root=data_root, workers=1,
                         authenticator=auth) as srv:
        done = cli("info", "main.mefd", "--host", "127.0.0.1", "--tls-cert",
                   str(pki / "client.pem"), "--tls-key", str(pki / "client.key"),
                   "--tls-ca", str(pki / "ca.pem"), port=srv.port)
        assert done.returncode == 0, done.stderr
        assert "channels  6 at 256 Hz" in done.stdout
        refused = cli("info", "main.mefd", "--host", "127.0.0.1", "--timeout", "2",
                      port=srv.port)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "--tls-cert" in refused.stderr or "TLS" in refused.stderr


@pytest.mark.slow
def test_the_shell_example_runs(tmp_path):
    """examples/look_at_a_session.sh: a server on the demo recording, every command."""
    env = {**os.environ, "PYTHON": sys.executable, "PORT": str(free_port())}
    done = subprocess.run(["bash", "examples/look_at_a_session.sh", str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr + (tmp_path / "server.log").read_text()
    assert "channels  16 at 256 Hz" in done.stdout
    assert (tmp_path / "window.png").stat().st_size > 10_000
    assert len(os.listdir(tmp_path / "frames")) == 4
    assert "Traceback" not in done.stderr


class _FakeStream(rpyc.Service):
    """A session's get_info, as the real view gives it (for the fake root below)."""

    def exposed_get_info(self):
        return (("path", "a.mefd"), ("channels", ("x", "y")), ("all_channels", ("x", "y")),
                ("fs", 512.0), ("rates", (("x", 512.0), ("y", 512.0))),
                ("start_uutc", START), ("end_uutc", START + 3_600_000_000),
                ("n_samples", 512 * 3600), ("units", ("uV", "uV")), ("gaps", ()),
                ("growing", False))


class _FakeRoot(rpyc.Service):
    """The root service's methods that other branches add (list_sessions, get_stats,
    list_live_streams), so that ls and stats are tested before they are merged."""

    def exposed_list_sessions(self):
        return ("a.mefd", "locked.mefd")

    def exposed_get_stats(self):
        return (("cache_hits", 12345), ("cache_mib", 1.5), ("sessions_open", 2))

    def exposed_list_live_streams(self):
        return ("ward3/bed7",)

    def exposed_open_file(self, path, password=None):
        if path == "locked.mefd":
            raise WrongPasswordError("password=None is wrong")
        return _FakeStream()

    def exposed_close_file(self, path):
        return True


@pytest.fixture
def fake_root():
    server = FastThreadedServer(_FakeRoot, hostname="127.0.0.1", port=0,
                                protocol_config={"allow_pickle": False})
    thread = threading.Thread(target=server.start, name="fake-root", daemon=True)
    thread.start()
    yield server.port
    server.close()
    thread.join(10)


def test_ls_and_stats_format_what_the_root_service_gives(fake_root):
    done = cli("ls", port=fake_root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["a.mefd", "locked.mefd", "ward3/bed7   (live)"]
    long = cli("ls", "-l", port=fake_root)
    assert long.returncode == 0, long.stderr
    lines = long.stdout.splitlines()
    assert lines[0].startswith("a.mefd") and "2 ch  512 Hz" in lines[0]
    assert "1 h 00 min 00 s" in lines[0] and clock(0) in lines[0]
    assert lines[1].startswith("locked.mefd") and "encrypted" in lines[1]
    done = cli("stats", port=fake_root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["cache_hits     12,345", "cache_mib         1.5",
                                        "sessions_open       2"]
