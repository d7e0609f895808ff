"""Fixtures: real MEF3 sessions written with mef_tools, a real server on a free port."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from software import MefStreamServer, get_connection
from software.mef3.writer import write_session
from tests.pki import have_openssl, make_pki
from tests.util import FS, START

# A shell without job control starts background commands with SIGINT ignored, and the
# processes the tests start (servers, the command line) would inherit that and never see
# the Ctrl-C some tests send them. A handler of our own is reset to the default in them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: Samples of the main test recording (3 minutes at 256 Hz).
N_MAIN = int(180 * FS)
GAP = (int(40.5 * FS) + 3, int(52 * FS) + 11)       # NaN run -> a discontinuity
SEGMENT2_AT = int(120 * FS)                           # data from here is a new MEF segment
SEGMENT2_UUTC = START + 125 * 1_000_000               # ... starting after a 5 s pause
PASSWORD1, PASSWORD2 = "level-one", "lvl2-secret"   # MEF allows at most 15 characters


def _main_signals() -> dict:
    rng = np.random.default_rng(7)
    index = np.arange(N_MAIN, dtype=np.float64) / 100.0   # value encodes the sample index
    signals = {"index": index}
    for name in ("Fp1", "Fp2", "Cz", "O1", "O2"):
        signals[name] = np.round(rng.standard_normal(N_MAIN) * 40.0, 2)
    for data in signals.values():
        data[GAP[0]:GAP[1]] = np.nan
    return signals


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> str:
    """A data root holding the test sessions.

    - ``main.mefd``: 6 channels at 256 Hz, 3 min, a gap, and a second MEF segment after a
      5 s pause; channel ``index`` holds sample_index / 100.
    - ``mixed.mefd``: 2 channels at 256 Hz and 2 at 512 Hz.
    - ``secret.mefd``: encrypted copy of a small recording.
    """
    root = tmp_path_factory.mktemp("data")
    write_session(root / "main.mefd", _main_signals(), FS, START, precision=2,
                  new_segment_at=[(SEGMENT2_AT, SEGMENT2_UUTC)])
    rng = np.random.default_rng(3)
    write_session(root / "mixed.mefd",
                  {"slow1": rng.normal(0, 10, 256 * 30), "fast1": rng.normal(0, 10, 512 * 30),
                   "slow2": rng.normal(0, 10, 256 * 30), "fast2": rng.normal(0, 10, 512 * 30)},
                  {"slow1": 256.0, "slow2": 256.0, "fast1": 512.0, "fast2": 512.0}, START,
                  precision=2)
    write_session(root / "secret.mefd", {"a": rng.normal(0, 10, 256 * 20)}, 256.0, START,
                  precision=2, password1=PASSWORD1, password2=PASSWORD2)
    os.makedirs(root / "not_a_session.mefd")
    os.makedirs(root / "plain_dir")
    return str(root)


@pytest.fixture(scope="session")
def server(data_root):
    """A server on a free loopback port with two real reader processes (whole session)."""
    srv = MefStreamServer(host="127.0.0.1", port=0, data_root=data_root, workers=2,
                          prefetch=2, cache_mb=64, segment_seconds=7.0)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def conn(server):
    """A client connection (fast transport, serving thread); closed after the test."""
    connection = get_connection(server.port, host="127.0.0.1", timeout=10)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A directory of test certificates (see tests/pki.py: ca, otherca, server, client,
    rogue); skips the test when the openssl command is missing."""
    if not have_openssl():
        pytest.skip("openssl CLI not available to make test certificates")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def main_path(data_root) -> str:
    return os.path.join(data_root, "main.mefd")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> str:
    """A small demo recording for the examples (8 ch x 4 min, gap 120-130 s)."""
    from software.mef3.demo import write_demo_recording
    root = tmp_path_factory.mktemp("demo")
    write_demo_recording(str(root / "demo.mefd"), n_channels=8, minutes=4,
                         gap_seconds=(120.0, 130.0))
    return str(root)
