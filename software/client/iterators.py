"""CREPE's iterators: chunks of a stream in order, woken by the server's callback.

The iterators keep their position as plain data (:attr:`StreamSegmentIterator.position`),
so a long analysis can resume after a restart. A target is a connection, a
:class:`~software.RemoteStream`, an RPyC proxy of a view or a view used in-process; each
is resolved once (its bound method, its connection), so a chunk costs one round trip.
The length of the view is a hint kept per target and asked again before the end is
declared, so a view whose rate was switched meanwhile is followed to its new end.
"""
from __future__ import annotations

import threading
import time

from rpyc.core.netref import BaseNetref

from .. import errors
from ..transport.wire import decode_segment
from .records import RECORDS_TAG, as_records, chunk_records
from .stream import RemoteRoot, RemoteStream


def _is_netref(obj) -> bool:
    """Whether ``obj`` is an RPyC proxy (checked locally: no round trip)."""
    return issubclass(type(obj), BaseNetref)


class _Target:
    """What an iterator reads from, resolved once: the service, its bound method, the
    connection. Every attribute of a proxy costs a round trip, so nothing is looked up
    again per chunk."""

    __slots__ = ("target", "svc", "call", "conn", "n_samples", "growing")

    def __init__(self, target, method: str) -> None:
        self.target = target  # kept alive, so that its id() is not reused
        if type(target) is RemoteStream:  # its methods take and give arrays already
            self.svc, self.conn = target, target.connection
        elif type(target) is RemoteRoot:  # a session served at the root
            self.svc, self.conn = target, target.connection
        elif _is_netref(target):
            self.svc, self.conn = target, object.__getattribute__(target, "____conn__")
        elif hasattr(target, "root") and hasattr(target, "serve"):  # a Connection
            self.svc, self.conn = target.root, target
        else:  # a StreamService used in-process
            self.svc, self.conn = target, None
        self.call = getattr(self.svc, method)
        #: The view's length when last asked (a hint: asked again before the end).
        self.n_samples: int | None = None
        self.growing = False

    @property
    def served(self) -> bool:
        """Whether a ServingThread serves the connection (then callbacks arrive alone)."""
        serving = getattr(self.conn, "serving_thread", None)
        return serving is not None and not serving.closed


class _Iterator:
    """Shared machinery of the two CREPE iterators."""

    _method = ""

    def __init__(self, _range: int, start: int, target=None, records: bool = False) -> None:
        self.target = target
        #: Whether each chunk comes as ``(chunk, records)`` (see :func:`chunk_records`).
        self.records = bool(records)
        if int(_range) < 1:
            raise errors.InvalidRangeError(f"_range must be >= 1; {_range!r} is invalid.")
        if int(start) < 0:
            raise errors.InvalidRangeError(f"start must be >= 0; {start!r} is invalid.")
        self.range = int(_range)
        self.position = int(start)
        #: True only when the last call found the end of the stream (not on a timeout).
        self.exhausted = False
        self._targets: dict[int, _Target] = {}

    def _resolve(self, target) -> _Target:
        found = self._targets.get(id(target))
        if found is None or found.target is not target:
            found = self._targets[id(target)] = _Target(target, self._method)
        return found

    def _call(self, call, callback):
        raise NotImplementedError

    def _at_end(self, found: _Target, ask: bool = False) -> bool:
        """Whether the position is at the end of the view (never for a growing one).

        The length is asked (one ``get_info``) the first time, whenever the kept length
        says the end is reached, and with ``ask``; otherwise the kept one answers.
        """
        if found.growing:
            return False
        if not ask and found.n_samples is not None and self.position < found.n_samples:
            return False
        info = dict(found.svc.get_info())
        if info.get("growing", False):
            found.growing = True
            return False
        found.n_samples = int(info["n_samples"])
        return self.position >= found.n_samples

    def _advance(self, value):
        if isinstance(value, BaseException):  # a RemoteStream's callback: a failed read
            raise value
        data = decode_segment(value)
        if data is False:
            return False
        self.position += int(data.shape[-1])
        return data

    def next(self, target):
        """Return the next chunk, waiting for it; False past the end.

        Parameters
        ----------
        target : rpyc.Connection, RemoteStream or StreamService
            Where to read; a connection means its root service.

        Returns
        -------
        numpy.ndarray or False
            The chunk; False (and :attr:`exhausted` True) past the end.
        """
        found = self._resolve(target)
        data = self._advance(self._call(found.call, None))
        self.exhausted = data is False
        return self._with_records(found, data)

    def next_or_wait(self, target, sleep: float = 0.1, timeout: float | None = None):
        """Return the next chunk, waiting for it to be read if needed.

        Woken by the server's callback, not by polling. With a plain ``rpyc.connect``
        connection (no serving thread) it serves the connection itself in slices of
        ``sleep`` seconds. One round trip per chunk; the view's length is asked again
        only at its (kept) end, or when a chunk has not come within ``sleep``.

        Parameters
        ----------
        target : rpyc.Connection, RemoteStream or StreamService
            Where to read.
        sleep : float
            Longest single wait between checks.
        timeout : float, optional
            Seconds to wait in all; None waits as long as it takes.

        Returns
        -------
        numpy.ndarray or False
            The data, or False: at the end of a stream that will not grow (then
            :attr:`exhausted` is True), or when ``timeout`` expired (it is False).

        Raises
        ------
        StreamError
            The read failed (the error the server reported).
        """
        self.exhausted = False
        found = self._resolve(target)
        if self._at_end(found):
            self.exhausted = True
            return False
        arrived = threading.Event()
        box: list = []
        marks: list = []

        def deliver(value):
            if type(value) is tuple and len(value) == 2 and value[0] == RECORDS_TAG:
                marks.append(value[1])       # the chunk's records: sent just before it
                return
            box.append(value)
            arrived.set()

        value = self._call(found.call, deliver)
        if value is not False:
            return self._with_records(found, self._advance(value))
        # False: the data comes through deliver, or (a view switched to a shorter rate
        # since its length was kept) the position is past the end and nothing comes
        conn, served = found.conn, found.served
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        asked = False
        while not arrived.is_set():
            wait = sleep if deadline is None else min(sleep, deadline - time.monotonic())
            if wait <= 0:
                return False
            if served or conn is None:
                arrived.wait(wait)
            else:
                conn.serve(wait)
            if not asked and not arrived.is_set():
                asked = True
                if self._at_end(found, ask=True):
                    self.exhausted = True
                    return False
        # by callback, a chunk's records come just before it, or none lie in it
        return self._with_records(found, self._advance(box[0]), marks[0] if marks else ())

    def _with_records(self, found: _Target, data, wire=None):
        """``data``, or ``(data, records)`` with the ``records`` option (asked for when they
        did not come with the chunk: one more round trip)."""
        if not self.records or data is False:
            return data
        if wire is not None:
            return data, as_records(wire)
        return data, chunk_records(found.svc, self.position - int(data.shape[-1]),
                                   self.position)

    def __iter__(self):
        if self.target is None:
            raise TypeError("give the iterator a target to iterate over it: "
                            "StreamSegmentIterator(_range, target=svc), or use it.over(svc)")
        return self.over(self.target)

    def over(self, target, timeout: float | None = None):
        """Iterate over ``target`` from the current position to the end.

        Parameters
        ----------
        target : rpyc.Connection, RemoteStream or StreamService
            Where to read.
        timeout : float, optional
            Seconds to wait for each chunk; None waits as long as it takes.

        Yields
        ------
        numpy.ndarray
            The chunks, in order.

        Raises
        ------
        TimeoutError
            A chunk did not come within ``timeout`` (the end is never mistaken for it).
        """
        while True:
            data = self.next_or_wait(target, timeout=timeout)
            if data is False:
                if self.exhausted:
                    return
                raise TimeoutError(f"no chunk at position {self.position} within "
                                   f"timeout={timeout!r} s; iterate again to go on, or "
                                   f"raise the timeout.")
            yield data


