"""A failed append leaves no trace in the next one (issue 19).

``AppendingSession._to_int32`` folded every chunk into the running min/max before the
append was written: an append that failed (a full disk, the exchange refused) left the
next append's ``.tmet`` claiming values that were never written. Found with it: the bytes
the failed append had written past the end of the shared ``.tdat`` made pymef index the
next append's blocks at the failed one's samples.
"""
from __future__ import annotations

import numpy as np
import pytest

from software.mef3.append import AppendingSession
from tests.test_recorder import check_metadata, read, signal_values
from tests.util import START


def disk_full(*_args) -> None:
    raise OSError("disk full")


@pytest.mark.parametrize("failing", ["exchange", "_fix_extrema"])
def test_a_failed_append_leaves_nothing_for_the_next(tmp_path, monkeypatch, failing):
    names = ("a", "b")
    path = str(tmp_path / "s.mefd")
    with AppendingSession(path, names, 1000.0, START) as session:
        session.append(signal_values(2, 0, 1000))
        import software.mef3.append as mefappend
        with monkeypatch.context() as patch:       # fails after pymef wrote the samples
            if failing == "exchange":
                patch.setattr(mefappend, "exchange", disk_full)
            else:
                patch.setattr(session, "_fix_extrema", disk_full)
            spike = np.full((2, 1000), 5000.0)     # far beyond every value written
            spike[1] = -5000.0
            with pytest.raises(OSError, match="disk full"):
                session.append(spike)
        assert session.n_samples == 1000
        session.append(signal_values(2, 1000, 2000))
    got, reader = read(path, names)
    np.testing.assert_allclose(got, signal_values(2, 0, 2000), atol=1e-9)
    check_metadata(path, names, got, reader)       # min/max of what was written only
