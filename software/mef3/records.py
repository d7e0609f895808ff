"""MEF3 records (notes, EDF annotations, seizures...) as plain tuples, and their checks.

A session's records are read from pymef's metadata in a reader process
(:func:`records_of`) and cross to the server as plain tuples (no numpy, no pymef)::

    pymef metadata: records_info -> [{record_header, record_body, record_subbody}, ...]
        --> (time_uutc, type, text, duration, channel, fields)     one per record
    fields: every (name, value) pair MefReader.get_annotations gives besides type and
            time, in its order (bytes decoded, numpy scalars as int/float, the channels
            of a seizure as tuples of pairs)

``text`` and ``duration`` pick the field of each type that plays that part
(:data:`TEXT_FIELD`, :data:`DURATION_FIELD`; a duration is in microseconds, None where the
type has none); ``channel`` is None for a session-level record. This module imports
pymef only inside :func:`records_of` (it runs in reader processes), so the server and the
writers may use its tables and checks.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from ..errors import InvalidArgumentError, InvalidTypeError

__all__ = ["DERIVED_FIELDS", "DURATION_FIELD", "MEF3_TYPES", "TEXT_FIELD",
           "MARKER_TYPES", "check_marker_duration", "check_marker_text", "check_marker_type",
           "check_storable", "derived_fields",
           "fields_dict", "marker_record", "marker_text", "record_from_dict", "records_of",
           "session_records", "wire_fields"]

#: Record types pymef reads and writes with their fields (``MefSession.write_mef_records``).
MEF3_TYPES = ("Note", "SyLg", "EDFA", "LNTP", "CSti", "ESti", "Seiz", "Curs", "Epoc")
#: The field that is a record's text, by type (absent: the type has no text).
TEXT_FIELD = {"Note": "text", "SyLg": "text", "EDFA": "text", "Epoc": "text",
              "Seiz": "annotation", "Curs": "name", "CSti": "task_type", "ESti": "waveform"}
#: The field that is a record's duration in microseconds, by type.
DURATION_FIELD = {"EDFA": "duration", "Seiz": "duration", "Epoc": "duration",
                  "CSti": "stimulus_duration"}
#: Longest marker text in UTF-8 bytes (a MEF3 Note holds any length; answers stay small).
MAX_TEXT_BYTES = 4096
#: Longest marker duration, in seconds (a day).
MAX_MARKER_SECONDS = 86400.0


def _plain(value):
    """A numpy value as int/float/str/tuple (what RPyC sends by value)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "tolist"):           # numpy scalar or array
        value = value.tolist()
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def _from_pymef(record: Mapping, channel: str | None) -> tuple:
    """One record of pymef's metadata as a plain tuple (mirrors pymef's ``read_records``)."""
    header = record["record_header"]
    kind = bytes(header["type_string"][0]).decode("utf-8", errors="replace")
    time = int(header["time"][0])
    fields: list[tuple[str, object]] = []
    if kind in MEF3_TYPES:
        body = record.get("record_body")
        if body is not None and body.dtype.names:
            for key in body.dtype.names:
                fields.append((key, _plain(body[key][0])))
        sub = record.get("record_subbody")
        if kind == "Seiz" and sub is not None:
            fields.append(("channels", tuple(
                (("name", _plain(ch["name"])), ("onset", int(ch["onset"])),
                 ("offset", int(ch["offset"]))) for ch in sub)))
    return _assemble(time, kind, channel, tuple(fields))


def _assemble(time: int, kind: str, channel: str | None, fields: tuple) -> tuple:
    found = dict(fields)
    text = found.get(TEXT_FIELD.get(kind, ""), "")
    duration = found.get(DURATION_FIELD.get(kind, ""))
    return (int(time), kind, str(text) if text is not None else "",
            None if duration is None else int(duration), channel, fields)


