"""What is known about an opened MEF3 session, as plain picklable values.

Reader processes build a :class:`SessionInfo` (see :mod:`software.mef3.access`) and send it
to the server process, which never touches pymef. The sample grid of a group of channels
that share one sampling rate is defined here, with exactly the arithmetic that
``MefReader.get_data(channels, start_uutc, end_uutc)`` uses, so that sample index ``k`` is
the ``k``-th value of that whole-recording read.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def grid_length(start_uutc: int, end_uutc: int, fs: float) -> int:
    """Number of samples pymef returns for the time window ``[start_uutc, end_uutc)``.

    Parameters
    ----------
    start_uutc, end_uutc : int
        Window in microseconds since the epoch.
    fs : float
        Sampling rate in Hz.

    Returns
    -------
    int
        ``(int)(((end - start) / 1e6) * fs + 0.5)``, the count pymef allocates.
    """
    return int(((end_uutc - start_uutc) / 1000000.0) * fs + 0.5)


def grid_offset(uutc: int, start_uutc: int, fs: float) -> int:
    """Grid index at which pymef places a sample stamped ``uutc`` in a read from ``start_uutc``.

    Parameters
    ----------
    uutc : int
        Time stamp of the sample in microseconds.
    start_uutc : int
        Start of the read window in microseconds.
    fs : float
        Sampling rate in Hz.

    Returns
    -------
    int
        The offset rounded half away from zero, as pymef computes it.
    """
    x = ((uutc - start_uutc) / 1000000.0) * fs
    return int(x + 0.5) if x >= 0 else int(x - 0.5)


@dataclass(frozen=True)
class ChannelInfo:
    """One time-series channel of a session.

    Attributes
    ----------
    name : str
        Channel name as ``MefReader.channels`` lists it.
    fs : float
        Sampling rate in Hz.
    start_uutc, end_uutc : int
        Earliest start and latest end of the channel's data, in microseconds.
    units : str
        Physical units after scaling by ``ufact``.
    ufact : float
        Units conversion factor applied to the stored integers.
    n_stored : int
        Number of samples stored in the file (gaps excluded).
    gaps : tuple of (int, int)
        Discontinuities as ``(start_uutc, stop_uutc)`` pairs.
    """

    name: str
    fs: float
    start_uutc: int
    end_uutc: int
    units: str
    ufact: float
    n_stored: int
    gaps: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class RateGroup:
    """The channels that share one sampling rate, and their common sample grid.

    Attributes
    ----------
    fs : float
        Sampling rate in Hz.
    channels : tuple of str
        Names in the order ``MefReader.channels`` lists them.
    start_uutc, end_uutc : int
        Earliest start and latest end over the group.
    n_samples : int
        Length of the grid, ``grid_length(start_uutc, end_uutc, fs)``.
    """

    fs: float
    channels: tuple[str, ...]
    start_uutc: int
    end_uutc: int
    n_samples: int

    def sample_uutc(self, index: int) -> int:
        """Time stamp of grid sample ``index``, rounded to the microsecond."""
        return self.start_uutc + int(round(index * 1000000.0 / self.fs))


@dataclass(frozen=True)
class SessionInfo:
    """Metadata of one MEF3 session, sent from a reader process to the server.

    Attributes
    ----------
    path : str
        Absolute path of the ``.mefd`` directory.
    channels : tuple of ChannelInfo
        Every time-series channel, in ``MefReader.channels`` order.
    encrypted : bool
        Whether reading the samples needs a password.
    """

    path: str
    channels: tuple[ChannelInfo, ...]
    encrypted: bool = False
    _by_name: dict = field(default=None, init=False, repr=False, compare=False)

    def channel(self, name: str) -> ChannelInfo:
        """Return the channel called ``name`` (``KeyError`` if there is none)."""
        if self._by_name is None:
            object.__setattr__(self, "_by_name", {c.name: c for c in self.channels})
        return self._by_name[name]

    @property
    def names(self) -> tuple[str, ...]:
        """All channel names in file order."""
        return tuple(c.name for c in self.channels)

    @property
    def default_fs(self) -> float:
        """The most common sampling rate (ties go to the rate of the earliest channel)."""
        counts = Counter(c.fs for c in self.channels)
        best = max(counts.values())
        return next(c.fs for c in self.channels if counts[c.fs] == best)

    def group(self, fs: float) -> RateGroup:
        """Return the grid shared by every channel sampled at ``fs``."""
        members = [c for c in self.channels if c.fs == fs]
        if not members:
            raise KeyError(fs)
        start = min(c.start_uutc for c in members)
        end = max(c.end_uutc for c in members)
        return RateGroup(fs=fs, channels=tuple(c.name for c in members), start_uutc=start,
                         end_uutc=end, n_samples=grid_length(start, end, fs))

    def gaps(self, names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
        """Discontinuities of the given channels, merged into one sorted list of pairs."""
        spans = sorted(g for n in names for g in self.channel(n).gaps)
        merged: list[list[int]] = []
        for start, stop in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        return tuple((a, b) for a, b in merged)
