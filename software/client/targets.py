"""What an iterator reads from, resolved once: the service, its bound method, the connection.

A target is a connection (its root), a :class:`~software.RemoteStream` or
:class:`~software.RemoteRoot`, an RPyC proxy of a view, or a view used in-process. Every
attribute of a proxy costs a round trip, so a :class:`Target` looks each up once. It also
knows the server's address, so that a connection that ended is reported as
:class:`~software.ServerGoneError` naming it, and how to withdraw a waiting request
(``withdraw(callback)``) within a time limit.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rpyc.core.async_ import AsyncResultTimeout
from rpyc.core.netref import BaseNetref

from .. import errors
from ..transport.socket_stream import format_address
from .root import RemoteRoot
from .calls import timed_call
from .stream import RemoteStream

__all__ = ["Target"]


def _is_netref(obj: Any) -> bool:
    """Whether ``obj`` is an RPyC proxy (checked locally: no round trip)."""
    return issubclass(type(obj), BaseNetref)


def _peer_of(conn: Any) -> str:
    """``host:port`` of the server behind ``conn``, or a description."""
    peer = getattr(conn, "peer", None)
    if isinstance(peer, str):
        return peer
    try:
        return format_address(conn._channel.stream.sock.getpeername())
    except Exception:  # noqa: BLE001 - closed, or not a socket
        return "the server"


class Target:
    """What an iterator reads from, resolved once.

    Parameters
    ----------
    target : object
        A connection, RemoteStream, RemoteRoot, proxy of a view, or in-process view.
    method : str
        The data method the iterator calls (``get_stream_segment``...).
    """

    __slots__ = ("target", "svc", "call", "conn", "peer", "n_samples", "growing",
                 "can_withdraw", "_withdraw_methods")

    def __init__(self, target: Any, method: str) -> None:
        self.target = target  # kept alive, so that its id() is not reused
        if type(target) in (RemoteStream, RemoteRoot):  # arrays in and out already
            self.svc, self.conn = target, target.connection
        elif _is_netref(target):
            self.svc, self.conn = target, object.__getattribute__(target, "____conn__")
        elif hasattr(target, "root") and hasattr(target, "serve"):  # a Connection
            self.svc, self.conn = target.root, target
        else:  # a StreamService used in-process
            self.svc, self.conn = target, None
        #: ``host:port`` of the server (None in-process).
        self.peer = None if self.conn is None else _peer_of(self.conn)
        self.call = getattr(self.svc, method)
        #: The view's length when last asked (a hint: asked again before the end).
        self.n_samples: int | None = None
        self.growing = False
        #: False once the server turned out not to have ``withdraw`` (an older one).
        self.can_withdraw = True
        self._withdraw_methods: dict = {}

    @property
    def served(self) -> bool:
        """Whether a ServingThread serves the connection (then callbacks arrive alone)."""
        serving = getattr(self.conn, "serving_thread", None)
        return serving is not None and not serving.closed

    @property
    def ended(self) -> bool:
        """Whether the connection is closed (the server closed it, died or went silent)."""
        return self.conn is not None and bool(getattr(self.conn, "closed", False))

    def gone_error(self, cause: BaseException | None = None,
                   why: str | None = None) -> errors.ServerGoneError:
        """The error for a call on a connection that ended (not raised); ``why``: what
        this end noticed (a ClientConnection keeps its own)."""
        made = getattr(self.conn, "gone_error", None)
        if made is not None:
            return made(cause)
        if why is None:
            why = f"it closed the connection ({cause})" if cause is not None \
                else "the connection is closed"
        return errors.ServerGoneError(
            f"the mefstream server at {self.peer} is gone: {why}. Restart it (python "
            f"start.py ...) and connect again.")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn an ``EOFError`` of the connection into a ServerGoneError naming the server."""
        try:
            yield
        except errors.ServerGoneError:
            raise
        except EOFError as exc:
            if self.conn is None:
                raise
            raise self.gone_error(exc) from exc

    def withdraw(self, callback: Callable[[Any], Any], timeout: float) -> int | None:
        """Withdraw the requests waiting on the server with ``callback``.

        Parameters
        ----------
        callback : callable
            The very object given with the requests.
        timeout : float
            Seconds the server has to answer.

        Returns
        -------
        int or None
            How many were withdrawn; None when the server cannot withdraw (older).

        Raises
        ------
        TimeoutError
            The server did not answer within ``timeout``.
        """
        if not self.can_withdraw:
            return None
        svc = self.svc
        try:
            if type(svc) in (RemoteStream, RemoteRoot):
                return int(svc.withdraw(callback, timeout=timeout))
            if _is_netref(svc):
                return int(timed_call(svc, "withdraw", (callback,), timeout,
                                      self._withdraw_methods))
            local = getattr(svc, "exposed_withdraw", None) or getattr(svc, "withdraw")
            return int(local(callback))
        except AttributeError:
            self.can_withdraw = False
            return None
        except AsyncResultTimeout as exc:
            raise TimeoutError(f"the server at {self.peer} did not answer within "
                               f"{timeout:g} s") from exc
