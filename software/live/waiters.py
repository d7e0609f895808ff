"""Requests for samples a live stream has not pushed yet, answered in each view's own thread.

Each view keeps its waiting requests in a :class:`Waiters` heap ordered by their stop; the
stream keeps one entry per view in its :class:`Watchlist`: the stop of the view's earliest
request. A push wakes the views whose earliest request it completed (a flag and a job
queued: the same cost whatever number of requests they hold); each view's delivery
thread then takes its complete requests off its heap and answers them with a
:class:`RingAnswer`, which copies the samples out of the ring only when the answer is
built, one at a time, and reports them dropped if the ring overwrote them meanwhile::

    producer:   push --> Ring.write --> Watchlist.due(head) --> Waiters.wake (O(1) per view)
    view thread:        Waiters.answer --> future.set_result(RingAnswer) --> callback queued
                        RingAnswer.assemble (copy, overwrite check) --> encode --> send

A follower on the same host (a shared-memory ring) would be one more kind of view woken
by the watchlist.
"""
from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from ..errors import ServiceClosedError

__all__ = ["RingAnswer", "Waiters", "Watchlist"]


class RingAnswer:
    """Samples ``[start, stop)`` of some rows of a live stream, copied when assembled.

    Parameters
    ----------
    stream : LiveStream
        The stream whose ring holds them (every sample pushed: ``stop <= head``).
    rows : slice or list of int
        Rows of the ring, in the answer's order.
    start, stop : int
        Sample indices.
    dropped : callable, optional
        Called when the samples were overwritten before being copied (a view counts it).
    """

    __slots__ = ("_stream", "_rows", "_start", "_stop", "shape", "_dropped")

    def __init__(self, stream, rows, start: int, stop: int,
                 dropped: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self._rows = rows
        self._start, self._stop = start, stop
        n_rows = stream.ring.n_channels if isinstance(rows, slice) else len(rows)
        self.shape = (n_rows, stop - start)
        self._dropped = dropped

    def assemble(self, out=None) -> np.ndarray:
        """The samples, copied into ``out(shape)`` if that gives an array.

        Runs in the thread that sends the answer.

        Raises
        ------
        DroppedSamplesError
            The ring overwrote some of them before they were copied.
        """
        ring = self._stream.ring
        dest = out(self.shape) if out is not None else None
        if dest is None:
            dest = np.empty(self.shape, dtype=ring.dtype)
        if not ring.copy(self._rows, self._start, self._stop, dest):
            if self._dropped is not None:
                self._dropped()
            raise self._stream.dropped_error(self._start, self._stop)
        return dest


class Waiters:
    """One view's requests for samples its stream has not pushed yet, by stop.

    Parameters
    ----------
    stream : LiveStream
        The stream (its :meth:`~software.live.source.LiveStream.watch` is told the stop of
        the earliest request).
    dropped : callable, optional
        Called for each answer whose samples were dropped.

    Notes
    -----
    Without :meth:`run_with`, requests are answered in the thread that wakes the view
    (the producer's): a stream used in-process without a view.
    """

    def __init__(self, stream, dropped: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self.dropped = dropped
        self._run: Callable | None = None
        self._lock = threading.Lock()
        self._heap: list[tuple] = []        # (stop, seq, future, rows, start)
        self._seq = itertools.count()
        self._count = 0                      # futures added and not done
        self._woken = False
        self._closed = False

    def run_with(self, run: Callable[[Callable[[], None]], None]) -> None:
        """Answer in the thread ``run(job)`` runs jobs in (the view's delivery thread)."""
        self._run = run

    @property
    def count(self) -> int:
        """Requests waiting (withdrawn and answered ones not counted)."""
        return self._count

    def add(self, rows, start: int, stop: int) -> Future:
        """A future answered with a :class:`RingAnswer` once the stream's head reaches ``stop``.

        Cancelling it withdraws the request.

        Raises
        ------
        ServiceClosedError
            The view or the stream was closed.
        """
        fut: Future = Future()
        with self._lock:
            if self._closed or self._stream.closed:
                raise ServiceClosedError(f"the live stream {self._stream.name!r} was closed.")
            heap = self._heap
            earliest = heap[0][0] if heap else None
            heapq.heappush(heap, (stop, next(self._seq), fut, rows, start))
            self._count += 1
            if len(heap) > 2 * self._count + 64:   # withdrawn requests: drop their entries
                self._heap = [e for e in heap if not e[2].done()]
                heapq.heapify(self._heap)
        fut.add_done_callback(self._done)
        if earliest is None or stop < earliest:
            self._stream.watch(self, stop)
        return fut

    def _done(self, _fut: Future) -> None:
        with self._lock:
            self._count -= 1

    def wake(self) -> None:
        """The stream's head reached this view's earliest request (runs in the pusher's
        thread, outside the stream's lock): have :meth:`answer` run, once."""
        with self._lock:
            if self._woken or self._closed:
                return
            self._woken = True
        run = self._run
        if run is None:
            self.answer()
        else:
            run(self.answer)

    def answer(self) -> None:
        """Answer every request whose samples are all pushed; watch for the next one.

        Runs in the view's delivery thread (or the waker's, without :meth:`run_with`).
        """
        stream = self._stream
        head = stream.head
        ready = []
        with self._lock:
            self._woken = False
            heap = self._heap
            while heap and (heap[0][0] <= head or heap[0][2].done()):
                entry = heapq.heappop(heap)
                if not entry[2].done():
                    ready.append(entry)
            earliest = heap[0][0] if heap else None
        for stop, _, fut, rows, start in ready:
            if fut.set_running_or_notify_cancel():
                fut.set_result(RingAnswer(stream, rows, start, stop, self.dropped))
        if earliest is not None:
            stream.watch(self, earliest)

    def close(self) -> None:
        """Withdraw every waiting request (the view or the stream closed; idempotent)."""
        with self._lock:
            self._closed = True
            futures = [e[2] for e in self._heap]
            self._heap = []
        self._stream.unwatch(self)
        for fut in futures:
            fut.cancel()

    def __repr__(self) -> str:
        return f"<Waiters of {self._stream.name!r}: {self._count} waiting>"


class Watchlist:
    """The views waiting on a stream, each by the stop of its earliest request.

    Every method runs under the stream's lock. One valid entry per view (superseded ones
    are skipped when they come up, and dropped when they outnumber the valid ones).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Waiters]] = []
        self._at: dict[Waiters, int] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._at)

    def watch(self, waiters: Waiters, stop: int) -> None:
        """Wake ``waiters`` once the head reaches ``stop`` (or an earlier stop it gave)."""
        at = self._at.get(waiters)
        if at is not None and at <= stop:
            return
        self._at[waiters] = stop
        heapq.heappush(self._heap, (stop, next(self._seq), waiters))
        if len(self._heap) > 2 * len(self._at) + 64:
            self._heap = [(s, next(self._seq), w) for w, s in self._at.items()]
            heapq.heapify(self._heap)

    def due(self, head: int) -> list[Waiters]:
        """Take the views whose earliest request ends at or before ``head``."""
        heap, at = self._heap, self._at
        woken = []
        while heap and heap[0][0] <= head:
            stop, _, waiters = heapq.heappop(heap)
            if at.get(waiters) == stop:
                del at[waiters]
                woken.append(waiters)
        return woken

    def forget(self, waiters: Waiters) -> None:
        """Stop watching for ``waiters`` (it closed)."""
        self._at.pop(waiters, None)

    def clear(self) -> None:
        """Forget every view."""
        self._heap, self._at = [], {}
