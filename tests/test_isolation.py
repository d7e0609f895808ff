"""One damaged session cannot hurt the reads of any other (issue 19, isolation).

``damaged.mefd`` really crashes pymef: every block header of one channel claims 2 GiB, so
pymef's CRC check reads past its buffer when another block follows in the same read
(SIGSEGV, in plain ``MefReader`` too; checked in a subprocess below). Reads here span at
least two MEF blocks (10 s each). The pool must pin each crash on the read that caused it, retry the
others without counting, and quarantine the session after repeated crashes.
"""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import software
from software import MefStreamServer, decode_segment, get_connection
from software.mef3.block_table import ENTRY, HEADER_BYTES
from software.mef3.writer import write_session
from software.readers.pool import DEMAND, ReaderPool
from tests.util import FS, START, held as _held, reference, release

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(60 * FS)


def damage(session: str, channel: str) -> None:
    """Make every block of ``channel`` claim 2 GiB in its RED header (pymef segfaults)."""
    base = os.path.join(session, f"{channel}.timd", f"{channel}-000000.segd",
                        f"{channel}-000000")
    entries = np.fromfile(base + ".tidx", dtype=np.uint8)[HEADER_BYTES:].view(ENTRY)
    with open(base + ".tdat", "r+b") as fh:
        for offset in entries["file_offset"]:
            fh.seek(int(offset) + 36)                 # RED block header: block_bytes
            fh.write(struct.pack("<I", 0x7FFFFFFF))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    """``healthy.mefd`` (4 channels, channel ``index`` = sample / 100) and ``damaged.mefd``
    (its copy with channel ``b`` damaged)."""
    base = tmp_path_factory.mktemp("isolation")
    rng = np.random.default_rng(11)
    signals = {"index": np.arange(N) / 100.0,
               **{name: np.round(rng.normal(0, 40, N), 2) for name in ("a", "b", "c")}}
    write_session(base / "healthy.mefd", signals, FS, START, precision=2)
    shutil.copytree(base / "healthy.mefd", base / "damaged.mefd")
    damage(str(base / "damaged.mefd"), "b")
    return str(base)


@pytest.fixture(scope="module")
def healthy_ref(root):
    return reference(os.path.join(root, "healthy.mefd"), ("a", "b", "c", "index"))


CRASH = textwrap.dedent("""
    import sys, warnings
    warnings.simplefilter("ignore")
    if sys.argv[2] == "MefReader":
        from mef_tools.io import MefReader
        reader = MefReader(sys.argv[1])
        reader.get_data(["b"], reader.get_property("start_time", "b"),
                        reader.get_property("end_time", "b"))
    else:
        from software.mef3.access import MefSessionFile
        MefSessionFile(sys.argv[1]).read_grid(["b"], 0, 5120)
    print("read without crashing")
""")


