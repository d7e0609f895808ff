"""Records as the client hands them out: :class:`Record`, one per note, annotation or marker.

The server sends each record as a plain tuple ``(time_uutc, index, type, text, duration,
channel, fields)`` (see :meth:`software.stream.records.RecordsMixin.exposed_get_records`);
:func:`as_records` turns an answer into a list of :class:`Record`::

    for rec in svc.get_records(t0, t1):
        print(rec.time_uutc, rec.index, rec.type, rec.text, rec.duration, rec.channel)
    rec.annotation()     # the dict MefReader.get_annotations gives for it
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import InvalidTypeError
from .values import plain_argument as _plain

__all__ = ["RECORDS_TAG", "Record", "RecordMethods", "all_records", "as_record", "as_records",
           "chunk_records"]


class Record(NamedTuple):
    """One record of a session, or a marker of a live stream.

    Attributes
    ----------
    time_uutc : int
        When it happened (microseconds since the epoch).
    index : int
        Its sample index on the grid of the view's active channels.
    type : str
        MEF3 record type: ``Note``, ``EDFA`` (with a duration), ``Seiz``, ``SyLg``...
    text : str
        Its text (a seizure's annotation, a cursor's name; '' for a type without text).
    duration : int or None
        Duration in microseconds, None for a type without one (a ``Note``).
    channel : str or None
        The channel of a channel-level record; None for a session-level one or a marker.
    fields : dict
        Every field ``MefReader.get_annotations`` gives besides type and time.
    """

    time_uutc: int
    index: int
    type: str
    text: str
    duration: int | None
    channel: str | None
    fields: dict

    @property
    def end_uutc(self) -> int:
        """When it ends: ``time_uutc + duration`` (``time_uutc`` without a duration)."""
        return self.time_uutc + max(self.duration or 0, 0)

    def annotation(self) -> dict:
        """The record as ``MefReader.get_annotations`` gives it: ``type``, ``time`` and
        the fields."""
        return {"type": self.type, "time": self.time_uutc, **self.fields}


def _fields(pairs: Any) -> dict:
    out = {}
    for key, value in pairs:
        key = str(key)
        if key == "channels" and isinstance(value, tuple):
            value = [{str(k): v for k, v in channel} for channel in value]
        out[key] = value
    return out


#: First item of the callback value that carries a chunk's records, sent just before the
#: chunk (``software.stream.records.RECORDS_TAG``).
RECORDS_TAG = "mefstream-records"

#: Types whose fields the server leaves out (``()``): their text and duration, in this
#: order (``software.mef3.records.DERIVED_FIELDS``).
_DERIVED = {"Note": ("text",), "SyLg": ("text",), "EDFA": ("duration", "text")}


def as_record(wire: Any) -> Record:
    """One wire record as a :class:`Record` (a Record is returned unchanged)."""
    if isinstance(wire, Record):
        return wire
    time, index, kind, text, duration, channel, fields = wire
    kind, text = str(kind), str(text)
    duration = None if duration is None else int(duration)
    if not fields and kind in _DERIVED:
        values = {"text": text, "duration": duration}
        fields = tuple((name, values[name]) for name in _DERIVED[kind])
    return Record(int(time), int(index), kind, text, duration,
                  None if channel is None else str(channel), _fields(fields))


def as_records(answer: Any) -> list[Record]:
    """An answer of ``get_records`` as a list of :class:`Record`."""
    return [as_record(wire) for wire in answer]


class RecordMethods:
    """The record methods of :class:`~software.client.stream.RemoteStream` (records as
    :class:`Record`); uses its ``_method`` (the server's bound method, fetched once)."""

    def get_records(self, start_uutc: int | None = None,
                    stop_uutc: int | None = None) -> list[Record]:
        """The records (notes, annotations, markers) overlapping ``[start_uutc, stop_uutc)``.

        Parameters
        ----------
        start_uutc, stop_uutc : int or None
            Microseconds since the epoch; None: unbounded.

        Returns
        -------
        list of Record
            Sorted by time.
        """
        return as_records(self._method("get_records")(_plain(start_uutc), _plain(stop_uutc)))

    def get_records_by_index(self, start: int, stop: int) -> list[Record]:
        """The records whose sample index lies in ``[start, stop)`` (a chunk's records)."""
        return as_records(self._method("get_records_by_index")(_plain(start), _plain(stop)))

    def append_marker(self, text: str, index: int | None = None, duration: float = 0,
                      type: str | None = None) -> int:
        """Put a marker on a live stream.

        Parameters
        ----------
        text : str
            What happened.
        index : int, optional
            Its sample index (default: the head, the next sample to be pushed).
        duration : float
            Seconds it lasts (0: an instant).
        type : str, optional
            ``Note`` (default), ``EDFA`` (default with a duration) or ``SyLg``.

        Returns
        -------
        int
            The marker's sample index.
        """
        return self._method("append_marker")(_plain(text), _plain(index), _plain(duration),
                                             _plain(type))

    def watch_markers(self, callback: Callable[[Record], Any]) -> int:
        """Call ``callback(record)`` for each marker added to this live stream from now on.

        Parameters
        ----------
        callback : callable
            Receives a :class:`Record`, in the connection's serving thread.

        Returns
        -------
        int
            The stream's head when watching began.
        """
        if not callable(callback):
            raise InvalidTypeError(f"callback must be a function taking one Record; a value "
                                   f"of type {type(callback).__name__} is not.")

        def deliver(wire):  # in the connection's serving thread
            return callback(as_record(wire))

        return self._method("watch_markers")(deliver)


#: Bounds of a window left open (None), for splitting it: beyond any MEF3 time stamp.
_FAR = 2**62


def all_records(stream, start_uutc: int | None = None,
                stop_uutc: int | None = None) -> list[Record]:
    """Every record overlapping ``[start_uutc, stop_uutc)``, in as many answers as needed.

    One answer of ``get_records`` is bounded (:data:`software.cache.records.MAX_RECORDS`
    records and the server's ``max_request_bytes``); a window it refuses is halved until
    each part fits. Each record comes once: a part keeps the records that start in it
    (the first also those that started before and last into it).

    Parameters
    ----------
    stream : RemoteStream, proxy or StreamService
        Anything with ``get_records``.
    start_uutc, stop_uutc : int or None
        The window; None: unbounded.

    Returns
    -------
    list of Record
        Sorted by time.
    """
    from ..errors import InvalidRangeError

    get = stream.get_records

    def fetch(a, b, first: bool) -> list[Record]:
        try:
            found = [as_record(r) for r in get(a, b)]
        except InvalidRangeError:
            lo = -_FAR if a is None else a
            hi = _FAR if b is None else b
            if hi - lo <= 1:
                raise
            mid = lo + (hi - lo) // 2
            return fetch(a, mid, first) + fetch(mid, b, False)
        return found if first else [r for r in found if r.time_uutc >= a]

    return fetch(start_uutc, stop_uutc, True)


def chunk_records(svc, start: int, stop: int) -> list[Record]:
    """The records whose sample index lies in ``[start, stop)`` (an iterator's chunk).

    Parameters
    ----------
    svc : RemoteStream, RemoteRoot, proxy or in-process view
        The view the chunk came from.
    """
    get = getattr(svc, "get_records_by_index", None)
    if get is None:  # a StreamService used in-process
        get = svc.exposed_get_records_by_index
    return as_records(get(int(start), int(stop)))
