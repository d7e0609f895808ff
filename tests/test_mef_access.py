"""MefSessionFile.read_grid equals the whole-recording MefReader read, sample by sample."""
from __future__ import annotations

import numpy as np
import pytest

from software.errors import NotMefSessionError, WrongPasswordError
from software.mef3.access import MefSessionFile
from software.mef3.writer import write_session
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


@pytest.mark.parametrize("fs", [256.0, 250.0, 333.3, 1000.0])
def test_every_block_edge_matches_mefreader(tmp_path, fs):
    """Reads that start or end at every block edge (and one sample either side) equal the
    whole-recording read: gaps, a new segment after a pause, a new segment that starts
    exactly where the last one ended, runs of blocks split where the file is not contiguous."""
    rng = np.random.default_rng(7 + int(fs))
    n = int(fs * 100)
    data = np.round(rng.standard_normal((2, n)) * 100, 2)
    data[:, int(fs * 12) + 5:int(fs * 25)] = np.nan
    touching = int(fs * 70)  # this segment starts exactly where the previous one ends
    touching_uutc = START + 55_000_000 + int(round((touching - int(fs * 50)) * 1e6 / fs))
    path = write_session(tmp_path / "t.mefd", {"a": data[0], "b": data[1]}, fs, START,
                         new_segment_at=[(int(fs * 50), START + 55_000_000),
                                         (touching, touching_uutc)])
    ref = reference(path, ["a", "b"])
    with MefSessionFile(path) as session:
        table = session._tables["a"]
        assert len(table.segments) == 3
        group = session.info.group(fs)
        size = group.n_samples
        b = table.blocks(0, table.n_blocks)
        x = (b["times"] - group.start_uutc) / 1e6 * fs
        offsets = np.where(x >= 0, x + 0.5, x - 0.5).astype(np.int64)
        edges = sorted({int(e) for o, k in zip(offsets, b["n"]) for e in (o, o + k)})
        for edge in edges:
            for d in (-1, 0, 1):
                for a, z in ((0, edge + d), (edge + d, size), (edge + d, edge + d + 7)):
                    a, z = max(a, 0), min(z, size)
                    if a < z:
                        assert same(session.read_grid(["a", "b"], a, z), ref[:, a:z]), (fs, a, z)
        before = session.reads["blocks"]
        session.read_grid(["a"], 0, size)
        # a whole-channel read decodes each block once (no extra block at a boundary)
        assert session.reads["blocks"] - before == table.n_blocks
