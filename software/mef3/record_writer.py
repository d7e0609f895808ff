"""Writing records into a MEF3 session with pymef (exports, tests, benchmarks).

pymef's ``write_mef_records`` writes a level's ``.rdat``/``.ridx`` whole, so
:func:`write_records` writes every record of a level (the session, or one channel) in one
call; records given for a level replace what the level held. Every record is checked
(:func:`~software.mef3.records.check_storable`) before anything is written. Runs where a
session is written, never in the server process (pymef).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from .records import check_storable, fields_dict

__all__ = ["annotation_dicts", "write_records"]

logger = logging.getLogger(__name__)


def annotation_dicts(records: Iterable[tuple]) -> list[dict]:
    """Plain records ``(time, type, text, duration, channel, fields)`` as pymef record dicts
    (the form ``MefWriter.write_annotations`` and ``MefReader.get_annotations`` use)."""
    out = []
    for time, kind, _text, _duration, _channel, fields in records:
        out.append({"type": kind, "time": int(time), **fields_dict(fields)})
    return out


def write_records(session, records: Sequence[tuple], password1: str | None = None,
                  password2: str | None = None) -> int:
    """Write records into a session, each at its level (session, or its channel).

    Parameters
    ----------
    session : str or MefWriter
        The session directory, or an open ``mef_tools`` MefWriter of it.
    records : sequence of tuple
        ``(time_uutc, type, text, duration, channel, fields)``; ``channel`` None writes at
        session level. A record of a channel the session does not have is refused.
    password1, password2 : str, optional
        The session's passwords (a MefWriter brings its own).

    Returns
    -------
    int
        Records written.

    Raises
    ------
    InvalidArgumentError
        A record MEF3 cannot store (unknown type, NUL in a text), or an unknown channel;
        nothing is written.
    """
    from mef_tools.io import MefWriter

    from ..errors import InvalidArgumentError

    own = not isinstance(session, MefWriter)
    writer = MefWriter(os.path.abspath(os.fspath(session)), overwrite=False,
                       password1=password1, password2=password2) if own else session
    try:
        channels = set(writer.session.session_md["time_series_channels"])
        levels: dict[str | None, list[tuple]] = {}
        for record in records:
            check_storable(record[1], record[5])
            if record[4] is not None and record[4] not in channels:
                raise InvalidArgumentError(
                    f"a record of channel {record[4]!r} cannot be written into "
                    f"{writer.session.path!r}, which has no such channel; write it at "
                    f"session level (channel None).")
            levels.setdefault(record[4], []).append(record)
        for channel, level in levels.items():
            dicts = annotation_dicts(level)
            times = [d["time"] for d in dicts]
            kwargs = {} if channel is None else {"channel": channel}
            writer.session.write_mef_records(writer.pwd1, writer.pwd2, min(times), max(times),
                                             writer.record_offset, dicts, **kwargs)
        if levels:
            writer.session.reload()
        logger.debug("wrote %d records into %s", len(records), writer.session.path)
        return len(records)
    finally:
        if own:
            writer.session.close()
