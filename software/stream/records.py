"""Records and markers of a view: the methods :class:`~software.stream.service.StreamService`
takes from :class:`RecordsMixin`.

::

    get_records(t0, t1) ------+--> file: Recording.records (read once by a reader) -> RecordTable
    get_records_by_index(a, b)+--> live: LiveStream.markers (MarkerHistory)
    get_stream_segment_marked -+   (the chunk's records sent just before the chunk)
                                   --> wire tuples (time, index, type, text, duration,
                                       channel, fields), index on the view's grid
    append_marker(text, index, duration) --> live view (push rules) --> LiveStream
    watch_markers(callback) --> MarkerHistory.watch --> the view's callback thread

Threads: the exposed methods run in the connection's serving thread; a watcher runs in the
pusher's thread and only queues the record for the view's callback thread.
"""
from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from ..cache.records import MAX_RECORDS, RecordTable
from ..errors import InvalidArgumentError, InvalidRangeError, ReaderError, StreamError
from ..mef3.records import check_marker_duration
from ..validation import as_index, as_uutc
from .delivery import async_callback
from .source import FileSource
from .waiting import callback_key

__all__ = ["RECORDS_TAG", "RecordsMixin"]

logger = logging.getLogger(__name__)

#: First item of the callback value that carries a chunk's records (before the chunk).
RECORDS_TAG = "mefstream-records"
_EMPTY = RecordTable(())
def _optional_uutc(name: str, value) -> int | None:
    return None if value is None else as_uutc(name, value)


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _same(value):
    return value