class StreamSegmentIterator(_Iterator):
    """Iterate over every active channel in chunks of ``_range`` samples.

    Parameters
    ----------
    _range : int
        Samples per chunk (the last one may be shorter).
    start : int
        Grid index to start from (a saved :attr:`position` resumes an earlier run).
    target : rpyc.Connection, RemoteStream or StreamService, optional
        Makes the iterator a Python iterable: ``for seg in StreamSegmentIterator(2560,
        target=svc)``.
    records : bool
        Give each chunk as ``(chunk, records)``: the records (notes, annotations, a live
        stream's markers) whose sample index lies in the chunk, as a list of
        :class:`~software.client.records.Record` (one more round trip per chunk).

    Attributes
    ----------
    position : int
        Grid index of the next chunk (plain data: save it to resume).
    exhausted : bool
        True only when the last call found the end of the stream.
    """

    def __init__(self, _range: int = 100, start: int = 0, target=None, *,
                 records: bool = False) -> None:
        super().__init__(_range, start, target, records)
        if self.records:   # a chunk that comes by callback brings its records along
            self._method = "get_stream_segment_marked"

    _method = "get_stream_segment"

    def _call(self, call, callback):
        return call(self.range, self.position, callback)

    def __repr__(self) -> str:
        return f"StreamSegmentIterator(_range={self.range}, start={self.position})"


class StreamRowIterator(_Iterator):
    """Iterate over one channel in chunks of ``_range`` samples.

    Parameters
    ----------
    _channel : int or str
        Index into the active channels, or a channel name.
    _range : int
        Samples per chunk.
    start : int
        Grid index to start from.
    target : rpyc.Connection, RemoteStream or StreamService, optional
        Makes the iterator a Python iterable over that target.
    records : bool
        Give each chunk as ``(chunk, records)`` (see :class:`StreamSegmentIterator`).

    Attributes
    ----------
    position, exhausted
        As for :class:`StreamSegmentIterator`.
    """

    def __init__(self, _channel: int | str = 0, _range: int = 100, start: int = 0,
                 target=None, *, records: bool = False) -> None:
        super().__init__(_range, start, target, records)
        self.channel = _channel

    _method = "get_row_segment"

    def _call(self, call, callback):
        return call(self.channel, self.range, self.position, callback)

    def __repr__(self) -> str:
        return (f"StreamRowIterator(_channel={self.channel!r}, _range={self.range}, "
                f"start={self.position})")
