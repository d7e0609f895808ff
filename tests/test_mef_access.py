"""MefSessionFile.read_grid equals the whole-recording MefReader read, sample by sample."""
from __future__ import annotations

import numpy as np
import pytest

from software.errors import NotMefSessionError, WrongPasswordError
from software.mef_access import MefSessionFile, write_session
from tests.conftest import PASSWORD1, PASSWORD2
from tests.util import START, reference


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality, NaN included."""
    return a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("fs", [256.0, 250.0, 333.3, 1000.0, 5000.0])
def test_random_slices_match_mefreader_at_many_rates(tmp_path, fs):
    rng = np.random.default_rng(int(fs))
    n = int(fs * 70)
    data = np.round(rng.standard_normal((2, n)) * 100, 2)
    data[:, int(fs * 10) + 3:int(fs * 20) + 7] = np.nan          # a gap
    path = write_session(tmp_path / "r.mefd", {"a": data[0], "b": data[1]}, fs, START + 123,
                         new_segment_at=[(int(fs * 50), START + 123 + 55_000_000)])
    ref = reference(path, ["a", "b"])
    with MefSessionFile(path) as session:
        group = session.info.group(fs)
        assert group.n_samples == ref.shape[1]
        for _ in range(60):
            a = int(rng.integers(0, group.n_samples))
            b = int(rng.integers(a + 1, group.n_samples + 1))
            names = ["b", "a"] if rng.random() < 0.5 else ["a"]
            got = session.read_grid(names, a, b)
            rows = [["a", "b"].index(n) for n in names]
            assert same(got, ref[rows, a:b]), (fs, a, b, names)


def test_info_lists_channels_gaps_and_rates(data_root, main_path):
    with MefSessionFile(main_path) as session:
        info = session.info
    from mef_tools.io import MefReader
    assert info.names == tuple(MefReader(main_path).channels)
    assert set(info.names) == {"index", "Fp1", "Fp2", "Cz", "O1", "O2"}
    assert {c.fs for c in info.channels} == {256.0}
    assert not info.encrypted
    gaps = info.gaps(info.names)
    assert len(gaps) == 2           # the NaN run and the pause before the second segment
    assert all(a < b for a, b in gaps)


def test_passwords(data_root):
    path = f"{data_root}/secret.mefd"
    with MefSessionFile(path, PASSWORD2) as session:
        assert session.info.encrypted
    for bad in (None, "wrong", PASSWORD1):
        with pytest.raises(WrongPasswordError):
            MefSessionFile(path, bad)


def test_not_a_session(data_root):
    for bad in ("not_a_session.mefd", "plain_dir", "missing.mefd"):
        with pytest.raises(NotMefSessionError):
            MefSessionFile(f"{data_root}/{bad}")
