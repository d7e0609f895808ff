"""CREPE's iterators: chunks of a stream in order, woken by the server's callback.

The iterators keep their position as plain data (:attr:`StreamSegmentIterator.position`),
so a long analysis can resume after a restart. A target is a connection, a
:class:`~software.RemoteStream`, an RPyC proxy of a view or a view used in-process; each
is resolved once (:class:`~software.client.targets.Target`: its bound method, its
connection), so a chunk costs one round trip. The length of the view is a hint kept per
target and asked again before the end is declared, so a view whose rate was switched
meanwhile is followed to its new end.

A wait that times out withdraws its request on the server (``withdraw``); an answer that
was already under way is kept and returned by the next call, so nothing is lost or
delivered twice, and a server without ``withdraw`` still never holds more than one
request of an iterator. A server that closes, dies or stops answering (pinged after a
quarter of :attr:`server_timeout` of silence) ends every wait with
:class:`~software.ServerGoneError` naming it.

A live stream followed through :func:`~software.get_connection` on the server's host is
read from its shared ring instead (:mod:`software.client.follower`): the wait is a futex
sleep, no request is registered or withdrawn, and the values are the same.
"""
from __future__ import annotations

import time

from .. import errors
from ..transport.serving import Heartbeat, end_connection
from ..transport.wire import decode_segment
from .follower import ring_next
from .iterator_waiting import Waiting
from .records import as_records, chunk_records
from .targets import Target

#: Seconds of silence after which a plain connection's server is deemed gone (an iterator
#: serving it itself pings it; a ``get_connection`` connection has its own).
SERVER_TIMEOUT = 2.0


