"""Same-host followers of a live stream: samples read straight from the stream's shared ring.

A :func:`~software.get_connection` client on the server's host maps a live stream's ring
read-only (:mod:`software.shm.ring`) the first time it asks a
:class:`~software.client.stream.RemoteStream` of it for data, and from then on answers
``get_stream_segment`` / ``get_row_segment`` without a callback, and the iterators'
``next`` / ``next_or_wait``, from memory::

    client (get_connection, same host)                  server (its live view)
    open_ring() ------------------------------------->  (tag, pid, fd, size, channels, ...)
    map /proc/<pid>/fd/<fd> read-only, read its token
    attach_ring(token) ------------------------------>  True: counted in ring_followers
    get_stream_segment(n, i) / next_or_wait():
        seq = ring.seq; i + n <= head ? copy rows [i, i + n), check the write position
                                      : futex wait on seq (slices: the connection checked)

The values are those the socket gives (the ring's dtype, writable arrays, False when not
pushed yet). Anything else (samples dropped or overwritten during the copy, a closed
stream, arguments the server would refuse, an answer over its size limit) goes through
RPyC as before, so errors, counts and messages are the server's own. Callbacks always go
through the socket.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import numpy as np
from rpyc.core.async_ import AsyncResultTimeout
from rpyc.core.netref import BaseNetref

from ..shm.ring import RING_TAG, SHAREABLE, Ring
from ..transport.serving import end_connection

__all__ = ["RingFollower", "attach_follower", "follow", "map_offered_ring", "ring_next"]

logger = logging.getLogger(__name__)

#: Longest single futex sleep of a waiting follower: how soon it notices that the
#: connection ended (the server died) or its deadline passed.
SLICE = 0.1


def _integer(value: Any) -> int | None:
    """``value`` as an int if it is one (not a bool); None otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


class RingFollower:
    """A read-only mapping of one live stream's ring, and the rows of its active channels.

    Parameters
    ----------
    ring : Ring
        The attached ring.
    channels : sequence of str
        The ring's rows, in order.
    active : sequence of str
        The view's active channels (what a segment returns, in order).
    max_request_bytes : int or None
        The server's per-request limit (larger requests go through RPyC, which refuses
        them as the server does).
    """

    def __init__(self, ring: Ring, channels, active, max_request_bytes: int | None) -> None:
        self.ring = ring
        self._index = {str(name): i for i, name in enumerate(channels)}
        self._limit = max_request_bytes
        self._lock = threading.Lock()
        #: Threads sleeping in :meth:`wait` now.
        self.waiting = 0
        self._last: float | None = None        # when samples last came during a wait
        self._period: float | None = None      # the pace they come at
        self.select(active)

    def select(self, active) -> None:
        """The view's active channels changed (``set_active_channels``' answer)."""
        names = tuple(str(n) for n in active)
        rows = [self._index[n] for n in names]
        self.active = names
        self._rows = slice(None) if rows == list(range(len(self._index))) else rows
        self._count = len(names)
        self._row_of = dict(zip(names, rows))

    def _selection(self, row) -> tuple[Any, int] | None:
        """(ring rows, row count) of a request, or None when the server must judge it."""
        if row is None:
            return self._rows, len(self.active)
        if isinstance(row, str):
            at = self._row_of.get(row)
        else:
            index = _integer(row)
            at = None if index is None or not 0 <= index < len(self.active) \
                else self._row_of[self.active[index]]
        return None if at is None else (at, 1)

    def read(self, row, length, start):
        """Samples ``[start, start + length)`` of the active channels (or of ``row``).

        Parameters
        ----------
        row : None, int or str
            None: every active channel; else an index into them or a channel name.
        length, start : int
            As ``get_stream_segment``'s ``_range`` and ``_startIndex``.

        Returns
        -------
        numpy.ndarray, False or None
            The samples (channels x n, or n for a row); False when they are not all
            pushed yet; None when the call must go through RPyC (the server's answer or
            error: dropped samples, a closed stream, arguments it would refuse).
        """
        ring = self.ring
        if row is None and type(length) is int and type(start) is int:
            rows, count = self._rows, self._count       # the common case, in few steps
        else:
            length, start = _integer(length), _integer(start)
            selection = self._selection(row)
            if length is None or start is None or selection is None:
                return None
            rows, count = selection
        if start < 0 or not 0 < length <= ring.history \
                or (self._limit is not None and count * length * 8 > self._limit):
            return None
        stop = start + length
        if stop > ring.head:
            return None if ring.closed else False
        # None: dropped, or overwritten while copying (the server then says so)
        return ring.take(rows, start, stop)

    def wait(self, row, length, start, timeout: float | None,
             check: Callable[[], None], spin: float = 0.0):
        """:meth:`read`, waiting until the samples are pushed (or ``timeout`` passes).

        Parameters
        ----------
        row, length, start
            As for :meth:`read`.
        timeout : float or None
            Seconds to wait; None: as long as it takes.
        check : callable
            Called between sleeps (every :data:`SLICE` s at most); raises when the
            connection ended (the server is gone).
        spin : float
            Seconds to poll instead of sleeping, from this long before the samples are
            expected (the pace of the earlier arrivals) to this long after: a follower
            that is running when they come returns them a few microseconds after the
            push instead of waking up (tens to hundreds of microseconds on a busy
            machine), for about ``2 * spin`` of CPU per arrival. 0: always sleep.

        Returns
        -------
        numpy.ndarray, False or None
            The samples; False when ``timeout`` passed; None: ask through RPyC.
        """
        ring, clock = self.ring, time.monotonic
        deadline = None if timeout is None else clock() + float(timeout)
        waited = False
        with self._lock:
            self.waiting += 1
        try:
            while True:
                seq = ring.seq                 # before the head: no publish is missed
                got = self.read(row, length, start)
                if got is not False:
                    if waited and got is not None:
                        self._arrived(clock())
                    return got
                check()
                now = clock()
                wait = SLICE if deadline is None else min(SLICE, deadline - now)
                if wait <= 0:
                    return False
                waited = True
                if spin > 0 and self._period is not None:
                    expected = self._last + self._period
                    if now < expected - spin:          # sleep until shortly before it
                        wait = min(wait, expected - spin - now)
                    elif now < expected + spin:        # poll until it comes, or give up
                        end = min(expected + spin, now + wait)
                        while ring.seq == seq and clock() < end:
                            pass
                        continue
                ring.wait(seq, wait)
        finally:
            with self._lock:
                self.waiting -= 1

    def _arrived(self, now: float) -> None:
        """Samples came while waiting: learn the pace (for ``spin``)."""
        last, self._last = self._last, now
        if last is None:
            return
        gap, period = now - last, self._period
        if period is None:
            self._period = gap
        else:                                  # a pause does not throw it far off
            self._period = period + 0.25 * (min(max(gap, 0.5 * period), 2 * period) - period)

    def __repr__(self) -> str:
        return f"<RingFollower of {len(self.active)} channels, {self.ring!r}>"


