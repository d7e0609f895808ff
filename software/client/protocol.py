"""The client's RPyC connection: what it accepts from a server, and how it tells the server is gone.

:class:`ClientConnection` is the :class:`~software.transport.connection.FastConnection`
that :func:`~software.get_connection` makes. It differs in three ways:

* a remote exception is rebuilt by :func:`rebuild_exception` from a fixed table
  (mefstream's errors and Python's built-in ones), never by importing a module the peer
  names (RPyC's ``import_custom_exceptions``); anything else becomes a
  :class:`~software.errors.RemoteError` carrying the remote class name and message;
* a call that finds the connection closed, or that the server stopped answering, raises
  :class:`~software.errors.ServerGoneError` naming the server (``host:port``) and why;
* :meth:`ClientConnection.declare_gone` ends a connection whose server stopped answering
  pings (see :class:`~software.transport.serving.ServingThread`): every call waiting on it
  wakes with that error.
"""
from __future__ import annotations

import builtins
import logging
import socket
from typing import Any

from rpyc.core import consts

from .. import errors
from ..transport.connection import FastConnection

__all__ = ["ClientConnection", "rebuild_exception"]

logger = logging.getLogger(__name__)


def rebuild_exception(raw: Any) -> BaseException | type[StopIteration]:
    """The exception a server sent (RPyC's ``vinegar.dump`` form), from a fixed table.

    Parameters
    ----------
    raw : tuple
        ``((module, class name), args, attributes, traceback text)`` as the server sent it.

    Returns
    -------
    BaseException
        An instance of the very class for mefstream's errors (:data:`software.errors.REBUILT`)
        and for the builtins' ``Exception`` subclasses (``ValueError``, ``KeyError``...),
        with the server's traceback as a note; anything else (another module, or
        ``SystemExit``/``KeyboardInterrupt``) is a :class:`~software.errors.RemoteError`
        whose message starts with the remote ``module.name``. No module is imported and no
        attribute the server sent is set.
    """
    if raw == consts.EXC_STOP_ITERATION:
        return StopIteration
    try:
        (module, name), args, _attributes, traceback_text = raw
        module, name = str(module), str(name)
        args = tuple(args) if type(args) is tuple else (str(args),)
    except (TypeError, ValueError):
        return errors.RemoteError(f"the server sent an error this client cannot read: "
                                  f"{raw!r:.200}")
    cls = errors.REBUILT.get((module, name))
    if cls is None and module == builtins.__name__:
        found = getattr(builtins, name, None)
        if isinstance(found, type) and issubclass(found, Exception):
            cls = found
    exc = None
    if cls is not None:
        try:
            exc = cls(*args)
        except Exception:  # noqa: BLE001 - arguments the class refuses: a generic error
            exc = None
    if exc is None:
        message = str(args[0]) if len(args) == 1 else ", ".join(map(str, args))
        exc = errors.RemoteError(f"{module}.{name}: {message}")
        exc.remote_class = f"{module}.{name}"
    if isinstance(traceback_text, str) and traceback_text \
            and traceback_text != "<traceback denied>":
        exc._remote_tb = traceback_text
        if hasattr(exc, "add_note"):
            exc.add_note(f"Remote traceback:\n{traceback_text.rstrip()}")
    return exc


class ClientConnection(FastConnection):
    """The connection :func:`~software.get_connection` makes (see the module docstring).

    Parameters
    ----------
    root, channel, config
        As for :class:`rpyc.core.protocol.Connection`.

    Attributes
    ----------
    peer : str
        ``host:port`` of the server, for error messages.
    gone : str
        Why the server is deemed gone (empty while it is there).
    """

    def __init__(self, root: Any, channel: Any, config: Any = {}) -> None:
        super().__init__(root, channel, config)
        self.peer = getattr(getattr(channel, "stream", None), "peer", "the server")
        self.gone = ""

    #: Seconds :meth:`close` waits for the server to acknowledge (a server gone silent
    #: would otherwise hold it for the whole ``sync_request_timeout``).
    CLOSE_TIMEOUT = 2.0

    def _unbox_exc(self, raw: Any) -> BaseException:
        return rebuild_exception(raw)

    def close(self) -> None:
        """Close the connection, waiting at most :attr:`CLOSE_TIMEOUT` for the server."""
        if not self.closed:
            self._config["sync_request_timeout"] = min(
                self._config["sync_request_timeout"], self.CLOSE_TIMEOUT)
        super().close()

    def sync_request(self, handler: int, *args: Any) -> Any:
        """RPyC's synchronous request; a connection that ended raises ServerGoneError."""
        try:
            return super().sync_request(handler, *args)
        except errors.ServerGoneError:
            raise
        except EOFError as exc:
            if handler == consts.HANDLE_CLOSE:
                raise
            raise self.gone_error(exc) from exc

    def gone_error(self, cause: BaseException | None = None) -> errors.ServerGoneError:
        """The error of a call on this connection once the server is gone (not raised)."""
        why = self.gone or (f"it closed the connection ({cause})" if cause is not None
                            else "the connection is closed")
        return errors.ServerGoneError(
            f"the mefstream server at {self.peer} is gone: {why}. Restart it (python "
            f"start.py ...) and connect again.")

    def declare_gone(self, why: str, log: bool = True) -> None:
        """End a connection whose server stopped answering (any thread).

        The socket is shut down, so that every thread waiting on it wakes with an
        ``EOFError`` (calls: :class:`~software.errors.ServerGoneError` saying ``why``);
        a server that is gone cannot take part in a polite close. ``log``: say so at
        WARNING (the first time).
        """
        if not self.gone:
            self.gone = why
            if log:
                logger.warning("the server at %s is gone: %s", self.peer, why)
        try:
            self._channel.stream.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError, EOFError):
            pass  # closed already (RPyC's closed stream raises EOFError)
