"""What a :class:`~software.client.stream.RemoteStream` of a live stream adds on the
server's host: reads from the shared ring (:mod:`.follower`) and a producer handle
(:mod:`.producer`)."""
from __future__ import annotations

import threading
from typing import Any

from .follower import attach_follower
from .producer import open_producer

__all__ = ["UNKNOWN", "LiveAccess"]

#: The ring follower of a stream not asked for yet.
UNKNOWN = object()
_ATTACHING = threading.Lock()


class LiveAccess:
    """Mixed into :class:`~software.client.stream.RemoteStream` (which sets
    ``_follower = UNKNOWN``)."""

    _follower: Any = UNKNOWN

    def ring_follower(self) -> Any:
        """The :class:`~software.client.follower.RingFollower` reading this live stream
        from shared memory, or None: the socket serves (asked of the server once)."""
        follower = self._follower
        if follower is UNKNOWN:
            with _ATTACHING:           # one mapping per stream, whichever threads ask
                follower = self._follower
                if follower is UNKNOWN:
                    follower = self._follower = attach_follower(self)
        return follower

    def _from_ring(self, row: Any, length: Any, start: Any) -> Any:
        """Samples from the shared ring, False (not pushed yet), or None: ask the server."""
        follower = self.ring_follower()
        return None if follower is None else follower.read(row, length, start)

    def producer(self) -> Any:
        """A producer handle of this live stream: pushes straight into its shared ring
        from the server's host, else through the connection (:mod:`.producer`).

        Returns
        -------
        Producer
            A context manager with ``append_stream_segment_data`` and
            ``append_stream_row_data``, checked as the stream checks them.

        Raises
        ------
        PushRefusedError
            This connection may not push, the stream replays a recording, or another
            producer holds it.
        """
        return open_producer(self)