class RecordsMixin:
    """``get_records``, ``get_records_by_index``, ``append_marker`` and ``watch_markers``.

    Mixed into :class:`~software.stream.service.StreamService`; uses its ``_source``,
    ``_group``, ``_options``, ``_requests`` and ``_check_open``.
    """

    def _record_source(self):
        """The RecordTable of a file, or the MarkerHistory of a live stream."""
        source = self._source
        if isinstance(source, FileSource):
            try:
                return source.recording.records.table(timeout=self._options.read_timeout)
            except FutureTimeout:
                raise ReaderError(f"the records of {self._display_path!r} were not read "
                                  f"within {self._options.read_timeout:g} s; the reader "
                                  f"processes are overloaded or stuck. Try again.") from None
        stream = getattr(source, "stream", source)
        markers = getattr(stream, "markers", None)
        return _EMPTY if markers is None else markers

    def _first_available(self) -> int:
        stream = getattr(self._source, "stream", self._source)
        return int(getattr(stream, "first_available", 0))

    def exposed_get_records(self, start_uutc=None, stop_uutc=None) -> tuple:
        """The records (notes, annotations, markers...) that overlap a time window.

        Parameters
        ----------
        start_uutc, stop_uutc : int or None
            The window ``[start_uutc, stop_uutc)`` in microseconds; None: unbounded. A
            record with a duration is in it when it starts before ``stop_uutc`` and ends
            after ``start_uutc``.

        Returns
        -------
        tuple of tuple
            Sorted by time, one ``(time_uutc, index, type, text, duration, channel,
            fields)`` per record: ``index`` on the grid of the active channels (pymef's
            rounding), ``type`` a MEF3 record type (``Note``, ``EDFA``, ``Seiz``...),
            ``duration`` in microseconds or None, ``channel`` None for a session-level
            record, ``fields`` every ``(name, value)`` of ``MefReader.get_annotations``
            besides type and time, or ``()`` for a ``Note``, ``SyLg`` or ``EDFA`` whose
            fields are just its text (and duration; rebuilt by
            :class:`~software.client.records.Record`). A live stream's markers are
            ``Note`` (``EDFA`` with a duration) records.

        Raises
        ------
        InvalidRangeError
            ``stop_uutc <= start_uutc``, or the window holds more than one answer carries
            (:data:`~software.cache.records.MAX_RECORDS` records or ``max_request_bytes``;
            the message names a window that fits).
        """
        self._check_open()
        t0 = _optional_uutc("start_uutc", start_uutc)
        t1 = _optional_uutc("stop_uutc", stop_uutc)
        if t0 is not None and t1 is not None and t1 <= t0:
            raise InvalidRangeError(f"stop_uutc={t1} must be after start_uutc={t0}.")
        found = self._record_source()
        limit = self._options.max_request_bytes
        if isinstance(found, RecordTable):
            positions = found.select(t0, t1)
            found.check_size(positions, limit, t0, t1)
            return found.answer(positions, self._group)
        records = found.select(t0, t1, self._first_available())
        found.check_size(records, limit, MAX_RECORDS, t0, t1)
        return tuple(records)

    def exposed_get_record_counts(self) -> tuple[tuple[str, int], ...]:
        """How many records the stream holds, by type (a live stream: its markers kept).

        Returns
        -------
        tuple of (str, int) pairs
            ``(type, count)``, most frequent first.
        """
        self._check_open()
        found = self._record_source()
        if isinstance(found, RecordTable):
            counts = found.types
        else:
            counts = Counter(r[2] for r in found.select(None, None, self._first_available()))
        return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def exposed_get_records_by_index(self, start, stop) -> tuple:
        """The records whose sample index lies in ``[start, stop)`` (a chunk's records).

        Parameters
        ----------
        start, stop : int
            Grid indices of the active channels, ``0 <= start < stop``.

        Returns
        -------
        tuple of tuple
            As :meth:`exposed_get_records`, sorted by index.
        """
        self._check_open()
        a = as_index("start", start)
        b = as_index("stop", stop, minimum=a + 1)
        found = self._record_source()
        limit = self._options.max_request_bytes
        if isinstance(found, RecordTable):
            group = self._group
            positions = found.by_index(group, a, b)
            found.check_size(positions, limit, a, b)
            return found.answer(positions, group)
        records = found.by_index(a, b, self._first_available())
        found.check_size(records, limit, MAX_RECORDS, a, b)
        return tuple(records)

    def exposed_get_stream_segment_marked(self, _range, _startIndex, _callback=None):
        """``get_stream_segment`` whose answer comes with the chunk's records.

        What an iterator with ``records=True`` calls. With a callback: a chunk sent by
        the callback is preceded, in a callback of its own, by ``(RECORDS_TAG, records)``
        when records lie in it (those :meth:`exposed_get_records_by_index` gives when the
        chunk is sent); a chunk ready at once is returned when none lies in it, else sent
        by the callback the same way (a reply cannot carry both: an answer in shared
        memory must be a whole reply or a callback's only argument). So a chunk that
        comes alone holds no record. Without a callback it is ``get_stream_segment``.

        Parameters
        ----------
        _range, _startIndex, _callback
            As for ``get_stream_segment``.

        Returns
        -------
        tuple or False
            The chunk (it holds no record), or False when it comes through the callback.
        """
        self._check_open()
        if _callback is None:
            return self.exposed_get_stream_segment(_range, _startIndex)
        start = as_index("_startIndex", _startIndex)
        length = as_index("_range", _range, minimum=1)
        send = async_callback(_callback)
        key = callback_key(_callback)

        def records_now() -> tuple:
            stop = start + length
            if not self._source.growing:
                stop = min(stop, self._group.n_samples)
            try:
                return self.exposed_get_records_by_index(start, stop) if stop > start \
                    else ()
            except StreamError:
                logger.exception("records of samples [%d, %d) of %s", start, stop,
                                 self._display_path)
                return ()

        def both(value, records=None):  # in the view's callback thread, as the chunk goes
            self._marked_wrappers().pop(key, None)
            records = records_now() if records is None else records
            if records:          # most chunks hold none: nothing more is sent for them
                send((RECORDS_TAG, records))
            return send(value)

        self._marked_wrappers()[key] = both      # withdraw(_callback) finds it
        try:
            value = self.exposed_get_stream_segment(_range, _startIndex, both)
        except BaseException:
            self._marked_wrappers().pop(key, None)
            raise
        if value is False:
            return False
        records = records_now()                  # ready at once
        if not records:
            self._marked_wrappers().pop(key, None)
            return value
        both(value, records)
        return False

    def _marked_wrappers(self) -> dict:
        """Client callback key -> the wrapper a marked request was registered with."""
        wrappers = self.__dict__.get("_marked")
        if wrappers is None:
            wrappers = self.__dict__.setdefault("_marked", {})
        return wrappers

    def exposed_withdraw(self, _callback) -> int:
        """``withdraw`` (see :class:`~software.stream.withdrawal.Withdrawal`), which also
        takes back a ``get_stream_segment_marked`` request registered with ``_callback``.
        """
        withdrawn = super().exposed_withdraw(_callback)
        wrapper = self._marked_wrappers().pop(callback_key(_callback), None)
        if wrapper is not None and not self._closed:
            withdrawn += self._requests.withdraw(wrapper)
        return withdrawn

    def exposed_append_marker(self, text, index=None, duration=0, type=None) -> int:
        """Put a marker on a live stream's sample clock (a stimulus, a detection...).

        Allowed to the connections that may push samples into it.

        Parameters
        ----------
        text : str
            What happened (non-empty, no NUL, at most 4096 UTF-8 bytes).
        index : int, optional
            Sample index it belongs to, from ``first_available`` to the head; default the
            head (the next sample to be pushed).
        duration : float
            Seconds it lasts (0: an instant).
        type : str, optional
            Its MEF3 record type: ``Note`` (default without a duration), ``EDFA`` (default
            with one) or ``SyLg``.

        Returns
        -------
        int
            The marker's sample index.

        Raises
        ------
        StreamError
            The stream is a MEF3 file (its records are read-only).
        PushRefusedError
            This connection may not push into the stream.
        InvalidArgumentError, InvalidTypeError, InvalidRangeError
            No text, a bad duration, a type a marker cannot be, or an index outside the
            stream's history; nothing is appended.
        """
        self._check_open()
        push = getattr(self._source, "push_marker", None)
        if push is None:
            raise StreamError("this stream is read-only: its records come from a MEF3 file. "
                              "Markers go into a live stream (python start.py --live NAME "
                              "...).")
        index = None if index is None else as_index("index", index)
        kind = None if type is None else str(type) if isinstance(type, str) else type
        return int(push(text if not isinstance(text, str) else str(text), index,
                        check_marker_duration(duration), kind))

    def exposed_watch_markers(self, callback) -> int:
        """Call ``callback(record)`` for every marker added to this live stream from now on.

        Parameters
        ----------
        callback : callable
            Receives one wire record (see :meth:`exposed_get_records`) per marker, in the
            order they were added, from this view's callback thread (after the chunks
            queued before it). It stops when the view is closed.

        Returns
        -------
        int
            The stream's head when watching began.

        Raises
        ------
        StreamError
            The stream is a MEF3 file (its records never change).
        """
        self._check_open()
        if callback is None or not callable(callback):
            raise InvalidArgumentError(f"callback must be a function taking one record; a "
                                       f"value of type {type(callback).__name__} is not.")
        stream = getattr(self._source, "stream", None)
        markers = getattr(stream, "markers", None)
        if markers is None:
            raise StreamError("this stream is a MEF3 file: its records never change. Read "
                              "them with get_records(); watch_markers follows live streams.")
        deliverer = self._requests.deliverer
        cb = async_callback(callback)

        def watcher(wire: tuple):  # in the pusher's thread: only queue it
            if self._closed or deliverer.closed:
                return False
            deliverer.put(cb, _done(wire), _same)
            return None

        head = int(stream.head)
        markers.watch(watcher)
        return head
