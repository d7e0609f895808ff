"""A realistic demo recording: EEG-like 1/f background with alpha bursts, and one gap.

Used by ``start.py`` when the data root holds no session, and by the benchmarks.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from .writer import write_session

logger = logging.getLogger(__name__)

#: Time stamp of the first sample of the demo (2024-01-01 00:00:00 UTC) in microseconds.
DEMO_START_UUTC = 1_704_067_200_000_000


def eeg_like(n_channels: int, fs: float, seconds: float, seed: int = 0) -> np.ndarray:
    """Synthesize EEG-like signals in microvolts, shape (n_channels, samples).

    Each channel is 1/f ("pink") noise of about 30 uV rms plus a 9-11 Hz alpha rhythm whose
    amplitude waxes and wanes over seconds, plus a little line-free white noise.

    Parameters
    ----------
    n_channels : int
        Number of channels.
    fs : float
        Sampling rate in Hz.
    seconds : float
        Duration.
    seed : int
        Seed of the random generator (same seed, same signal).
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    freqs = np.fft.rfftfreq(n, d=1.0 / fs)
    shape = np.zeros_like(freqs)
    shape[1:] = 1.0 / np.sqrt(freqs[1:])  # amplitude ~ f^-1/2, power ~ 1/f
    t = np.arange(n) / fs
    out = np.empty((n_channels, n))
    for ch in range(n_channels):
        spectrum = (rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size))
        pink = np.fft.irfft(spectrum * shape, n)
        pink *= 30.0 / (pink.std() or 1.0)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(4, 12) + rng.uniform(0, 6))
        alpha = 15.0 * envelope * np.sin(2 * np.pi * rng.uniform(9, 11) * t + rng.uniform(0, 6))
        out[ch] = pink + alpha + rng.normal(0, 2.0, n)
    return out


def write_demo_recording(path: str, n_channels: int = 16, fs: float = 256.0,
                         minutes: float = 30.0, gap_seconds: tuple[float, float] | None = (600.0, 630.0),
                         seed: int = 0, password1: str | None = None,
                         password2: str | None = None) -> str:
    """Write the demo session (default ``16 ch x 256 Hz x 30 min`` with a 30 s gap).

    Parameters
    ----------
    path : str
        Session directory to create (``*.mefd``); replaced if it exists.
    n_channels, fs, minutes
        Size of the recording.
    gap_seconds : (float, float) or None
        Start and end, in seconds from the start, of a stretch with no data.
    seed : int
        Seed of the signal.
    password1, password2 : str, optional
        Encrypt the session with these passwords.

    Returns
    -------
    str
        Absolute path of the session.
    """

    data = eeg_like(n_channels, fs, minutes * 60.0, seed=seed)
    if gap_seconds is not None:
        a, b = (int(round(s * fs)) for s in gap_seconds)
        data[:, a:b] = np.nan
    width = max(2, len(str(n_channels)))
    signals = {f"EEG{ch + 1:0{width}d}": data[ch] for ch in range(n_channels)}
    path = write_session(os.fspath(path), signals, fs, DEMO_START_UUTC, precision=2,
                         password1=password1, password2=password2, overwrite=True)
    logger.info("demo recording written: %s (%d ch, %g Hz, %g min)", path, n_channels, fs,
                minutes)
    return path