def records_of(session_md: Mapping) -> tuple[tuple, ...]:
    """Session- and channel-level records of a session's pymef metadata, sorted by time.

    Runs in a reader process. Segment-level records (which ``MefReader.get_annotations``
    does not read either) are left out.

    Parameters
    ----------
    session_md : mapping
        pymef's session metadata (``read_mef_session_metadata``).

    Returns
    -------
    tuple of tuple
        ``(time_uutc, type, text, duration, channel, fields)`` per record, sorted by time
        (stable: session-level first, then channels by name, each in file order).
    """
    out = []
    for record in (session_md.get("records_info") or {}).get("records", ()):
        out.append(_from_pymef(record, None))
    channels = session_md.get("time_series_channels") or {}
    for name in sorted(channels):
        info = channels[name].get("records_info") or {}
        for record in info.get("records", ()):
            out.append(_from_pymef(record, str(name)))
    out.sort(key=lambda r: r[0])
    return tuple(out)


def session_records(session) -> tuple[tuple, ...]:
    """:func:`records_of` an open :class:`~software.mef3.access.MefSessionFile` (reader
    process): its metadata holds the records pymef read at open."""
    return records_of(session._md)


#: Types whose fields are only their text (and duration), in pymef's order: on the wire
#: their fields are left out (``()``) and rebuilt by the client.
DERIVED_FIELDS = {"Note": ("text",), "SyLg": ("text",), "EDFA": ("duration", "text")}


def derived_fields(kind: str, text: str, duration: int | None) -> tuple | None:
    """The fields of a record of a :data:`DERIVED_FIELDS` type, from its text and duration
    (None for another type)."""
    names = DERIVED_FIELDS.get(kind)
    if names is None:
        return None
    values = {"text": text, "duration": duration}
    return tuple((name, values[name]) for name in names)


def wire_fields(kind: str, text: str, duration: int | None, fields: tuple) -> tuple:
    """``fields`` as they cross the wire: ``()`` when the client can rebuild them."""
    return () if fields == derived_fields(kind, text, duration) else fields


def fields_dict(fields: Iterable) -> dict:
    """``fields`` pairs as ``MefReader.get_annotations`` gives them (seizure channels as a
    list of dicts)."""
    out = {}
    for key, value in fields:
        if key == "channels" and isinstance(value, tuple):
            value = [dict(pairs) for pairs in value]
        out[str(key)] = value
    return out


def record_from_dict(annotation: Mapping, channel: str | None = None) -> tuple:
    """A ``get_annotations`` dict (or a ``write_annotations`` row) as a plain record tuple."""
    fields = tuple((str(k), _plain(v) if k != "channels" else tuple(
        tuple((str(a), _plain(b)) for a, b in dict(ch).items()) for ch in v))
        for k, v in annotation.items() if k not in ("type", "time"))
    return _assemble(int(annotation["time"]), str(annotation["type"]), channel, fields)


def check_storable(kind: object, fields: Iterable = (), *, argument: str = "type") -> None:
    """Refuse a record MEF3 (pymef) cannot write.

    Parameters
    ----------
    kind : str
        The record type.
    fields : iterable of (str, value)
        Its fields; a text with a NUL character cannot be stored (MEF3 strings end there).
    argument : str
        How the caller names the type (for the message).

    Raises
    ------
    InvalidArgumentError
        The type is not one of :data:`MEF3_TYPES`, or a text holds a NUL character.
    """
    if kind not in MEF3_TYPES:
        raise InvalidArgumentError(
            f"{argument}={kind!r} is a record type MEF3 cannot store (pymef writes "
            f"{', '.join(MEF3_TYPES)}); convert it to a 'Note' (text) or an 'EDFA' "
            f"(text and duration) first.")
    for key, value in fields:
        if isinstance(value, str) and "\0" in value:
            raise InvalidArgumentError(
                f"the {key!r} of a {kind} record holds a NUL character, which MEF3 cannot "
                f"store (its strings end there); remove it.")


