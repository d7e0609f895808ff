"""Samples as MEF3 stores them: int32, a per-channel conversion factor, a NaN marker.

A RED-compressed MEF3 block holds int32 samples; ``MefReader.get_data`` returns
``float64(stored) * units_conversion_factor``, with NaN where pymef decoded MEF3's NaN
(:data:`STORED_NAN`, the smallest int32) and where no block covers the grid. Readers hand
the server this int32 form, the cache keeps it (half the bytes of float64), and answers
are converted when they are assembled, with the same float64 multiply, so that they stay
bit-equal to ``MefReader``::

    pymef float64 (integers, NaN) --to_stored--> int32 (NaN -> STORED_NAN)   reader
    int32 block rows --scale_into(factors)--> float64 answer (STORED_NAN -> NaN)  server

Imports only numpy: the server process uses it too.
"""
from __future__ import annotations

import numpy as np

__all__ = ["STORED_DTYPE", "STORED_NAN", "scale_into", "to_stored"]

#: What cached and landed samples are.
STORED_DTYPE = np.dtype(np.int32)
#: MEF3's RED NaN (``0x80000000``); pymef decodes it as NaN, so no stored sample a reader
#: of the session can see has this value: here it also marks grid samples without data.
STORED_NAN = int(np.iinfo(np.int32).min)


def to_stored(decoded: np.ndarray, out: np.ndarray) -> None:
    """Write pymef's decoded float64 samples (integers or NaN) into int32 ``out``.

    Parameters
    ----------
    decoded : numpy.ndarray
        float64 integers as pymef returns them, NaN for MEF3's NaN.
    out : numpy.ndarray
        int32 array of the same length.
    """
    with np.errstate(invalid="ignore"):  # NaN cast to int32: fixed just below
        np.copyto(out, decoded, casting="unsafe")
    nan = np.isnan(decoded)
    if nan.any():
        out[nan] = STORED_NAN


def scale_into(stored: np.ndarray, factors: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``float64(stored) * factors`` into ``out``, NaN where ``stored`` is STORED_NAN.

    The operation of ``MefReader.get_data`` (``data.astype(float64) * ufact``), so the
    result is bit-equal to it.

    Parameters
    ----------
    stored : numpy.ndarray
        int32 samples, shape ``(channels, n)``.
    factors : numpy.ndarray
        float64 conversion factors, shape ``(channels, 1)``.
    out : numpy.ndarray
        float64 array of shape ``(channels, n)`` (may be a view).

    Returns
    -------
    numpy.ndarray
        ``out``.
    """
    np.multiply(stored, factors, out=out)
    if stored.size and stored.min() == STORED_NAN:  # the marker is the smallest int32
        out[stored == STORED_NAN] = np.nan
    return out
