"""Hand a session (or part of it) to MNE-Python as an ``mne.io.RawArray``.

::

    stream.get_info() --> names, fs, units, start, gaps --> mne.Info, meas_date
    stream.get_stream_segment(...) in pieces --> volts --> RawArray(first_samp=start)
    gaps --> BAD_ACQ_SKIP annotations (raw.filter() filters around them, not across)
    stream.get_records(...) --> one annotation per record (text, duration, channel)
"""
from __future__ import annotations

import datetime as _dt
import logging
import numbers

import numpy as np

from ..client.records import all_records
from ..errors import InvalidArgumentError, InvalidRangeError, InvalidTypeError
from ..transport.wire import decode_segment

logger = logging.getLogger(__name__)

#: Factor from a MEF3 unit string to volts.
UNIT_TO_VOLTS = {"uv": 1e-6, "µv": 1e-6, "μv": 1e-6, "microvolts": 1e-6, "microvolt": 1e-6,
                 "mv": 1e-3, "millivolts": 1e-3, "v": 1.0, "volts": 1.0, "nv": 1e-9}
#: A start/stop at or above this is a uUTC time stamp (1970-01-12), not seconds.
UUTC_THRESHOLD = 10**12
#: Values read per call (32 MiB of float64).
_PIECE_VALUES = 4 * 2**20


def _volts(unit: str, channel: str) -> float:
    factor = UNIT_TO_VOLTS.get(str(unit).strip().lower())
    if factor is None:
        logger.warning("channel %s has unit %r, which is not a voltage unit known here; "
                       "assuming microvolts (the MEF3 default)", channel, unit)
        return 1e-6
    return factor


def _index(name: str, value, info: dict) -> int:
    """A start/stop (seconds from the start, or uUTC) as a grid index, clipped to the file."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be seconds from the session start (float) or "
                               f"a uUTC time stamp (int); {value!r} is neither.")
    if not np.isfinite(value):
        raise InvalidArgumentError(f"{name}={value!r} is not finite; pass seconds from the "
                                   f"session start, e.g. {name}=10.0.")
    fs, t0 = float(info["fs"]), int(info["start_uutc"])
    if isinstance(value, numbers.Integral) and value >= UUTC_THRESHOLD:
        seconds = (int(value) - t0) / 1e6
    else:
        seconds = float(value)
    index = int(round(seconds * fs))
    return min(max(index, 0), int(info["n_samples"]))


def gap_spans(info: dict, first: int, last: int) -> list[tuple[int, int]]:
    """Gaps of the session as grid index ranges ``[a, b)``, clipped to ``[first, last)``."""
    fs, t0 = float(info["fs"]), int(info["start_uutc"])
    spans = []
    for g0, g1 in info["gaps"]:
        a = int(round((int(g0) - t0) / 1e6 * fs))
        b = int(round((int(g1) - t0) / 1e6 * fs))
        a, b = max(a, first), min(b, last)
        if b > a:
            spans.append((a, b))
    return spans


def to_mne_raw(stream, start: float | int | None = None, stop: float | int | None = None,
               ch_types: str | list[str] = "seeg", *, verbose: str | bool = "error"):
    """Read a session through the service into an ``mne.io.RawArray``, in volts.

    Parameters
    ----------
    stream : StreamService
        ``conn.root.open_file(path)`` (or a client-side stream); its active channels are
        read. Nothing else is changed on it.
    start, stop : float or int, optional
        Window to read: seconds from the session start (floats or small ints), or uUTC
        time stamps (ints >= 10**12); None: the start / the end of the session. Rounded to
        the nearest sample and clipped to the session.
    ch_types : str or list of str
        MNE channel type(s), e.g. ``"seeg"``, ``"ecog"``, ``"eeg"``.
    verbose : str or bool
        MNE's verbosity for building the object.

    Returns
    -------
    mne.io.RawArray
        Channel names and rate of the session; data in volts (MEF3 microvolts x 1e-6);
        ``info["meas_date"]`` the session start (UTC, microseconds kept) and
        ``raw.first_samp`` the index of ``start``, so ``raw.times + raw.first_time`` are
        seconds from the session start; one ``BAD_ACQ_SKIP`` annotation per gap (NaN
        samples), which ``raw.filter()`` and epoching skip; and one annotation per record
        of the window (notes, EDF annotations, seizures, live markers): its text (its type
        when it has none) as description, its duration, and its channel for a
        channel-level record.

    Raises
    ------
    InvalidRangeError
        The window holds no sample.
    """
    import mne

    info = dict(stream.get_info())          # one round trip; the methods bound once below
    get = stream.get_stream_segment
    names = [str(n) for n in info["channels"]]
    fs = float(info["fs"])
    first = 0 if start is None else _index("start", start, info)
    last = int(info["n_samples"]) if stop is None else _index("stop", stop, info)
    if last <= first:
        raise InvalidRangeError(f"start={start!r}, stop={stop!r} select no sample of a "
                                f"session of {int(info['n_samples']) / fs:g} s; stop must be "
                                f"after start.")
    scale = np.array([_volts(u, n) for u, n in zip(info["units"], names)])[:, None]
    data = np.empty((len(names), last - first))
    piece = max(1, _PIECE_VALUES // len(names))
    at = first
    while at < last:
        part = decode_segment(get(min(piece, last - at), at))
        if part is False:
            break
        np.multiply(part, scale, out=data[:, at - first:at - first + part.shape[1]])
        at += part.shape[1]
    meas_date = (_dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
                 + _dt.timedelta(microseconds=int(info["start_uutc"])))
    mne_info = mne.create_info(names, fs, ch_types=ch_types, verbose=verbose)
    mne_info.set_meas_date(meas_date)
    raw = mne.io.RawArray(data, mne_info, first_samp=first, verbose=verbose)
    spans = gap_spans(info, first, last)
    onsets = [a / fs for a, _ in spans]
    durations = [(b - a) / fs for a, b in spans]
    descriptions = ["BAD_ACQ_SKIP"] * len(spans)
    ch_names: list[tuple[str, ...]] = [()] * len(spans)
    for record in _records(stream, info, first, last):
        onsets.append((record.time_uutc - int(info["start_uutc"])) / 1e6)
        durations.append(max(record.duration or 0, 0) / 1e6)
        descriptions.append(record.text or record.type)
        ch_names.append((record.channel,) if record.channel in names else ())
    if onsets:
        raw.set_annotations(mne.Annotations(onsets, durations, descriptions,
                                            orig_time=meas_date, ch_names=ch_names),
                            verbose=verbose)
    return raw


def _records(stream, info: dict, first: int, last: int) -> list:
    """The records overlapping samples ``[first, last)`` (none when the stream has none)."""
    if getattr(stream, "get_records", None) is None:
        return []
    fs, t0 = float(info["fs"]), int(info["start_uutc"])
    found = all_records(stream, t0 + int(round(first * 1e6 / fs)),
                        t0 + int(round(last * 1e6 / fs)))
    # a channel-level record of a channel not read concerns no data of this Raw
    names = set(str(n) for n in info["channels"])
    return [r for r in found if r.channel is None or r.channel in names]