class _Iterator:
    """Shared machinery of the two CREPE iterators."""

    _method = ""
    #: Whether the data method is ``get_stream_segment_marked`` (records come with it).
    _marked = False
    #: Seconds of silence after which the server of a plain connection is deemed gone.
    server_timeout = SERVER_TIMEOUT

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
        self._targets: dict[int, Target] = {}
        self._waiting: Waiting | None = None

    def _resolve(self, target) -> Target:
        found = self._targets.get(id(target))
        if found is None or found.target is not target:
            found = self._targets[id(target)] = Target(target, self._method)
        return found

    def _call(self, call, callback):
        raise NotImplementedError

    def _at_end(self, found: Target, ask: bool = False) -> bool:
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

    def _drop_waiting(self) -> None:
        """Forget the registered request (another position or target): withdraw it if the
        server can; an answer it still brings is ignored."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.arrived.is_set() \
                and not waiting.found.ended:
            try:
                waiting.found.withdraw(waiting.deliver, self.server_timeout)
            except TimeoutError as exc:  # the server did not answer: it is gone
                end_connection(waiting.found.conn, str(exc))
                raise waiting.found.gone_error(why=str(exc)) from exc

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

        Raises
        ------
        ServerGoneError
            The server closed the connection or is gone.
        """
        found = self._resolve(target)
        with found.guard():
            waiting = self._waiting
            if waiting is not None and waiting.arrived.is_set() \
                    and waiting.found is found and waiting.position == self.position:
                self._waiting = None  # an answer kept from a wait that timed out
                data, wire = self._advance(waiting.box[0]), waiting.records
            else:
                data, wire = self._advance(self._call(found.call, None)), None
                if data is not False:
                    self._drop_waiting()
        self.exhausted = data is False
        return self._with_records(found, data, wire)

    def next_or_wait(self, target, sleep: float = 0.1, timeout: float | None = None,
                     spin: float = 0.0):
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
            Seconds to wait in all; None waits as long as it takes (or until the server
            is gone).
        spin : float
            Live, from shared memory: seconds to poll around the chunk's expected time
            instead of sleeping (:meth:`~software.client.follower.RingFollower.wait`).

        Returns
        -------
        numpy.ndarray or False
            The data, or False: at the end of a stream that will not grow (then
            :attr:`exhausted` is True), or when ``timeout`` expired with the server still
            there (it is False; the request was withdrawn, or, if its answer was already
            under way, that answer is returned by the next call).

        Raises
        ------
        StreamError
            The read failed (the error the server reported).
        ServerGoneError
            The server closed the connection, died, or stopped answering.
        """
        self.exhausted = False
        found = self._resolve(target)
        data = ring_next(self, found, timeout, spin)     # same host, live: the shared ring
        if data is not None:
            return self._with_records(found, data)
        with found.guard():
            return self._next_or_wait(found, sleep, timeout)

    def _next_or_wait(self, found: Target, sleep: float, timeout: float | None):
        waiting = self._waiting
        if waiting is not None and (waiting.found is not found
                                    or waiting.position != self.position):
            self._drop_waiting()
            waiting = None
        if waiting is None:
            if self._at_end(found):
                self.exhausted = True
                return False
            waiting = Waiting(found, self.position)
            value = self._call(found.call, waiting.deliver)
            if value is not False:   # returned at once: by a marked call, it holds none
                return self._with_records(found, self._advance(value),
                                          () if self._marked else None)
            self._waiting = waiting
        # False: the data comes through deliver, or (a view switched to a shorter rate
        # since its length was kept) the position is past the end and nothing comes
        conn, served = found.conn, found.served
        beat = None if served or conn is None else Heartbeat(conn, self.server_timeout)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        asked = False
        while not waiting.arrived.is_set():
            if found.ended:
                raise found.gone_error()
            wait = sleep if deadline is None else min(sleep, deadline - time.monotonic())
            if wait <= 0:
                return self._timed_out(found, waiting)
            if beat is None:
                waiting.arrived.wait(wait)
            else:
                if conn.serve(wait):
                    beat.note()
                why = beat.check()
                if why is not None:
                    end_connection(conn, why)
                    raise found.gone_error(why=why)
            if not asked and not waiting.arrived.is_set():
                asked = True
                if self._at_end(found, ask=True):
                    self._waiting = None
                    self.exhausted = True
                    return False
        self._waiting = None
        return self._with_records(found, self._advance(waiting.box[0]), waiting.records)

    def _with_records(self, found: Target, data, wire=None):
        """``data``, or ``(data, records)`` with the ``records`` option: the records that
        came with a chunk sent by callback, else asked for (one more round trip)."""
        if not self.records or data is False:
            return data
        if wire is not None:
            return data, as_records(wire)
        return data, chunk_records(found.svc, self.position - int(data.shape[-1]),
                                   self.position)

    def _timed_out(self, found: Target, waiting: Waiting):
        """Withdraw a request that did not come in time; keep an answer under way."""
        try:
            withdrawn = found.withdraw(waiting.deliver, self.server_timeout)
        except TimeoutError as exc:  # the server did not answer either: it is gone
            end_connection(found.conn, str(exc))
            raise found.gone_error(why=str(exc)) from exc
        if waiting.arrived.is_set():  # it came while withdrawing: it is the answer
            self._waiting = None
            return self._with_records(found, self._advance(waiting.box[0]), waiting.records)
        if withdrawn:
            self._waiting = None      # nothing will come
        return False                  # else: kept; the next call waits for it again

    def __iter__(self):
        if self.target is None:
            raise TypeError("give the iterator a target to iterate over it: "
                            "StreamSegmentIterator(_range, target=svc), or use it.over(svc)")
        return self.over(self.target)

    def over(self, target, timeout: float | None = None, spin: float = 0.0):
        """Iterate over ``target`` from the current position to the end.

        Parameters
        ----------
        target : rpyc.Connection, RemoteStream or StreamService
            Where to read.
        timeout : float, optional
            Seconds to wait for each chunk; None waits as long as it takes (or until the
            server is gone).
        spin : float
            As for :meth:`next_or_wait`.

        Yields
        ------
        numpy.ndarray
            The chunks, in order.

        Raises
        ------
        TimeoutError
            A chunk did not come within ``timeout`` while the server was there (the end is
            never mistaken for it).
        ServerGoneError
            The server closed the connection, died, or stopped answering.
        """
        while True:
            data = self.next_or_wait(target, timeout=timeout, spin=spin)
            if data is False:
                if self.exhausted:
                    return
                where = self._resolve(target).peer or "the in-process view"
                raise TimeoutError(f"no data yet at position {self.position} within "
                                   f"timeout={timeout!r} s (the server at {where} is "
                                   f"there); iterate again to go on, or raise the "
                                   f"timeout.")
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
        :class:`~software.client.records.Record`. A chunk sent by callback brings them
        along (``get_stream_segment_marked``); one returned at once asks for them.

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
        if self.records:   # a chunk brings its records along (no round trip more)
            self._method = "get_stream_segment_marked"
            self._marked = True

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
        Give each chunk as ``(chunk, records)`` (asked for after each chunk).

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
