"""Block tables read where they lie: exact reads over many short blocks, changed files."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from benchmarks.sessions import LongSession, ensure_long_session, signal
from software.errors import CorruptSessionError
from software.mef3 import block_table
from software.mef3.access import MefSessionFile
from tests.util import reference


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality, NaN included."""
    return a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def long_session(tmp_path_factory):
    """3 channels x 2 segments of 1 s blocks at 8 Hz, a one-block gap every 97 s."""
    ls = LongSession(str(tmp_path_factory.mktemp("long")), n_blocks=3 * 3000, n_channels=3,
                     fs=8.0, segments=2, gap_every=97)
    ensure_long_session(ls, log=lambda *a: None)
    return ls


def test_many_short_blocks_read_exactly(long_session):
    path = long_session.path
    names = ["ch000", "ch001", "ch002"]
    ref = reference(path, names)
    with MefSessionFile(path) as session:
        table = session._tables["ch000"]
        # NaN seconds are not stored: 1500 s a segment minus its gaps
        assert [s.n_blocks for s in table.segments] == [1500 - 15, 1500 - 15]
        # coarse offsets only: a few bytes per 256 blocks are kept in memory
        assert table._coarse_times.size == -(-table.n_blocks // block_table.COARSE)
        assert len(session.info.channel("ch000").gaps) == 3000 // 97 + 1  # + the pause
        n = session.info.group(8.0).n_samples
        assert n == ref.shape[1]
        rng = np.random.default_rng(3)
        for _ in range(150):
            a = int(rng.integers(0, n))
            b = min(n, a + int(rng.integers(1, 3000)))
            rows = sorted(rng.choice(3, int(rng.integers(1, 4)), replace=False))
            got = session.read_grid([names[r] for r in rows], a, b)
            assert same(got, ref[rows, a:b]), (a, b, rows)
        # across the pause between the segments, and the whole channel at once
        mid = 1500 * 8
        assert same(session.read_grid(names, mid - 50, mid + 200), ref[:, mid - 50:mid + 200])
        assert same(session.read_grid(names, 0, n), ref)
    assert not np.isnan(signal(long_session, 0)[:8 * 96]).any()


def _copy(ls: LongSession, tmp_path) -> str:
    dest = os.path.join(tmp_path, os.path.basename(ls.path))
    shutil.copytree(ls.path, dest)
    return dest


def _seg_file(path: str, ext: str) -> str:
    return os.path.join(path, "ch001.timd", "ch001-000001.segd", f"ch001-000001.{ext}")


@pytest.mark.parametrize("change", ["truncate", "rewrite", "replace", "remove"])
def test_changed_index_file_gives_a_clear_error(long_session, tmp_path, change):
    path = _copy(long_session, tmp_path)
    tidx = _seg_file(path, "tidx")
    with MefSessionFile(path) as session:
        n = session.info.group(8.0).n_samples
        late = (n - 400, n - 100)            # in the second segment
        before = session.read_grid(["ch001"], *late)
        if change == "truncate":
            os.truncate(tidx, os.path.getsize(tidx) // 2)
        elif change == "rewrite":           # same size, other entries: times moved
            with open(tidx, "r+b") as fh:
                raw = bytearray(fh.read())
                e = np.frombuffer(raw, dtype=block_table.ENTRY,
                                  offset=block_table.HEADER_BYTES)
                e = e.copy()
                e["start_time"] += np.where(e["start_time"] < 0, -1_000_000, 1_000_000)
                raw[block_table.HEADER_BYTES:] = e.tobytes()
                fh.seek(0)
                fh.write(raw)
        elif change == "replace":
            shutil.copyfile(tidx, tidx + ".new")
            os.replace(tidx + ".new", tidx)
        else:
            os.remove(tidx)
        with pytest.raises(CorruptSessionError, match="ch001-000001.tidx"):
            session.read_grid(["ch001"], *late)
        # a channel whose files did not change still reads exactly
        assert same(session.read_grid(["ch000"], 0, 100),
                    MefSessionFile(long_session.path).read_grid(["ch000"], 0, 100))
    assert before.shape == (1, 300)


def test_truncated_data_file_gives_a_clear_error(long_session, tmp_path):
    path = _copy(long_session, tmp_path)
    tdat = _seg_file(path, "tdat")
    with MefSessionFile(path) as session:
        n = session.info.group(8.0).n_samples
        os.truncate(tdat, os.path.getsize(tdat) - 5000)
        with pytest.raises(CorruptSessionError, match="tdat"):
            session.read_grid(["ch001"], n - 400, n - 100)


def test_truncated_index_file_refused_at_open(long_session, tmp_path):
    path = _copy(long_session, tmp_path)
    tidx = _seg_file(path, "tidx")
    os.truncate(tidx, os.path.getsize(tidx) - block_table.ENTRY_BYTES)
    with pytest.raises(CorruptSessionError, match="tidx"):
        MefSessionFile(path)
