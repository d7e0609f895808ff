"""The client-side stream object: numpy arrays for script writers.

With :func:`~software.get_connection`, ``conn.root`` is a
:class:`~software.client.root.RemoteRoot` whose ``open_file`` returns a
:class:`RemoteStream`: every ``get_*`` returns a writable numpy
array (or False), callbacks receive arrays, ``get_info()`` is a dict::

    with conn.root.open_file("demo.mefd") as svc:     # close() closes it on the server
        seg = svc.get_stream_segment(2560, 0)         # ndarray, channels x samples
        seg[0, 3] += 1.0                              # writable

Every attribute of an RPyC proxy is a round trip, so each server method is fetched once
per stream and kept. What crosses is the packed form ``(payload, dtype, shape)`` that
``get_connection`` asks for: :attr:`RemoteStream.proxy` is the server's view as it is.
Plain ``rpyc.connect`` scripts see nothing of this module (they get CREPE's nested tuples).
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import errors
from . import pieces
from .calls import timed_call
from .live_access import UNKNOWN, LiveAccess
from .records import RecordMethods
from .values import as_array, plain_argument, push_argument

__all__ = ["RemoteStream"]

logger = logging.getLogger(__name__)


def _check_callback(callback: Any) -> None:
    if callback is not None and not callable(callback):
        raise errors.InvalidTypeError(
            f"_callback must be a function taking one argument, or None; a value of type "
            f"{type(callback).__name__} is not.")


class _Proxied:
    """A server object's proxy and its bound methods, each fetched once (a round trip)."""

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy
        self._methods: dict[str, Any] = {}

    @property
    def proxy(self) -> Any:
        """The server object itself (values in the wire form)."""
        return self._proxy

    def _method(self, name: str) -> Any:
        method = self._methods.get(name)
        if method is None:
            method = self._methods[name] = getattr(self._proxy, name)
        return method


