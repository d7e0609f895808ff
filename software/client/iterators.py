"""CREPE's iterators: chunks of a stream in order, woken by the server's callback.

The iterators keep their position as plain data (:attr:`StreamSegmentIterator.position`),
so a long analysis can resume after a restart.
"""
from __future__ import annotations

import threading
import time

from rpyc.core.netref import BaseNetref

from .. import errors
from ..transport.wire import decode_segment


def _is_netref(obj) -> bool:
    """Whether ``obj`` is an RPyC proxy (checked locally: no round trip)."""
    return issubclass(type(obj), BaseNetref)


class _Target:
    """What an iterator reads from, resolved once: the service, its bound method, the
    connection. Every attribute of a proxy costs a round trip, so nothing is looked up
    again per chunk."""

    __slots__ = ("target", "svc", "call", "conn", "n_samples")

    def __init__(self, target, method: str) -> None:
        self.target = target  # kept alive, so that its id() is not reused
        if _is_netref(target):
            self.svc, self.conn = target, object.__getattribute__(target, "____conn__")
        elif hasattr(target, "root") and hasattr(target, "serve"):  # a Connection
            self.svc, self.conn = target.root, target
        else:  # a StreamService used in-process
            self.svc, self.conn = target, None
        self.call = getattr(self.svc, method)
        self.n_samples: int | None = None

    @property
    def served(self) -> bool:
        """Whether a ServingThread serves the connection (then callbacks arrive alone)."""
        serving = getattr(self.conn, "serving_thread", None)
        return serving is not None and not serving.closed


class _Iterator:
    """Shared machinery of the two CREPE iterators."""

    _method = ""

    def __init__(self, _range: int, start: int, target=None) -> None:
        self.target = target
        if int(_range) < 1:
            raise errors.InvalidRangeError(f"_range must be >= 1; {_range!r} is invalid.")
        if int(start) < 0:
            raise errors.InvalidRangeError(f"start must be >= 0; {start!r} is invalid.")
        self.range = int(_range)
        self.position = int(start)
        self._targets: dict[int, _Target] = {}

    def _resolve(self, target) -> _Target:
        found = self._targets.get(id(target))
        if found is None or found.target is not target:
            found = self._targets[id(target)] = _Target(target, self._method)
        return found

    def _call(self, call, callback):
        raise NotImplementedError

    def _at_end(self, found: _Target) -> bool:
        if found.n_samples is None:
            info = dict(found.svc.get_info())
            if info.get("growing", False):
                return False
            found.n_samples = int(info["n_samples"])
        return self.position >= found.n_samples

    def _advance(self, value):
        data = decode_segment(value)
        if data is False:
            return False
        self.position += int(data.shape[-1])
        return data

    def next(self, target):
        """Return the next chunk, or False when it is not available (past the end).

        Parameters
        ----------
        target : rpyc.Connection or StreamService
            Where to read; a connection means its root service.
        """
        return self._advance(self._call(self._resolve(target).call, None))

    def next_or_wait(self, target, sleep: float = 0.1, timeout: float | None = None):
        """Return the next chunk, waiting for it to be read if needed.

        Woken by the server's callback, not by polling. With a plain ``rpyc.connect``
        connection (no serving thread) it serves the connection itself in slices of
        ``sleep`` seconds.

        Parameters
        ----------
        target : rpyc.Connection or StreamService
            Where to read.
        sleep : float
            Longest single wait between checks.
        timeout : float, optional
            Seconds to wait in all; None waits as long as it takes.

        Returns
        -------
        numpy.ndarray or False
            The data, or False at the end of a stream that will not grow, or on timeout.
        """
        found = self._resolve(target)
        if self._at_end(found):
            return False
        arrived = threading.Event()
        box: list = []

        def deliver(value):
            box.append(value)
            arrived.set()

        value = self._call(found.call, deliver)
        if value is not False:
            return self._advance(value)
        conn, served = found.conn, found.served
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while not arrived.is_set():
            wait = sleep if deadline is None else min(sleep, deadline - time.monotonic())
            if wait <= 0:
                return False
            if served or conn is None:
                arrived.wait(wait)
            else:
                conn.serve(wait)
        return self._advance(box[0])

    def __iter__(self):
        if self.target is None:
            raise TypeError("give the iterator a target to iterate over it: "
                            "StreamSegmentIterator(_range, target=svc), or use it.over(svc)")
        return self.over(self.target)

    def over(self, target, timeout: float | None = None):
        """Iterate over ``target`` from the current position to the end."""
        while True:
            data = self.next_or_wait(target, timeout=timeout)
            if data is False:
                return
            yield data


class StreamSegmentIterator(_Iterator):
    """Iterate over every active channel in chunks of ``_range`` samples.

    Parameters
    ----------
    _range : int
        Samples per chunk (the last one may be shorter).
    start : int
        Grid index to start from (a saved :attr:`position` resumes an earlier run).
    target : rpyc.Connection or StreamService, optional
        Makes the iterator a Python iterable: ``for seg in StreamSegmentIterator(2560,
        target=svc)``.
    """

    def __init__(self, _range: int = 100, start: int = 0, target=None) -> None:
        super().__init__(_range, start, target)

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
    target : rpyc.Connection or StreamService, optional
        Makes the iterator a Python iterable over that target.
    """

    def __init__(self, _channel: int | str = 0, _range: int = 100, start: int = 0,
                 target=None) -> None:
        super().__init__(_range, start, target)
        self.channel = _channel

    _method = "get_row_segment"

    def _call(self, call, callback):
        return call(self.channel, self.range, self.position, callback)

    def __repr__(self) -> str:
        return (f"StreamRowIterator(_channel={self.channel!r}, _range={self.range}, "
                f"start={self.position})")
