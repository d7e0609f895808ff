"""The one same-host producer allowed to write a live stream's shared ring, and the server
thread that follows its pushes.

A producer handle (:mod:`software.client.producer`) maps the stream's ring for writing and
pushes into it without a message per push. While its lease is out the stream refuses every
other push, and the lease's thread, woken by the same futex as the followers, tells the
stream each time the head moved, so that everything the server does on a push still
happens (callbacks, socket followers, the recorder, ``get_stats``)::

    producer process                          server
      Producer.append_* -> Ring.write -----> lease thread: head moved -> stream.heads_moved()
        (reserve, fill, commit, publish)        -> watchlist.due(head) -> views answer
      its connection ends ------------------> view closed -> ProducerLease.release():
                                                lease word 0, Ring.repair(), pushes allowed

A producer killed mid-push leaves nothing visible (see :mod:`software.shm.ring`); one
killed between its commit and its publish has its samples published by the release.
"""
from __future__ import annotations

import logging
import secrets
import threading

from ..errors import PushRefusedError
from ..shm.ring import SERVER

__all__ = ["ProducerLease"]

logger = logging.getLogger(__name__)

#: Longest single sleep of the lease's thread (bounds how long a release takes to end it).
SLICE = 0.25


class ProducerLease:
    """The right of one producer handle to write a stream's shared ring.

    Made by :meth:`grant`; :meth:`release` (idempotent) gives the stream back to the
    server's own pushes.

    Attributes
    ----------
    id : int
        The lease word the producer checks before each push (never 0).
    holder : str
        Who holds it, for the error other pushers get.
    """

    def __init__(self, stream, holder: str) -> None:
        self.id = secrets.randbits(62) | 1
        self.holder = holder
        self._stream = stream
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True,
                                        name=f"lease-{stream.name}")

    @classmethod
    def grant(cls, stream, holder: str) -> ProducerLease:
        """Lease ``stream``'s ring to ``holder``.

        Raises
        ------
        PushRefusedError
            The ring is not shared, a replay drives the stream, or another producer
            holds it.
        ServiceClosedError
            The stream was closed.
        """
        if not stream.ring.shared:
            raise PushRefusedError(f"the live stream {stream.name!r} is not in shared memory "
                                   f"(LiveStream(shared_memory=False), or this system cannot "
                                   f"share it): push through the connection instead.")
        if stream.controller is not None:
            raise PushRefusedError(f"{stream.name!r} replays a recording: pushes are refused "
                                   f"(serve a --live stream to push samples).")
        lease = cls(stream, holder)
        with stream._lock:
            stream._check_pushable()          # closed, or leased to another producer
            stream._lease = lease
            stream.ring.set_lease(lease.id)
        lease._thread.start()
        logger.info("live stream %r leased to the producer of %s", stream.name, holder)
        return lease

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._released.is_set()

    def _follow(self) -> None:
        """Tell the stream each time the producer moved the head (the lease's thread)."""
        stream, ring = self._stream, self._stream.ring
        last = ring.head
        try:
            while not self._released.is_set() and not ring.closed:
                seq = ring.seq             # read before the head: no publish is missed
                head = ring.head
                if head != last:
                    last = head
                    stream.heads_moved()
                ring.wait(seq, SLICE, SERVER)  # woken after the followers
        except Exception:
            logger.exception("following the producer of %r failed", stream.name)

    def release(self) -> None:
        """Give the ring back to the server's pushes (idempotent; any thread).

        Samples the producer committed but did not publish (killed in between) are
        published now; samples it had not committed stay invisible.
        """
        if self._released.is_set():
            return
        self._released.set()
        stream = self._stream
        with stream._lock:
            if stream._lease is self:
                stream._lease = None
                if not stream.closed:
                    stream.ring.set_lease(0)
                    stream.ring.repair()       # also wakes the thread, which ends
        stream.heads_moved()
        logger.info("live stream %r: the lease of %s ended", stream.name, self.holder)

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"<ProducerLease of {self._stream.name!r} by {self.holder} {state}>"
