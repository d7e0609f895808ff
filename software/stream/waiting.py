"""Callback requests still to be answered: counted per connection, withdrawable by callback.

Every request a view registers with a callback (its answer was not ready) gets a
:class:`Ticket` until its callback has been sent, withdrawn, or the view closed. The
tickets of one connection are counted in the server-wide :class:`WaitingBudget`, so one
client that floods the server with waiting requests hits its own limit, never the
others'; :class:`Tickets` keeps one view's tickets by the callback they will call, so a
client can withdraw the requests it no longer waits for (``svc.withdraw(callback)``)::

    serve (serving thread) --register--> Ticket --claim/finish (delivery thread)
    exposed_withdraw --------withdraw--> Ticket withdrawn: never calls back
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from rpyc.core.netref import BaseNetref

from ..errors import WaitingLimitError
from .counters import Counters

__all__ = ["DEFAULT_MAX_WAITING", "Ticket", "Tickets", "WaitingBudget", "callback_key",
           "owner_of"]

#: Callback requests one connection may have waiting at once (``--max-waiting``).
DEFAULT_MAX_WAITING = 10_000

_WAITING, _SENDING, _DONE = 0, 1, 2


def callback_key(callback: object) -> object:
    """What identifies ``callback`` while a request holds it.

    An RPyC proxy is identified by its ``id_pack`` (the client object's identity: RPyC
    hands out the same proxy for the same object while the server holds it, and a new
    proxy of the same object carries the same ``id_pack``); a local callable by equality
    (``obj.method`` makes a new but equal bound method each time), or by identity when it
    cannot be hashed.
    """
    if issubclass(type(callback), BaseNetref):   # checked locally: no round trip
        return ("proxy", object.__getattribute__(callback, "____id_pack__"))
    try:
        hash(callback)
    except TypeError:
        return ("local id", id(callback))
    return ("local", callback)


def owner_of(callback: object) -> object:
    """The RPyC connection a callback proxy calls back over; None for a local callable."""
    if issubclass(type(callback), BaseNetref):
        return object.__getattribute__(callback, "____conn__")
    return None


class WaitingBudget:
    """Callback requests waiting per connection, each connection bounded on its own.

    One object per server (in :class:`~software.stream.options.ServiceOptions`); its
    counts go to the server's ``waiting_requests`` counter too.

    Parameters
    ----------
    limit : int
        Requests one connection may have waiting.
    """

    def __init__(self, limit: int = DEFAULT_MAX_WAITING) -> None:
        self.limit = int(limit)
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}    # id(connection) -> waiting requests

    def take(self, owner: object) -> None:
        """Count one more waiting request of ``owner``'s connection.

        Raises
        ------
        WaitingLimitError
            The connection has :attr:`limit` requests waiting already.
        """
        key = id(owner)
        with self._lock:
            count = self._counts.get(key, 0)
            if count >= self.limit:
                raise WaitingLimitError(
                    f"this connection has {count} callback requests waiting, the limit per "
                    f"connection (max_waiting={self.limit}, the server's --max-waiting); "
                    f"wait for their answers, or withdraw the ones you no longer wait for "
                    f"(svc.withdraw(callback)), before asking for more.")
            self._counts[key] = count + 1

    def give(self, owner: object) -> None:
        """One waiting request of ``owner``'s connection is answered or withdrawn."""
        key = id(owner)
        with self._lock:
            count = self._counts.get(key, 0) - 1
            if count > 0:
                self._counts[key] = count
            else:
                self._counts.pop(key, None)

    def waiting(self, owner: object = None) -> int:
        """Requests ``owner``'s connection has waiting (None: in-process callbacks)."""
        with self._lock:
            return self._counts.get(id(owner), 0)

    def __repr__(self) -> str:
        with self._lock:
            return f"<WaitingBudget limit={self.limit} connections={len(self._counts)}>"