@pytest.mark.parametrize("reader", ["MefReader", "MefSessionFile"])
def test_the_damaged_session_really_crashes_pymef(root, reader):
    done = subprocess.run([sys.executable, "-c", CRASH, os.path.join(root, "damaged.mefd"),
                           reader], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGSEGV, (done.returncode, done.stdout, done.stderr)


def test_a_read_that_always_crashes_fails_after_exactly_max_attempts(root):
    """The retry limit: a read that crashes its reader every time is tried exactly
    ``max_attempts`` times (kills the off-by-one mutant ``attempt > max_attempts``)."""
    damaged = os.path.join(root, "damaged.mefd")
    with ReaderPool(workers=1, max_attempts=3, quarantine_after=0, landing_mb=1) as pool:
        with pytest.raises(software.ReaderError, match="crashed 3 times"):
            pool.read(damaged, None, ["b"], 0, 5120).result(timeout=120)
        assert pool.restarts == 3 and pool.crashes_pinned == 3
        assert pool.crashes(damaged) == 3 and pool.quarantine.sessions() == ()


def test_a_crash_is_charged_to_its_own_session_only(root, healthy_ref, tmp_path):
    """A task of the healthy session runs in one reader while the damaged session's read
    crashes the other three times: only the damaged read fails, and then the session is
    quarantined (refused at once, no reader crashes again). Before the fix every task in
    flight counted each crash: the healthy task failed with "died 3 times"."""
    healthy, damaged = (os.path.join(root, n) for n in ("healthy.mefd", "damaged.mefd"))
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    with ReaderPool(workers=2, max_attempts=3, landing_mb=4) as pool:
        pool.warm_up()
        held = pool._submit(DEMAND, _held, healthy, fifo)
        with pytest.raises(software.ReaderError, match="crashed 3 times"):
            pool.read(damaged, None, ["a", "b"], 0, 5120).result(timeout=120)
        assert not held.done()                          # still running: never failed
        assert pool.restarts == 3 and pool.crashes_pinned == 3
        assert pool.crashes(damaged) == 3 and pool.crashes(healthy) == 0
        release(fifo)
        assert held.result(timeout=60) == b""
        # quarantined: refused at once, naming the session; no reader dies for it
        for attempt in (lambda: pool.read(damaged, None, ["a"], 0, 256),
                        lambda: pool.inspect(damaged, None)):
            with pytest.raises(software.CorruptSessionError, match="quarantined") as caught:
                attempt().result(timeout=60)
            assert "damaged.mefd" in str(caught.value)
        assert pool.restarts == 3 and pool.quarantine.sessions() == (damaged,)
        assert np.array_equal(pool.read(healthy, None, ["a", "b", "c", "index"], 0, N)
                              .result(timeout=60), healthy_ref, equal_nan=True)


def test_a_quarantine_ends_when_the_session_changes_and_is_opened_again(root, tmp_path):
    session = str(tmp_path / "flaky.mefd")
    shutil.copytree(os.path.join(root, "damaged.mefd"), session)
    with ReaderPool(workers=1, max_attempts=1, quarantine_after=1, landing_mb=1) as pool:
        assert pool.inspect(session, None).result(timeout=60).channels   # opens fine
        with pytest.raises(software.ReaderError, match="crashed 1 times"):
            pool.read(session, None, ["b"], 0, 5120).result(timeout=120)
        with pytest.raises(software.CorruptSessionError, match="quarantined"):
            pool.inspect(session, None).result(timeout=60)     # unchanged: still refused
        shutil.rmtree(session)                                 # repaired: copied again
        shutil.copytree(os.path.join(root, "healthy.mefd"), session)
        pool.forget(session)
        assert pool.inspect(session, None).result(timeout=60).channels
        assert pool.read(session, None, ["b"], 0, 5120).result(timeout=60).shape == (1, 5120)
        assert pool.crashes(session) == 0 and pool.restarts == 1


def test_a_client_reading_a_damaged_session_fails_no_read_of_another(root, healthy_ref):
    """The measured case: one client streams the healthy session while another reads the
    damaged one. Every healthy read is served and exact; the damaged reader gets a
    ReaderError (or, its reads ahead having crashed readers too, at once) the quarantine
    error naming the session, over RPyC."""
    with MefStreamServer(port=0, data_root=root, workers=2, prefetch=2, cache_mb=1,
                         block_seconds=1.0) as srv, \
            get_connection(srv.port, host="127.0.0.1", timeout=10) as good, \
            get_connection(srv.port, host="127.0.0.1", timeout=10) as bad:
        srv.pool.warm_up()
        stream = good.root.open_file("healthy.mefd")
        stream.set_active_channels(("a", "b", "c", "index"))
        broken = bad.root.open_file("damaged.mefd")
        errors: list[BaseException] = []

        def read_damaged() -> None:
            for start in range(0, N - 5120, 5120):
                try:
                    broken.get_stream_segment(5120, start)
                except software.StreamError as exc:
                    errors.append(exc)
                if errors and isinstance(errors[-1], software.CorruptSessionError):
                    return

        thread = threading.Thread(target=read_damaged, name="test-damaged", daemon=True)
        thread.start()
        served = 0
        while thread.is_alive() or served < 30:
            start = (served * 512) % (N - 512)
            got = decode_segment(stream.get_stream_segment(512, start))
            assert np.array_equal(got, healthy_ref[:, start:start + 512], equal_nan=True)
            served += 1
        thread.join(60)
        # its reads ahead crash readers too: the session may be quarantined before a
        # read has crashed three times
        assert all(isinstance(e, (software.ReaderError, software.CorruptSessionError))
                   for e in errors), errors
        assert isinstance(errors[-1], software.CorruptSessionError), errors
        assert "damaged.mefd" in str(errors[-1]) and "quarantined" in str(errors[-1])
        assert srv.pool.crashes(os.path.join(root, "healthy.mefd")) == 0
        # two readers may die of it in one breakage; none dies after the quarantine
        assert srv.pool.quarantine.sessions() == (os.path.join(root, "damaged.mefd"),)
        assert 1 <= srv.pool.restarts <= 3
