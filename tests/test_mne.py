"""to_mne_raw: values, units, meas_date, gap annotations, filtering around gaps."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import numpy as np
import pytest

from software import InvalidRangeError, MefStreamServer, get_connection
from software.mef3.writer import write_session
from tests.conftest import GAP, SEGMENT2_AT
from tests.util import FS, START, reference

mne = pytest.importorskip("mne", reason="mne is in requirements.txt; install it")
from software.handoff.mne import to_mne_raw  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _nan_runs(row: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) index ranges of the NaN runs of one row."""
    nan = np.concatenate(([False], np.isnan(row), [False]))
    edges = np.flatnonzero(np.diff(nan.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_whole_session_in_volts_with_gaps_annotated(conn, main_path):
    svc = conn.root.open_file("main.mefd")
    raw = to_mne_raw(svc)
    names = list(dict(svc.get_info())["channels"])
    ref = reference(main_path, names)
    assert raw.ch_names == names and raw.info["sfreq"] == FS
    assert set(raw.get_channel_types()) == {"seeg"}
    assert np.array_equal(raw.get_data(), ref * 1e-6, equal_nan=True)   # uV -> V
    assert raw.info["meas_date"] == dt.datetime.fromtimestamp(START / 1e6, dt.timezone.utc)
    runs = _nan_runs(ref[0])
    assert runs == [GAP, (SEGMENT2_AT, int(125 * FS))]                  # the test data's gaps
    ann = raw.annotations
    assert list(ann.description) == ["BAD_ACQ_SKIP"] * 2
    np.testing.assert_allclose(ann.onset * FS, [a for a, _ in runs], atol=1e-3)
    np.testing.assert_allclose(ann.duration * FS, [b - a for a, b in runs], atol=1e-3)


def test_filter_skips_the_gaps_and_leaves_the_rest_finite(conn, main_path):
    raw = to_mne_raw(conn.root.open_file("main.mefd"))
    gap = np.isnan(raw.get_data()[0])
    assert gap.any()
    filtered = raw.copy().filter(1.0, 40.0, verbose="error").get_data()
    assert np.isfinite(filtered[:, ~gap]).all()
    assert np.isnan(filtered[:, gap]).all()
    # without the annotations MNE's filter would spread the NaN over everything
    bare = raw.copy().set_annotations(None).filter(1.0, 40.0, verbose="error").get_data()
    assert not np.isfinite(bare[:, ~gap]).all()


def test_window_in_seconds_or_uutc(conn, main_path):
    svc = conn.root.open_file("main.mefd")
    names = list(dict(svc.get_info())["channels"])
    ref = reference(main_path, names)
    raw = to_mne_raw(svc, start=30.0, stop=100)
    first, last = int(30 * FS), int(100 * FS)
    assert raw.first_samp == first and raw.n_times == last - first
    assert np.array_equal(raw.get_data(), ref[:, first:last] * 1e-6, equal_nan=True)
    np.testing.assert_allclose(raw.annotations.onset * FS, [GAP[0]], atol=1e-3)  # 2nd gap out
    same = to_mne_raw(svc, start=START + 30_000_000, stop=START + 100_000_000)
    assert np.array_equal(same.get_data(), raw.get_data(), equal_nan=True)
    with pytest.raises(InvalidRangeError, match="stop"):
        to_mne_raw(svc, start=50.0, stop=40.0)
    with pytest.raises(TypeError, match="start"):
        to_mne_raw(svc, start="10")


def test_meas_date_keeps_microseconds(tmp_path):
    t0 = START + 123_457                       # not a whole second
    write_session(tmp_path / "us.mefd", {"a": np.arange(512, dtype=float)}, FS, t0,
                  precision=2)
    with MefStreamServer(host="127.0.0.1", port=0, data_root=str(tmp_path),
                         workers=1) as srv:
        connection = get_connection(srv.port, host="127.0.0.1")
        try:
            raw = to_mne_raw(connection.root.open_file("us.mefd"), ch_types="ecog")
        finally:
            connection.close()
    assert raw.info["meas_date"].microsecond == 123_457
    assert raw.info["meas_date"].tzinfo == dt.timezone.utc
    assert raw.get_data()[0, 5] == pytest.approx(5e-6)


def test_example_runs(tmp_path, demo_root):
    out = tmp_path / "mne.png"
    result = subprocess.run([sys.executable, "examples/mne_handoff.py", "--data-root",
                             demo_root, "--start", "100", "--stop", "160", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "annotation BAD_ACQ_SKIP: 120.000 s + 10.000 s" in result.stdout
    assert "after filtering: 1" in result.stdout and out.stat().st_size > 10_000