def follow(follower: RingFollower, found: Any, row, length: int, start: int,
           timeout: float | None, spin: float, server_timeout: float):
    """An iterator's wait in memory: :meth:`RingFollower.wait`, ended when the connection
    of ``found`` (a :class:`~software.client.targets.Target`) ends; a wait that timed out
    says "no data yet" (False) only when the server answers a ping within
    ``server_timeout``.

    Raises
    ------
    ServerGoneError
        The connection ended, or the server did not answer the ping.
    """
    def check() -> None:
        if found.ended:
            raise found.gone_error()

    data = follower.wait(row, length, start, timeout, check, spin)
    if data is False:
        try:
            found.conn.ping("", timeout=server_timeout)
        except AsyncResultTimeout as exc:
            why = f"no answer within {server_timeout:g} s (not even to a ping)"
            end_connection(found.conn, why)
            raise found.gone_error(why=why) from exc
    return data


def ring_next(iterator: Any, found: Any, timeout: float | None, spin: float):
    """An iterator's next chunk from the shared ring of a same-host live stream.

    An iterator with ``records=True`` follows through the socket: each chunk's records
    (markers) come with it, in order.

    Returns
    -------
    numpy.ndarray, False or None
        The chunk (the iterator's position moved past it); False: ``timeout`` passed
        with the server there; None: not a ring (or a case for the server), ask it.

    Raises
    ------
    ServerGoneError
        The connection ended, or the server did not answer.
    """
    svc = found.svc
    if issubclass(type(svc), BaseNetref) or getattr(iterator, "records", False):
        return None     # a proxy (asking it is a round trip); records come by callback
    ring_follower = getattr(svc, "ring_follower", None)   # RemoteStream, RemoteRoot
    follower = None if ring_follower is None else ring_follower()
    if follower is None:
        return None
    if iterator._waiting is not None:
        iterator._drop_waiting()       # a request registered through the socket before
    try:
        data = follow(follower, found, getattr(iterator, "channel", None), iterator.range,
                      iterator.position, timeout, spin, iterator.server_timeout)
    except EOFError as exc:
        raise found.gone_error(exc) from exc
    if data is not None and data is not False:
        iterator.position += int(data.shape[-1])
    return data


def map_offered_ring(stream: Any, writable: bool = False) -> tuple[Ring, tuple] | None:
    """Ask the server where the ring of ``stream`` (a RemoteStream) is, and map it.

    Parameters
    ----------
    stream : RemoteStream
        A view through :func:`~software.get_connection`.
    writable : bool
        Map it for writing (a producer handle); otherwise read-only.

    Returns
    -------
    (Ring, tuple) or None
        The mapped ring and the server's offer (``RING_TAG, pid, fd, size, channels,
        active, history, name``); None: not a live stream, another host or user, an
        older server, or ``get_connection(shared_memory=False)``: the socket serves.
    """
    if not SHAREABLE or not getattr(stream.connection, "live_memory", False):
        return None
    try:
        offer = stream._method("open_ring")()
    except AttributeError:                     # a file view, or an older server
        return None
    if not offer or offer[0] != RING_TAG:
        return None
    _, pid, fd, size = offer[:4]
    try:
        ring = Ring.attach(int(pid), int(fd), int(size), writable=writable)
    except (OSError, ValueError) as exc:
        logger.debug("the live ring is not mappable here (%s): using the socket", exc)
        return None
    return ring, tuple(offer)


def attach_follower(stream: Any) -> RingFollower | None:
    """Map the ring of ``stream`` (a RemoteStream) when the server shares it with this host.

    Returns
    -------
    RingFollower or None
        None: the socket serves (see :func:`map_offered_ring`).
    """
    mapped = map_offered_ring(stream)
    if mapped is None:
        return None
    ring, offer = mapped
    channels, active = offer[4], offer[5]
    if not stream._method("attach_ring")(ring.token):
        return None
    limits = getattr(stream.connection, "limits", None) or {}
    limit = limits.get("max_request_bytes")
    follower = RingFollower(ring, tuple(channels), tuple(active),
                            None if limit is None else int(limit))
    logger.debug("following %r from shared memory: %r", stream.path, follower)
    return follower
