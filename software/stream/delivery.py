"""Callback delivery: one thread per view sends answers to the client, a watchdog notes hangs.

A :class:`~software.stream.service.StreamService` hands each answer that was not ready at call
time to its :class:`CallbackDeliverer` (from the thread that completed the read); the
deliverer's own thread encodes it and calls the client's callback with ``rpyc.async_``,
so a slow, hung or dead client delays only its own view, never the readers, a live
stream's producer or another client. A live view also answers its waiting requests in
this thread (:meth:`CallbackDeliverer.call_soon`), and a request the client withdrew
meanwhile is skipped.
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future

import rpyc

from ..errors import StreamError
from ..transport.wire import encode_error
from .counters import Counters

__all__ = ["CallbackDeliverer", "async_callback"]

logger = logging.getLogger(__name__)


def async_callback(callback):
    """Wrap a client callback so calling it never waits for the client.

    Parameters
    ----------
    callback : callable
        An RPyC proxy of the client's function, or a local callable (in-process use).

    Returns
    -------
    callable
        ``rpyc.async_(callback)``, or ``callback`` itself when it is local.
    """
    try:
        return rpyc.async_(callback)
    except TypeError:  # a local callable (in-process use)
        return callback


class CallbackDeliverer:
    """A view's callback delivery thread: one queue, one thread, started on first use.

    Callbacks go out with ``rpyc.async_``: the thread never waits for the client to run
    them. Each one sent is outstanding until the client's reply arrives. A watchdog timer
    (at most one per view, armed for the oldest outstanding callback and re-armed when it
    fires, so a streaming view starts one thread per ``callback_timeout``, never one per
    callback) notes those that have not returned within ``callback_timeout`` seconds: a
    WARNING the first time for the view, then only the ``hung`` counter.

    A client that stops reading its socket (its callback hangs in its only serving thread)
    makes the send itself block once the socket buffers are full (from a few hundred kB
    to tens of MB, as the kernel tunes them). Only this view's thread waits, until the
    client reads again, disconnects or the server closes; the watchdog still notes it,
    and the answers queued meanwhile stay in memory.

    Parameters
    ----------
    name : str
        Thread name, also the view's name in log messages (the path, never a password).
    callback_timeout : float
        Seconds after which a callback that has not returned is noted.
    counters : Counters, optional
        The server's event counters: ``callbacks_delivered``, ``callbacks_failed``,
        ``client_callback_errors`` and ``hung_callbacks`` are added to them as well as to
        this deliverer's own ``delivered``, ``failed``, ``client_errors`` and ``hung``.

    Notes
    -----
    :meth:`put` may be called from any thread (the pool's result thread, retry threads,
    the connection's serving thread): the thread is started under a lock, so one view
    always has exactly one delivery thread, and callbacks put by one thread go out in
    the order it put them.
    """

    def __init__(self, name: str, callback_timeout: float = 30.0,
                 counters: Counters | None = None) -> None:
        self._name = name
        self._counters = counters
        self._timeout = float(callback_timeout)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._start_lock = threading.Lock()  # guards _thread, _closed and enqueueing
        self._lock = threading.Lock()  # guards _outstanding and _watch
        self._outstanding: deque[list] = deque()  # [sent_at, returned], oldest first
        self._watch: threading.Timer | None = None
        self._sending: list | None = None  # the entry whose send is under way
        self._client = ""
        self.delivered = 0
        self.failed = 0
        self.client_errors = 0
        self.hung = 0

    def put(self, callback, future: Future, encode, ticket=None) -> None:
        """Queue a callback of ``future``'s outcome (runs in the thread completing it).

        Parameters
        ----------
        callback : callable
            What :func:`async_callback` returned for the client's function.
        future : Future
            A done future: its result is encoded and sent, or its exception.
        encode : callable
            Turns the result into the wire value (in the delivery thread). A
            :class:`~software.errors.StreamError` it raises (a live ring overwrote the
            samples meanwhile) is sent to the client instead.
        ticket : Ticket, optional
            The request's :class:`~software.stream.waiting.Ticket`: not sent when it was
            withdrawn meanwhile, finished once sent (or failed).
        """
        self._enqueue((callback, future, encode, ticket))

    def call_soon(self, job) -> None:
        """Run ``job()`` in this view's delivery thread, in turn with the callbacks.

        A live stream's push wakes a view this way: the view then answers its requests
        (and copies their samples) in this thread, never in the producer's.
        """
        self._enqueue((job,))

    def start(self) -> None:
        """Start the delivery thread now rather than at the first callback (idempotent)."""
        with self._start_lock:
            self._start_thread()

    def _start_thread(self) -> None:
        """Start the thread unless it runs or this deliverer closed (``_start_lock`` held)."""
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _enqueue(self, item: tuple) -> None:
        with self._start_lock:
            if self._closed:
                return
            self._start_thread()
            self._queue.put(item)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _count(self, name: str) -> None:
        if self._counters is not None:
            self._counters.add(name)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._closed:
                return
            if len(item) == 1:   # a job (a live view answering its requests)
                try:
                    item[0]()
                except Exception:
                    logger.exception("a job of %s failed", self._name)
                continue
            callback, future, encode, ticket = item
            if ticket is not None and not ticket.claim():
                continue   # withdrawn by the client
            entry = [0.0, False]
            try:
                value = self._value(future, encode)
                if not self._client:
                    self._client = self._peer(callback) or "in-process"
                entry[0] = time.monotonic()
                self._track(entry)
                self._sending = entry
                reply = callback(value)   # blocks only while the client's socket is full
                self.delivered += 1
                self._count("callbacks_delivered")
            except Exception:  # a dead or broken client: note it and go on
                entry[1] = True
                self.failed += 1
                self._count("callbacks_failed")
                logger.warning("callback delivery failed in %s", self._name, exc_info=True)
                continue
            finally:
                self._sending = None
                if ticket is not None:
                    ticket.finish()
            if hasattr(reply, "add_callback"):  # an rpyc.async_ call: hear when it returns
                reply.add_callback(functools.partial(self._replied, entry))
            else:  # a local callable (in-process use) has returned already
                entry[1] = True

    @staticmethod
    def _value(future: Future, encode):
        """The wire value of a done future: its encoded result, or its error."""
        exc = future.exception()
        if exc is None:
            try:
                return encode(future.result())
            except StreamError as error:   # e.g. the samples were overwritten meanwhile
                exc = error
        return encode_error(exc)

    def _replied(self, entry: list, reply) -> None:
        """Runs in the connection's serving thread when the client's callback returned."""
        entry[1] = True
        if reply.error:
            self.client_errors += 1
            self._count("client_callback_errors")
            if self.client_errors == 1:  # once per view: a broken callback raises every time
                logger.warning("a client callback of %s raised; the client keeps receiving "
                               "data (further errors are counted, not logged)", self._name)

    # ---- watchdog -------------------------------------------------------------------

    def _track(self, entry: list) -> None:
        """Note ``entry`` as outstanding; arm the watchdog if none is armed."""
        with self._lock:
            outstanding = self._outstanding
            while outstanding and outstanding[0][1]:  # returned: forget them
                outstanding.popleft()
            outstanding.append(entry)
            self._arm()

    def _arm(self) -> None:
        """Start a timer for the oldest outstanding callback (``_lock`` held)."""
        if self._watch is None and self._outstanding and not self._closed:
            delay = self._outstanding[0][0] + self._timeout - time.monotonic()
            self._watch = threading.Timer(max(delay, 0.0), self._check)
            self._watch.name = f"watchdog-{self._name}"
            self._watch.daemon = True
            self._watch.start()

    def _check(self) -> None:
        """Runs in the watchdog timer's thread: note callbacks past the time limit."""
        try:
            now = time.monotonic()
            late: list[list] = []
            with self._lock:
                self._watch = None
                outstanding = self._outstanding
                while outstanding and (outstanding[0][1]
                                       or now - outstanding[0][0] >= self._timeout):
                    entry = outstanding.popleft()
                    if not entry[1]:
                        late.append(entry)
                first = bool(late) and self.hung == 0
                self.hung += len(late)
                if late and self._counters is not None:
                    self._counters.add("hung_callbacks", len(late))
                self._arm()
            if not first or self._closed:
                return
            sending = self._sending
            if late[0] is sending:
                what = (f"sending it a callback has been blocked for {now - sending[0]:.1f} s "
                        f"(callback_timeout {self._timeout:g} s): the client has stopped "
                        f"reading its connection")
            else:
                what = (f"the client's callback has been running for {now - late[0][0]:.1f} "
                        f"s (callback_timeout {self._timeout:g} s): it is hung or slow")
                if sending is not None:
                    what += (f"; sending it the next one has been blocked for "
                             f"{now - sending[0]:.1f} s (the client stopped reading)")
            logger.warning("%s (client %s): %s; this view's next callbacks wait behind it, "
                           "other clients are unaffected (further hung callbacks of this view "
                           "are counted, not logged)", self._name, self._client, what)
        except Exception:
            logger.exception("callback watchdog of %s failed", self._name)

    @staticmethod
    def _peer(callback) -> str:
        """``host:port`` of the client behind an ``rpyc.async_`` callback, or ''."""
        try:
            endpoints = callback.proxy.____conn__._config["endpoints"]
            return "%s:%s" % tuple(endpoints[1][:2])
        except Exception:  # noqa: BLE001 - a local callable, or another transport
            return ""

    def close(self) -> None:
        """Drop pending callbacks and stop the thread and the watchdog (idempotent).

        Returns at once; the thread ends after the callback it is sending, if any.
        """
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        with self._lock:
            watch, self._watch = self._watch, None
            self._outstanding.clear()
        if watch is not None:
            watch.cancel()
        self._queue.put(None)

    def __enter__(self) -> CallbackDeliverer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._thread else "idle")
        return (f"<CallbackDeliverer {self._name} {state} delivered={self.delivered} "
                f"failed={self.failed} client_errors={self.client_errors} hung={self.hung}>")