class RemoteStream(LiveAccess, RecordMethods, _Proxied):
    """This connection's view of one session, handing out numpy arrays.

    Made by ``conn.root.open_file(path)`` on a :func:`~software.get_connection`
    connection; the methods are those of the server's
    :class:`~software.server.roots.StreamService`, with values converted at the edge.

    Parameters
    ----------
    proxy : rpyc netref
        The server's view (``open_file``'s answer).
    root : rpyc netref, optional
        The root service, for :meth:`close` (``close_file``).
    path : str, optional
        The path it was opened with.
    connection : rpyc.Connection, optional
        The connection (the iterators use its serving thread).

    Notes
    -----
    Callbacks run in the connection's serving thread and receive an array, or, for a
    read that failed, the rebuilt exception object (nothing is raised in that thread).
    The server is handed a wrapper of each callback, the same wrapper for the same
    callback while the server holds it, so that :meth:`withdraw` reaches the requests
    registered with it. Other server attributes are reached through the same cache
    (``svc.anything``).
    """

    def __init__(self, proxy: Any, root: Any = None, path: str | None = None,
                 connection: Any = None) -> None:
        super().__init__(proxy)
        self._root = root
        self._path = path
        self._closed = False
        #: The connection this stream's calls go through.
        self.connection = connection
        # callback -> the wrapper the server was handed; an entry lives as long as the
        # server holds the wrapper (RPyC keeps what a peer holds alive), no longer
        self._wrappers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._follower: Any = UNKNOWN   # a same-host live stream's ring (follower.py)

    # ---- plumbing -------------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """The path given to ``open_file``."""
        return self._path

    def _method(self, name: str) -> Any:
        """The server's bound method ``name``, fetched once (one round trip)."""
        if self._closed:
            raise errors.ServiceClosedError(
                f"{self._path!r} was closed on this connection; open it again with "
                f"open_file().")
        return super()._method(name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._method(name)

    def _deliver(self, callback: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
        """Wrap ``callback`` so that it receives an array or an exception object.

        The same callback gets the same wrapper while the server holds it (see
        :meth:`withdraw`).
        """
        _check_callback(callback)
        if callback is None:
            return None
        try:
            wrapper = self._wrappers.get(callback)
        except TypeError:  # an unhashable callable: a wrapper of its own each time
            return _wrap(callback)
        if wrapper is None:
            wrapper = self._wrappers[callback] = _wrap(callback)
        return wrapper

    def withdraw(self, callback: Callable[[Any], Any], timeout: float | None = None) -> int:
        """Withdraw the requests still waiting on the server with ``callback``.

        Parameters
        ----------
        callback : callable
            A callback given to ``get_*`` of this stream.
        timeout : float, optional
            Seconds the server has to answer (TimeoutError after); None: as any call.

        Returns
        -------
        int
            How many requests were withdrawn (0: none was waiting; an answer already
            under way still arrives).

        Raises
        ------
        AttributeError
            The server is older and cannot withdraw requests.
        TimeoutError
            No answer within ``timeout``.
        """
        _check_callback(callback)
        try:
            wrapper = self._wrappers.get(callback)
        except TypeError:
            wrapper = None
        arg = callback if wrapper is None else wrapper
        if timeout is None or self._closed:  # closed: _method raises ServiceClosedError
            return int(self._method("withdraw")(arg))
        return int(timed_call(self._proxy, "withdraw", (arg,), timeout, self._methods))

    # ---- settings -------------------------------------------------------------------

    def get_info(self) -> dict[str, Any]:
        """Describe the session and this view's settings.

        Returns
        -------
        dict
            ``path``, ``channels``, ``all_channels``, ``fs``, ``rates``, ``start_uutc``,
            ``end_uutc``, ``n_samples``, ``units``, ``segment_seconds``,
            ``segment_samples``, ``n_segments``, ``gaps``, ``growing`` (see the README).
        """
        return dict(self._method("get_info")())

    def set_active_channels(self, names: Any = None) -> tuple[str, ...]:
        """Choose the channels (and their order) of every later segment.

        Parameters
        ----------
        names : list or tuple of str, str, or None
            Channel names; empty or None selects the default (sent as one tuple).

        Returns
        -------
        tuple of str
            The active channels.

        Raises
        ------
        UnknownChannelError, InvalidArgumentError, MixedRateError
            As the server's ``set_active_channels``.
        """
        active = self._method("set_active_channels")(plain_argument(names))
        if self._follower not in (None, UNKNOWN):
            self._follower.select(active)
        return active

    def set_segment_size(self, seconds: float) -> int:
        """Set the segment length of :meth:`get_segment` in seconds.

        Parameters
        ----------
        seconds : float
            Segment length (> 0; rounded to whole samples).

        Returns
        -------
        int
            Number of segments.
        """
        return self._method("set_segment_size")(plain_argument(seconds))

    # ---- data -----------------------------------------------------------------------

    def get_segment(self, index: int, _callback: Callable | None = None) -> np.ndarray | bool:
        """The ``index``-th segment of the current size (channels x samples).

        Parameters
        ----------
        index : int
            0 <= index < n_segments.
        _callback : callable, optional
            Called with the array when it was not ready (then False is returned now).

        Returns
        -------
        numpy.ndarray or False
            Writable; False when the data will come through ``_callback``.
        """
        return as_array(self._method("get_segment")(plain_argument(index),
                                                    self._deliver(_callback)))

    def get_stream_segment(self, _range: int, _startIndex: int,
                           _callback: Callable | None = None) -> np.ndarray | bool:
        """``_range`` samples of every active channel from grid index ``_startIndex``.

        Parameters
        ----------
        _range : int
            Number of samples (> 0); fewer near the end.
        _startIndex : int
            Grid index from the session start.
        _callback : callable, optional
            Called with the array (or the exception of a failed read) when not ready.

        Returns
        -------
        numpy.ndarray or False
            (channels, samples), writable; False past the end, or when the data will
            come through ``_callback``.
        """
        if _callback is None:
            got = self._from_ring(None, _range, _startIndex)
            if got is not None:
                return got
        try:
            return as_array(self._method("get_stream_segment")(
                plain_argument(_range), plain_argument(_startIndex), self._deliver(_callback)))
        except errors.InvalidRangeError as exc:  # over the server's limit: in pieces
            return pieces.stream_segment(self, exc, _range, _startIndex)

    def get_row_segment(self, _row: int | str, _range: int, _startIndex: int,
                        _callback: Callable | None = None) -> np.ndarray | bool:
        """``_range`` samples of one channel from grid index ``_startIndex``.

        Parameters
        ----------
        _row : int or str
            Index into the active channels, or a channel name.
        _range, _startIndex, _callback
            As in :meth:`get_stream_segment`.

        Returns
        -------
        numpy.ndarray or False
            1-D (samples), writable, or False as for :meth:`get_stream_segment`.
        """
        if _callback is None:
            got = self._from_ring(_row, _range, _startIndex)
            if got is not None:
                return got
        try:
            return as_array(self._method("get_row_segment")(
                plain_argument(_row), plain_argument(_range), plain_argument(_startIndex),
                self._deliver(_callback)))
        except errors.InvalidRangeError as exc:  # over the server's limit: in pieces
            return pieces.row_segment(self, exc, _row, _range, _startIndex)

    def get_time_segment(self, start_uutc: int, stop_uutc: int,
                         _callback: Callable | None = None) -> np.ndarray | bool:
        """Every active channel in ``[start_uutc, stop_uutc)`` (NaN outside the data).

        Parameters
        ----------
        start_uutc, stop_uutc : int
            Microseconds since the epoch.
        _callback : callable, optional
            As in :meth:`get_stream_segment`.

        Returns
        -------
        numpy.ndarray or False
            Writable; False when the window is entirely outside the recording.
        """
        try:
            return as_array(self._method("get_time_segment")(
                plain_argument(start_uutc), plain_argument(stop_uutc),
                self._deliver(_callback)))
        except errors.InvalidRangeError as exc:  # over the server's limit: in pieces
            return pieces.time_segment(self, exc, start_uutc, stop_uutc)

    def get_envelope(self, start: int, stop: int, n_bins: int):
        """Min and max of every active channel per bin of grid samples ``[start, stop)``.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray) or False
            ``(envelope, edges)``: float64 (2, channels, bins), ``[0]`` minima and ``[1]``
            maxima (NaN: no sample in the bin), and the int64 bin edges (grid indices).
            See :mod:`software.stream.envelope`.
        """
        return pieces.envelope(self, start, stop, n_bins)

    def get_time_envelope(self, start_uutc: int, stop_uutc: int, n_bins: int):
        """:meth:`get_envelope` of a time window; the edges are in microseconds."""
        return pieces.time_envelope(self, start_uutc, stop_uutc, n_bins)

    # ---- lifetime -------------------------------------------------------------------

    def append_stream_segment_data(self, _new_data: Any) -> int:
        """Push samples of every channel into a live stream (channels x n, or one value
        per channel); a numpy array crosses in one message. Returns the stream's head."""
        return self._method("append_stream_segment_data")(push_argument(_new_data))

    def append_stream_row_data(self, _row: int | str, _new_data: Any) -> int:
        """Push samples of one channel into a live stream; returns the stream's head."""
        return self._method("append_stream_row_data")(plain_argument(_row),
                                                      push_argument(_new_data))

    def close(self) -> None:
        """Close this view on the server (``close_file``); idempotent, quiet if the
        connection is gone."""
        if self._closed:
            return
        self._closed = True
        self._methods.clear()
        self._follower = None      # the mapping goes with the last reference
        if self._root is None or self._path is None:
            return
        try:
            self._root.close_file(self._path)
        except (EOFError, ConnectionError, OSError) as exc:
            logger.debug("closing %r: connection already gone (%r)", self._path, exc)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> RemoteStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<RemoteStream {self._path!r} {state}>"


def _wrap(callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``callback`` taking wire values: it receives an array or an exception object."""

    def deliver(value):  # in the connection's serving thread
        try:
            data = as_array(value)
        except errors.StreamError as exc:
            data = exc
        return callback(data)

    return deliver
