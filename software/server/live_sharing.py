"""Same-host access to a live stream's ring: the control calls of followers and producers.

A client on the server's host reads a live stream straight from its shared ring
(:mod:`software.client.follower`) and may push into it through a producer handle
(:mod:`software.client.producer`); RPyC only negotiates it::

    client                                        server (this connection's live view)
    open_ring() ------------------------------->  ("mefstream-ring", pid, fd, size,
                                                   channels, active, history, name)
    map /proc/<pid>/fd/<fd>, read the token
    attach_ring(token) ------------------------>  True when it matches (the client is on
                                                   this host and may read this process's
                                                   files): counted in ring_followers
    open_producer(token) ---------------------->  the lease id (push rules apply: loopback
                                                   or verified TLS peer, no replay, one
                                                   producer at a time)
    close_producer(lease) --------------------->  released (also when the connection ends)

Threads: every method runs in the connection's serving thread.
"""
from __future__ import annotations

import hmac

from ..errors import PushRefusedError
from ..shm.ring import RING_TAG
from ..stream.service import StreamService

__all__ = ["LiveStreamService", "RingSharing"]

#: First item of :meth:`RingSharing.exposed_open_ring`'s answer.


def _token(value) -> bytes | None:
    return bytes(value) if isinstance(value, (bytes, bytearray)) else None


class RingSharing:
    """Exposed calls of a live view (a :class:`StreamService` over a
    :class:`~software.live.view.LiveView`) for clients on the server's host."""

    #: Who this view's client is, for the error other pushers get (set on connect).
    _peer_name = "a client on this host"

    def _ring(self):
        return self._source.stream.ring

    def exposed_open_ring(self):
        """Where this live stream's ring is, for a client on this host to map.

        Returns
        -------
        tuple or False
            ``("mefstream-ring", pid, fd, size, channels, active, history, name)``: open
            ``/proc/<pid>/fd/<fd>`` (``size`` bytes), then prove it with
            :meth:`exposed_attach_ring`; ``channels`` are the ring's rows in order,
            ``active`` this view's active channels, ``history`` the longest request,
            ``name`` the stream's.
            False when the ring is not shared (followers use the socket).
        """
        self._check_open()
        shared = self._ring().share()
        if shared is None:
            return False
        pid, fd, size = shared
        return (RING_TAG, pid, fd, size, self._source.info.names, tuple(self._names),
                self._ring().history, self._source.stream.name)

    def exposed_attach_ring(self, token) -> bool:
        """Whether ``token`` is the ring's (read from the mapped file).

        Parameters
        ----------
        token : bytes
            The 16 bytes after the ring's magic.

        Returns
        -------
        bool
            True: the client maps the very ring (it is counted in ``ring_followers``).
        """
        self._check_open()
        token = _token(token)
        ok = token is not None and hmac.compare_digest(token, self._ring().token)
        if ok:
            self._source.note_follower()
        return ok

    def exposed_open_producer(self, token) -> int:
        """Lease the ring to this client's producer handle.

        Parameters
        ----------
        token : bytes
            The ring's token, read from the file the client mapped for writing.

        Returns
        -------
        int
            The lease id: the producer pushes while the ring's lease word holds it.

        Raises
        ------
        PushRefusedError
            The token does not match (not this host's ring), this connection may not
            push, the stream replays a recording, or another producer holds the stream.
        """
        self._check_open()
        token = _token(token)
        if token is None or not hmac.compare_digest(token, self._ring().token):
            raise PushRefusedError("token: this client did not map the stream's ring (not "
                                   "on the server's host?); push through the connection "
                                   "(append_stream_segment_data) instead.")
        return self._source.lease_producer(self._peer_name)

    def exposed_close_producer(self, lease) -> bool:
        """Release this client's producer lease ``lease`` (idempotent).

        Returns
        -------
        bool
            Whether that lease was held by this connection and is released now.
        """
        return self._source.end_lease(int(lease))


class LiveStreamService(RingSharing, StreamService):
    """A connection's view of a live stream served beside the files (``open_live``)."""
