"""One view's access to a shared live stream: its waiting requests, answered in the view's
own thread; counts requests of dropped samples; refuses pushes from connections that may
not push (or into a replayed stream)."""
from __future__ import annotations

from concurrent.futures import Future

from ..errors import DroppedSamplesError, PushRefusedError
from ..mef3.metadata import RateGroup, SessionInfo
from ..stream.counters import Counters
from ..stream.source import Source

__all__ = ["LiveView"]


class LiveView(Source):
    """One view's access to a shared :class:`LiveStream`.

    Holds the view's waiting requests (:class:`~software.live.waiters.Waiters`), answered
    in the thread :meth:`run_with` gives; closing it withdraws them. Counts requests of
    dropped samples and refuses pushes when told to.

    Parameters
    ----------
    stream : LiveStream
        The shared stream.
    counters : Counters or None
        The server's counters (``dropped_requests``).
    may_push : bool
        Whether this view's connection may push.
    refusal : str
        Why not, for the error a refused pusher gets.
    """

    growing = True

    def __init__(self, stream, counters: Counters | None, may_push: bool = True,
                 refusal: str = "") -> None:
        self.stream = stream
        self.dtype = stream.dtype
        self._counters = counters
        self._may_push = may_push
        self._refusal = refusal
        self._waiters = stream.waiters(self._count_dropped)
        self._lease = None                 # a ProducerLease this view's client holds
        self._follows = False              # a same-host follower maps the ring

    @property
    def info(self) -> SessionInfo:
        """The stream's channels."""
        return self.stream.info

    @property
    def longest(self) -> int:
        """The ring's history: no request may span more samples."""
        return self.stream.ring.history

    def group(self, fs: float) -> RateGroup:
        """The stream's grid now."""
        return self.stream.group(fs)

    def extra_info(self) -> tuple[tuple[str, object], ...]:
        """The stream's live pairs."""
        return self.stream.extra_info()

    def gather(self, names, group, start, stop) -> Future:
        """The stream's samples; a request of dropped samples is counted."""
        try:
            return self.stream.gather(names, group, start, stop, self._waiters)
        except DroppedSamplesError:
            self._count_dropped()
            raise

    def _count_dropped(self) -> None:
        if self._counters is not None:
            self._counters.add("dropped_requests")

    def run_with(self, run) -> None:
        """Answer this view's waiting requests in the thread ``run(job)`` runs jobs in."""
        self._waiters.run_with(run)

    @property
    def waiting(self) -> int:
        """This view's requests waiting for samples."""
        return self._waiters.count

    def close(self) -> None:
        """Withdraw this view's waiting requests, end its producer lease (idempotent)."""
        self._waiters.close()
        self.end_lease()
        if self._follows:
            self._follows = False
            self._count("ring_followers", -1)

    # ---- same-host followers and producers (software.server.live_sharing) ------------

    def note_follower(self) -> None:
        """A client of this view maps the ring (counted in ``ring_followers`` until the
        view closes)."""
        if not self._follows:
            self._follows = True
            self._count("ring_followers", 1)

    def lease_producer(self, holder: str) -> int:
        """Lease the stream's shared ring to this view's client, if it may push.

        Returns
        -------
        int
            The lease id the producer checks before each push.

        Raises
        ------
        PushRefusedError
            This connection may not push, the stream is replayed, or another producer
            holds it.
        """
        self._check_push()
        if self._lease is not None and not self._lease.released:
            raise PushRefusedError(f"this connection holds the producer handle of "
                                   f"{self.stream.name!r} already; push through it.")
        self._lease = self.stream.lease_producer(holder)
        self._count("ring_producers", 1)
        return self._lease.id

    def end_lease(self, lease_id: int | None = None) -> bool:
        """Release this view's producer lease (``lease_id``: only if it is that one)."""
        lease = self._lease
        if lease is None or (lease_id is not None and lease.id != lease_id):
            return False
        self._lease = None
        if not lease.released:
            self._count("ring_producers", -1)
        lease.release()
        return True

    def _count(self, name: str, amount: int) -> None:
        if self._counters is not None:
            self._counters.add(name, amount)

    def _check_push(self) -> None:
        if self.stream.controller is not None:
            raise PushRefusedError(f"{self.stream.name!r} replays a recording: pushes are "
                                   f"refused (serve a --live stream to push samples).")
        if not self._may_push:
            raise PushRefusedError(self._refusal or f"pushing into {self.stream.name!r} is "
                                                    f"not allowed on this connection.")

    def push_segment(self, data) -> int:
        """Append samples of every channel, if this connection may push."""
        self._check_push()
        return self.stream.append_stream_segment_data(data)

    def push_row(self, row, data) -> int:
        """Append samples of one channel, if this connection may push."""
        self._check_push()
        return self.stream.append_stream_row_data(row, data)

    def push_marker(self, text, index, duration, kind) -> int:
        """Put a marker on the stream, if this connection may push."""
        self._check_push()
        return self.stream.append_marker(text, index, duration, kind)

    def __repr__(self) -> str:
        return f"<LiveView of {self.stream!r}>"
