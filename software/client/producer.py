"""Producer handles: a producer on the server's host pushes straight into a live stream's ring.

::

    conn = get_connection(port)                       # on the server's host
    with conn.root.producer() as out:                 # or conn.root.open_live(name)
        out.append_stream_segment_data(block)         # channels x n; returns the head

:class:`Producer` takes the stream's lease (one producer at a time: every other push is
refused while it is out, and the server takes it back when this connection ends), maps
the ring for writing and pushes without a message per push, with the stream's own checks
(:mod:`software.live.samples`: shape, what the dtype holds, NaN in integer streams, level
rows, rows ahead by at most the slack): a refused push appends nothing. Each push is
written, committed and published as :mod:`software.shm.ring` describes, and the server's
lease thread sees it (callbacks, socket followers, the recorder, ``get_stats`` as before).

Away from the server's host, or with ``get_connection(shared_memory=False)``, the handle
is a :class:`SocketProducer`: the same methods, one round trip per push.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import PushRefusedError, ServiceClosedError
from ..live.samples import as_block, as_row, check_ahead, check_level, row_index
from ..shm.ring import Ring
from .follower import map_offered_ring

__all__ = ["Producer", "SocketProducer", "open_producer"]

logger = logging.getLogger(__name__)



class _Handle:
    """What both handles share: lifetime and CREPE's push names."""

    #: Whether pushes go straight into shared memory.
    shared = False

    def __init__(self, stream: Any, name: str) -> None:
        self._stream = stream
        self.name = name
        self._closed = False

    def push_segment(self, data: Any) -> int:
        """The same as :meth:`append_stream_segment_data`."""
        return self.append_stream_segment_data(data)

    def push_row(self, row: Any, data: Any) -> int:
        """The same as :meth:`append_stream_row_data`."""
        return self.append_stream_row_data(row, data)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceClosedError(f"this producer handle of {self.name!r} was closed; "
                                     f"open another with producer().")

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "shared memory" if self.shared else "the connection"
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} of {self.name!r} through {kind}, {state}>"


class Producer(_Handle):
    """A same-host producer's handle on a live stream (see the module docstring).

    Made by ``producer()`` of a :class:`~software.client.stream.RemoteStream` (or of
    ``conn.root`` when the root is a live stream).

    Parameters
    ----------
    stream : RemoteStream
        The stream's view on this connection.
    ring : Ring
        The ring, mapped for writing.
    lease : int
        The lease the server granted.
    channels : sequence of str
        The ring's rows in order.
    name : str
        The stream's name.
    """

    shared = True

    def __init__(self, stream: Any, ring: Ring, lease: int, channels, name: str) -> None:
        super().__init__(stream, name)
        self._ring = ring
        self._lease = int(lease)
        self._rows = {str(c): i for i, c in enumerate(channels)}
        self._lock = threading.Lock()          # one push at a time, whatever the threads

    @property
    def head(self) -> int:
        """Samples every channel has."""
        return self._ring.head

    def _check(self) -> None:
        """Refuse to write unless this handle still holds the lease of an open stream."""
        self._check_open()
        ring = self._ring
        if ring.closed:
            raise ServiceClosedError(f"the live stream {self.name!r} was closed.")
        conn = self._stream.connection
        if conn is not None and getattr(conn, "closed", False):
            made = getattr(conn, "gone_error", None)
            raise made() if made is not None else ServiceClosedError(
                f"the connection of this producer handle of {self.name!r} is closed.")
        if ring.lease != self._lease:
            raise PushRefusedError(f"this producer handle of {self.name!r} lost its lease "
                                   f"(the server took it back); open another with "
                                   f"producer().")

    def append_stream_segment_data(self, _new_data: Any) -> int:
        """Append samples of every channel (channels x n, or one value per channel).

        Returns
        -------
        int
            The stream's head after the push.

        Raises
        ------
        InvalidArgumentError, InvalidTypeError
            Wrong shape, values the dtype cannot hold, rows not level; nothing appended.
        PushRefusedError
            The lease was taken back.
        ServiceClosedError, ServerGoneError
            The stream, this handle or the connection was closed.
        """
        ring = self._ring
        block = as_block(_new_data, ring.n_channels, ring.dtype)
        with self._lock:
            self._check()
            check_level(ring, self.name)
            if block.shape[1] <= ring.history:
                ring.write(block)
            else:
                for done in range(0, block.shape[1], ring.history):   # a ring's length at most
                    ring.write(block[:, done:done + ring.history])
            return ring.head

    def append_stream_row_data(self, _row: Any, _new_data: Any) -> int:
        """Append samples of one channel (``_row``: index or name).

        Returns
        -------
        int
            The head after the push: where every channel has samples.

        Raises
        ------
        InvalidArgumentError
            The row would run more than a quarter of the history ahead of the slowest
            row, or the values do not fit; nothing is appended.
        UnknownChannelError
            No such row.
        """
        ring = self._ring
        row = row_index(self._rows, _row, self.name)
        values = as_row(_new_data, ring.dtype)
        with self._lock:
            self._check()
            check_ahead(ring, row, values.shape[0], _row, self.name)
            ring.write(values[None, :], row)
            return ring.head

    def close(self) -> None:
        """Give the lease back (idempotent; quiet when the connection is gone)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._stream._method("close_producer")(self._lease)
        except (EOFError, ConnectionError, OSError) as exc:
            logger.debug("closing the producer of %r: connection gone (%r)", self.name, exc)


class SocketProducer(_Handle):
    """A producer handle that pushes through the connection (another host, or shared memory
    off): one round trip per push, checked by the server."""

    def append_stream_segment_data(self, _new_data: Any) -> int:
        """Append samples of every channel; returns the stream's head."""
        self._check_open()
        return self._stream.append_stream_segment_data(_new_data)

    def append_stream_row_data(self, _row: Any, _new_data: Any) -> int:
        """Append samples of one channel; returns the stream's head."""
        self._check_open()
        return self._stream.append_stream_row_data(_row, _new_data)

    def close(self) -> None:
        """Mark the handle closed (idempotent)."""
        self._closed = True


def open_producer(stream: Any) -> Producer | SocketProducer:
    """A producer handle of ``stream`` (a RemoteStream): in shared memory when possible.

    Raises
    ------
    PushRefusedError
        The server refused the lease (this connection may not push, a replay, another
        producer holds the stream).
    """
    name = str(stream.path or "the live stream")
    mapped = map_offered_ring(stream, writable=True)
    if mapped is None:
        return SocketProducer(stream, name)
    ring, offer = mapped
    channels, name = offer[4], offer[7]
    lease = stream._method("open_producer")(ring.token)
    return Producer(stream, ring, int(lease), tuple(channels), str(name))
