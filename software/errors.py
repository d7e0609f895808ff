"""Exceptions of mefstream, and the RPyC configuration that rebuilds them on the client.

Every error derives from :class:`StreamError` and from the built-in it resembles, so callers
can catch either. Messages name the argument, the value and the fix.
"""
from __future__ import annotations


class StreamError(Exception):
    """Base class of every mefstream error."""

    def __reduce__(self):
        # OSError's own reduce drops the message when an error crosses a process boundary
        return (type(self), self.args)

    def __str__(self) -> str:
        # RPyC rebuilds exceptions with __new__ and sets args; OSError's str ignores args
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # a plain rpyc.connect client rebuilds a remote error as a subclass that RPyC's
        # vinegar makes inside a function; show the class it stands for in tracebacks
        # ("NoFileOpenError: ...", not "_get_exception_class.<locals>.Derived: ...")
        if cls.__module__ == "rpyc.core.vinegar" and "<locals>" in cls.__qualname__:
            cls.__qualname__ = cls.__mro__[1].__qualname__


class InvalidArgumentError(StreamError, ValueError):
    """An argument has a wrong value (negative index, NaN, unknown option...)."""


class InvalidTypeError(StreamError, TypeError):
    """An argument has a wrong type (a float where an integer index is needed...)."""


class InvalidRangeError(InvalidArgumentError):
    """A sample index, range or time window is out of bounds or too large."""


class DroppedSamplesError(InvalidRangeError):
    """A live stream's ring no longer holds the samples asked for (they were dropped)."""


class PushRefusedError(StreamError, PermissionError):
    """This connection may not push samples into the live stream."""


class UnknownChannelError(StreamError, KeyError):
    """A channel name or row index that the session does not have."""


class MixedRateError(InvalidArgumentError):
    """A channel selection mixes sampling rates."""


class SessionError(StreamError, OSError):
    """A session cannot be opened."""


class NotMefSessionError(SessionError, FileNotFoundError):
    """The path does not exist or is not a MEF3 session directory."""


class OutsideDataRootError(SessionError, PermissionError):
    """The path resolves outside the server's data root."""


class WrongPasswordError(SessionError, PermissionError):
    """The password is missing, wrong, or not the level-2 (data) password."""


class SessionExistsError(SessionError, FileExistsError):
    """A session to be written exists already (pass ``overwrite=True`` to replace it)."""


class CorruptSessionError(SessionError):
    """The session's files are truncated or damaged."""


class ReaderError(StreamError, RuntimeError):
    """Reading failed in the reader processes (after the retries)."""


class ServiceClosedError(StreamError, ConnectionError):
    """The file was closed or the server is shutting down."""


class NoFileOpenError(StreamError, AttributeError):
    """A method of an open file was asked of the root service: call ``open_file`` first."""


class WaitingLimitError(StreamError, RuntimeError):
    """This connection has as many callback requests waiting as the server allows."""


class ServerGoneError(StreamError, ConnectionError, EOFError):
    """The server closed the connection, died, or stopped answering (the network dropped).

    Also an ``EOFError``, which RPyC raises for a closed connection: code that caught that
    keeps working. The message names the server (``host:port``).
    """


class RemoteError(StreamError, RuntimeError):
    """A server raised an exception of a class this client does not rebuild.

    A client rebuilds only mefstream's own errors and Python's built-in ones (a fixed table,
    :data:`REBUILT`), never importing a module a peer names. Anything else arrives as this
    error, its message starting with the remote class's ``module.name``.

    Attributes
    ----------
    remote_class : str
        ``module.name`` of the class the server raised.
    """

    remote_class = ""


#: Every exception class of mefstream a client may receive from a server.
EXCEPTIONS = (StreamError, InvalidArgumentError, InvalidTypeError, InvalidRangeError,
              DroppedSamplesError, PushRefusedError, UnknownChannelError, MixedRateError,
              SessionError, NotMefSessionError, OutsideDataRootError, WrongPasswordError,
              CorruptSessionError, ReaderError, ServiceClosedError, NoFileOpenError,
              SessionExistsError, WaitingLimitError, ServerGoneError, RemoteError)

#: The fixed table a client rebuilds remote errors from: ``(module, class name) -> class``
#: for mefstream's errors (the builtins' ``Exception`` subclasses are rebuilt too; see
#: :func:`software.client.protocol.rebuild_exception`). Nothing else is ever imported or
#: instantiated at a peer's request.
REBUILT = {(cls.__module__, cls.__name__): cls for cls in EXCEPTIONS}
