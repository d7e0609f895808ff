"""Times on the command line: parse ``--start``/``--stop`` and print clock times (UTC).

A time is either a clock time (ISO 8601, UTC unless it carries an offset:
``2024-01-01T00:05:00``, ``2024-01-01 00:05:00.25``, ``...Z``; a bare ``00:05:00`` means that
clock time on the day the recording starts, or the next day if that is before the start)
or an offset from the start of the recording (``300``, ``300s``, ``1500ms``, ``5min``,
``1.5h``). Everything is integer microseconds since the epoch (uutc) inside.
"""
from __future__ import annotations

import datetime as dt
import math
import re

UTC = dt.timezone.utc
_OFFSET = re.compile(r"^\s*(?P<value>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*"
                     r"(?P<unit>s|sec|ms|min|m|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "min": 60.0, "m": 60.0, "h": 3600.0}
#: Longest duration or offset accepted (about 31 years): beyond any recording, and far
#: from where microsecond counts and clock times overflow.
MAX_SECONDS = 1e9


class TimeFormatError(ValueError):
    """A time argument that is neither a clock time nor an offset from the start."""


def parse_seconds(text: str) -> float:
    """Parse a duration such as ``10``, ``10s``, ``500ms``, ``2min``; seconds.

    Raises
    ------
    TimeFormatError
        Not a non-negative number with an optional unit, or longer than
        :data:`MAX_SECONDS`.
    """
    match = _OFFSET.match(str(text))
    if match is None:
        raise TimeFormatError(f"{text!r} is not a duration; write seconds like 300 or 300s "
                              f"(also 1500ms, 5min, 1.5h)")
    seconds = float(match["value"]) * _UNITS[match["unit"]]
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise TimeFormatError(f"{text!r} is too long; durations and offsets go up to "
                              f"{MAX_SECONDS:g} s (about 31 years)")
    return seconds


def parse_time(text: str, start_uutc: int) -> int:
    """Turn a command-line time into microseconds since the epoch.

    Parameters
    ----------
    text : str
        A clock time (UTC unless it has an offset) or an offset from the start.
    start_uutc : int
        Start of the recording: what offsets count from, and the day of a bare clock time.

    Returns
    -------
    int
        The time in microseconds since the epoch.

    Raises
    ------
    TimeFormatError
        ``text`` is neither form.
    """
    text = str(text).strip()
    if _OFFSET.match(text):
        return int(start_uutc) + int(round(parse_seconds(text) * 1e6))
    start = from_uutc(start_uutc)
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?", text):
            clock = dt.time.fromisoformat(("0" + text) if text[1] == ":" else text)
            moment = dt.datetime.combine(start.date(), clock, tzinfo=UTC)
            if moment < start.replace(microsecond=0):
                moment += dt.timedelta(days=1)   # a recording that runs over midnight
        else:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeFormatError(
            f"{text!r} is not a time; write a clock time in UTC like "
            f"{start.strftime('%Y-%m-%dT%H:%M:%S')} (or {start.strftime('%H:%M:%S')}), or "
            f"seconds from the start like 300 or 300s") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_uutc(moment)


def to_uutc(moment: dt.datetime) -> int:
    """A datetime (naive means UTC) as integer microseconds since the epoch."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_uutc(uutc: int) -> dt.datetime:
    """Microseconds since the epoch as an aware UTC datetime (exact to the microsecond)."""
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=int(uutc))


def format_clock(uutc: int, date: bool = True) -> str:
    """``2024-01-01 00:05:00.25 UTC``: fraction of a second only when there is one."""
    moment = from_uutc(uutc)
    text = moment.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + " UTC" if date else text


def format_duration(seconds: float) -> str:
    """``1 h 02 min 05 s`` style, exact to the millisecond below a minute."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + " s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s"