def check_marker_text(text: object) -> str:
    """A marker's text: a non-empty str without NUL of at most :data:`MAX_TEXT_BYTES`.

    Raises
    ------
    InvalidTypeError
        ``text`` is not a str.
    InvalidArgumentError
        It is empty (or only blanks), holds a NUL character, or is too long.
    """
    if not isinstance(text, str):
        raise InvalidTypeError(f"text must be a str describing the event; a value of type "
                               f"{type(text).__name__} is not. Pass e.g. text='stimulus'.")
    text = str(text)
    if not text.strip():
        raise InvalidArgumentError(f"text={text!r} is empty; a marker needs a text that says "
                                   f"what happened, e.g. text='stimulus'.")
    if "\0" in text:
        raise InvalidArgumentError("text holds a NUL character, which MEF3 cannot store (its "
                                   "strings end there); remove it.")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgumentError("text is not valid Unicode (a lone surrogate); MEF3 "
                                   "stores UTF-8 text.") from None
    if size > MAX_TEXT_BYTES:
        raise InvalidArgumentError(f"text is {size} UTF-8 bytes long; a marker holds at most "
                                   f"{MAX_TEXT_BYTES}. Shorten it.")
    return text


def check_marker_duration(value: object) -> float:
    """A marker's duration in seconds: a finite number in ``[0, MAX_MARKER_SECONDS]``.

    Raises
    ------
    InvalidTypeError
        Not a number.
    InvalidArgumentError
        Negative, not finite, or longer than a day.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(
            value, "__float__"):
        raise InvalidTypeError(f"duration must be a number of seconds (>= 0); a value of "
                               f"type {type(value).__name__} is not. Pass e.g. duration=0.5.")
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_MARKER_SECONDS):
        raise InvalidArgumentError(f"duration={value!r} must be between 0 and "
                                   f"{MAX_MARKER_SECONDS:g} seconds; pass e.g. duration=0.5.")
    return seconds


def marker_text(text: str) -> str:
    """``text`` cut to :data:`MAX_TEXT_BYTES` UTF-8 bytes (a file record made a marker)."""
    raw = text.encode("utf-8", errors="replace")
    return text if len(raw) <= MAX_TEXT_BYTES else raw[:MAX_TEXT_BYTES].decode(
        "utf-8", errors="ignore")


#: Record types a marker may be (its text, and a duration for an EDFA).
MARKER_TYPES = ("Note", "EDFA", "SyLg")


def check_marker_type(kind: object, duration_us: int) -> str:
    """The record type of a marker: ``kind``, or Note / EDFA by its duration when None.

    Raises
    ------
    InvalidArgumentError
        A type MEF3 cannot store, a type whose fields a marker does not have (a seizure's
        channels...), or a duration given to a type without one.
    """
    if kind is None:
        return "EDFA" if duration_us > 0 else "Note"
    if not isinstance(kind, str) or kind not in MEF3_TYPES:
        check_storable(kind)             # raises: names the types MEF3 stores
    if kind not in MARKER_TYPES:
        raise InvalidArgumentError(
            f"type={kind!r} is a MEF3 record type with fields a marker does not have; a "
            f"marker is a {', '.join(MARKER_TYPES)} record (text, and a duration for an "
            f"EDFA).")
    if duration_us > 0 and kind != "EDFA":
        raise InvalidArgumentError(f"type={kind!r} has no duration; pass type='EDFA' (or "
                                   f"no type) for a marker that lasts, or duration=0.")
    return str(kind)


def marker_record(time: int, text: str, duration_us: int, channel: str | None = None,
                  kind: str | None = None) -> tuple:
    """The record of a marker as the recorder writes it: a Note (or ``kind``), an EDFA when
    it has a duration.

    Returns
    -------
    tuple
        ``(time_uutc, type, text, duration, channel, fields)``, the fields as
        ``MefReader.get_annotations`` reads them back.
    """
    kind = kind or ("EDFA" if duration_us > 0 else "Note")
    if kind == "EDFA":
        return (int(time), "EDFA", text, int(duration_us), channel,
                (("duration", int(duration_us)), ("text", text)))
    return (int(time), kind, text, None, channel, (("text", text),))