class Ticket:
    """One callback request of a view, from registration until its callback went out.

    Attributes
    ----------
    key : object
        :func:`callback_key` of the callback.
    nbytes : int
        Bytes of its answer while the delivery thread holds it (counted in
        ``pending_answer_bytes``).
    """

    __slots__ = ("key", "owner", "cancel", "nbytes", "state", "_tickets")

    def __init__(self, tickets: Tickets, key: object, owner: object,
                 cancel: Callable[[], object] | None) -> None:
        self._tickets = tickets
        self.key = key
        self.owner = owner
        self.cancel = cancel
        self.nbytes = 0
        self.state = _WAITING

    def claim(self) -> bool:
        """The delivery thread is about to send the answer: False if it was withdrawn."""
        return self._tickets._claim(self)

    def hold(self, nbytes: int) -> None:
        """The answer was assembled: count the bytes it holds until :meth:`finish`."""
        self.nbytes = int(nbytes)
        self._tickets._counters.add("pending_answer_bytes", self.nbytes)

    def finish(self) -> None:
        """Sent, failed or dropped: stop counting it (idempotent)."""
        self._tickets._finish(self)


class Tickets:
    """One view's callback requests still to be answered, by callback.

    Parameters
    ----------
    budget : WaitingBudget
        The server's per-connection counts.
    counters : Counters
        The server's counters (``waiting_requests``, ``pending_answer_bytes``).
    """

    def __init__(self, budget: WaitingBudget, counters: Counters) -> None:
        self._budget = budget
        self._counters = counters
        self._lock = threading.Lock()
        self._by_key: dict[object, set[Ticket]] = {}
        self._closed = False

    def register(self, callback: object,
                 cancel: Callable[[], object] | None = None) -> Ticket:
        """A ticket for a request answered later through ``callback``.

        Parameters
        ----------
        callback : callable
            The client's callback (an RPyC proxy, or a local callable).
        cancel : callable, optional
            Withdraws the request from its source (a live stream's waiting list).

        Raises
        ------
        WaitingLimitError
            The callback's connection has as many requests waiting as it may.
        """
        owner = owner_of(callback)
        self._budget.take(owner)
        ticket = Ticket(self, callback_key(callback), owner, cancel)
        with self._lock:
            closed = self._closed
            if not closed:
                self._by_key.setdefault(ticket.key, set()).add(ticket)
        self._counters.add("waiting_requests")
        if closed and self._finish(ticket) and cancel is not None:
            cancel()
        return ticket

    @property
    def count(self) -> int:
        """Tickets of this view not finished."""
        with self._lock:
            return sum(len(s) for s in self._by_key.values())

    def _claim(self, ticket: Ticket) -> bool:
        with self._lock:
            if ticket.state != _WAITING:
                return False
            ticket.state = _SENDING
            return True

    def _finish(self, ticket: Ticket) -> bool:
        with self._lock:
            if ticket.state == _DONE:
                return False
            ticket.state = _DONE
            same = self._by_key.get(ticket.key)
            if same is not None:
                same.discard(ticket)
                if not same:
                    del self._by_key[ticket.key]
        self._budget.give(ticket.owner)
        self._counters.add("waiting_requests", -1)
        if ticket.nbytes:
            self._counters.add("pending_answer_bytes", -ticket.nbytes)
        return True

    def withdraw(self, callback: object) -> int:
        """Withdraw the requests registered with ``callback`` that have not called back.

        Returns
        -------
        int
            How many were withdrawn (a request whose callback is being sent is not).
        """
        key = callback_key(callback)
        with self._lock:
            mine = [t for t in self._by_key.get(key, ()) if t.state == _WAITING]
            for ticket in mine:
                ticket.state = _SENDING    # claimed here: the delivery thread skips it
        for ticket in mine:
            self._finish(ticket)
            if ticket.cancel is not None:
                ticket.cancel()
        return len(mine)

    def close(self) -> None:
        """Finish and cancel every ticket (the view closed; idempotent)."""
        with self._lock:
            self._closed = True
            every = [t for same in self._by_key.values() for t in same]
        for ticket in every:
            if self._finish(ticket) and ticket.cancel is not None:
                ticket.cancel()
