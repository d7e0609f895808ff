"""Writing MEF3 sessions with mef_tools (demo data, tests, benchmarks, exports, the recorder).

Runs wherever a session is written, never in the server process: mef_tools loads pymef and
pandas (about 40 MiB).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import mef_tools.io as mef_io
import numpy as np
from mef_tools.io import MefWriter

from ..errors import SessionExistsError

logger = logging.getLogger(__name__)

__all__ = ["MefWriter", "rounding_to_integers", "write_session"]


@contextlib.contextmanager
def rounding_to_integers():
    """Make mef_tools round samples to integers instead of truncating them.

    mef_tools 1.2.3 converts with ``int32(10**p * round(x, p))``, a cast that truncates:
    ``round(0.29, 2) * 100`` is 28.999999999999996, stored as 28, so at precision 2 about
    4.6 % of values come back one unit (0.01) lower in magnitude. Only while our own
    writes run (the command-line process writes nothing else).
    """
    original = mef_io.convert_data_to_int32

    def convert(data, precision=None):
        if precision is None:
            return original(data, precision)
        scaled = np.rint(np.nan_to_num(np.asarray(data, np.float64), nan=0.0)
                         * 10.0 ** int(precision))
        return scaled.astype(np.int32)

    mef_io.convert_data_to_int32 = convert
    try:
        yield
    finally:
        mef_io.convert_data_to_int32 = original


def write_session(path: str | os.PathLike, signals: Mapping[str, np.ndarray],
                  fs: float | Mapping[str, float],
                  start_uutc: int, *, precision: int = 2, password1: str | None = None,
                  password2: str | None = None, overwrite: bool = False,
                  new_segment_at: Sequence[tuple[int, int]] = ()) -> str:
    """Write a MEF3 session with mef_tools (used for the demo recording and in tests).

    Parameters
    ----------
    path : str or os.PathLike
        Session directory to create; must end in ``.mefd``.
    signals : mapping of str to numpy.ndarray
        Channel name to float samples; NaN runs longer than one second become gaps.
    fs : float or mapping of str to float
        Sampling rate in Hz of every channel, or of each channel by name.
    start_uutc : int
        Time stamp of the first sample in microseconds.
    precision : int, optional
        Decimal digits kept (samples are stored as integers times ``10**-precision``).
    password1, password2 : str, optional
        Level-1 and level-2 passwords; both ``None`` for an unencrypted session.
    overwrite : bool, optional
        Remove an existing session at ``path`` first.
    new_segment_at : sequence of (int, int), optional
        ``(sample_index, start_uutc)`` pairs: from that sample on the data is written as
        a new MEF segment starting at that time (a recording restarted after a pause).

    Returns
    -------
    str
        The absolute session path.
    """
    path = os.path.abspath(os.fspath(path))
    if not path.endswith(".mefd"):
        raise ValueError(f"path={path!r} must end in '.mefd'")
    if os.path.exists(path):
        if not overwrite:
            raise SessionExistsError(f"{path!r} exists; pass overwrite=True to replace it")
        shutil.rmtree(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cuts = sorted(new_segment_at)
    writer = MefWriter(path, overwrite=False, password1=password1, password2=password2)
    try:
        for name, data in signals.items():
            data = np.asarray(data, dtype=np.float64)
            pieces = [(0, start_uutc)] + list(cuts)
            for k, (first, t0) in enumerate(pieces):
                last = pieces[k + 1][0] if k + 1 < len(pieces) else len(data)
                chunk = data[first:last]
                with warnings.catch_warnings(), rounding_to_integers():
                    warnings.simplefilter("ignore")
                    rate = fs[name] if isinstance(fs, Mapping) else fs
                    ok = writer.write_data(chunk, name, int(t0), rate, precision=precision,
                                           new_segment=k > 0)
                if not ok:
                    raise RuntimeError(f"mef_tools refused to write channel {name!r} piece {k}")
    finally:
        writer.session.close()
    logger.info("wrote MEF3 session %s (%d channels)", path, len(signals))
    return path
