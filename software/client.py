"""Client helpers: a connection that serves callbacks promptly, and CREPE's iterators.

``get_connection`` waits for the server, connects with the fast transport and keeps a
:class:`~software.transport.ServingThread` serving the connection, so callbacks from the
server run within about a millisecond. The iterators keep their position as plain data
(:attr:`StreamSegmentIterator.position`), so a long analysis can resume after a restart.
"""
from __future__ import annotations

import logging
import ssl
import threading
import time

import rpyc
from rpyc.core.netref import BaseNetref

from . import errors
from .shared_memory import negotiate
from .transport import ServingThread, fast_connect
from .wire import decode_segment

logger = logging.getLogger(__name__)

#: Default port of the root service (``settings.RPCPORTS["MEF"]``).
DEFAULT_PORT = 18861

#: Client-side RPyC settings: rebuild mefstream's exceptions, send nothing by pickle.
CLIENT_RPYC_CONFIG = {
    "allow_public_attrs": False,
    "allow_pickle": False,
    "import_custom_exceptions": True,
    "instantiate_custom_exceptions": True,
    "sync_request_timeout": 300,
}


def get_connection(port: int | None = None, host: str = "localhost", timeout: float = 10,
                   *, keyfile: str | None = None, certfile: str | None = None,
                   ca_certs: str | None = None, config: dict | None = None,
                   shared_memory: bool = True, shared_memory_mb: float = 128,
                   max_frame: int | None = None) -> rpyc.Connection:
    """Connect to a mefstream server, waiting up to ``timeout`` seconds for it to come up.

    Parameters
    ----------
    port : int, optional
        Server port; default 18861 (``RPCPORTS["MEF"]``).
    host : str
        Server host.
    timeout : float
        Seconds to keep retrying while the server is not listening yet.
    keyfile, certfile, ca_certs : str, optional
        Client key and certificate, and the CA that signed the server's certificate, for a
        server started with TLS.
    config : dict, optional
        Extra RPyC settings (copied).
    shared_memory : bool
        When client and server share a host (and user), take answers from a shared-memory
        area instead of the socket (see :mod:`software.shared_memory`); values and
        :func:`~software.decode_segment` stay the same. Falls back to the socket silently.
    shared_memory_mb : float
        Size of that area in MiB: the answers in flight at once must fit (larger ones
        come through the socket). Memory is taken only as it is used.
    max_frame : int, optional
        Largest message accepted from the server, in bytes (default 257 MiB: the largest
        answer of a server with the default ``--max-request-mb 256``, plus framing). Raise
        it for a server started with a larger ``--max-request-mb``.

    Returns
    -------
    rpyc.Connection
        With ``conn.serving_thread`` serving callbacks; ``conn.close()`` stops it too.
        ``conn.shared_memory`` is the client's area, or None when answers come through
        the socket.

    Raises
    ------
    ConnectionRefusedError
        Nobody listened on ``host:port`` within ``timeout``.
    PermissionError
        The server refused this client's certificate (or its lack of one), or the server's
        certificate is not signed by ``ca_certs``.
    ConnectionError
        The server closed the connection before answering, or did not answer the TLS
        handshake: TLS on one side only.
    """
    port = DEFAULT_PORT if port is None else int(port)
    settings = dict(CLIENT_RPYC_CONFIG)
    settings.update(config or {})
    tls = certfile is not None or ca_certs is not None
    deadline = time.monotonic() + float(timeout)
    delay = 0.02
    while True:
        try:
            conn = fast_connect(host, port, config=settings, keyfile=keyfile,
                                certfile=certfile, ca_certs=ca_certs,
                                timeout=min(3.0, max(float(timeout), 0.1)),
                                max_frame=max_frame)
            break
        except ssl.SSLError as exc:  # the handshake failed: retrying will not help
            raise _refused(host, port, tls, certfile, exc) from exc
        except (ConnectionRefusedError, OSError) as exc:
            if tls and isinstance(exc, TimeoutError) and "handshake" in str(exc):
                raise _refused(host, port, tls, certfile, exc) from exc
            if isinstance(exc, OSError) and exc.errno not in (None, 111, 61, 10061) \
                    and not isinstance(exc, ConnectionRefusedError):
                raise
            if time.monotonic() + delay > deadline:
                raise ConnectionRefusedError(
                    f"no mefstream server on {host}:{port} after {timeout:g} s; start one "
                    f"with 'python start.py' (or pass the right port=...).") from exc
            time.sleep(delay)  # waiting for a server process to bind, not synchronising
            delay = min(delay * 2, 0.5)
    # One round trip on this thread before the serving thread starts: a TLS 1.3 server
    # refuses a client certificate only after the handshake, and a TLS server drops a plain
    # client at its first request. Raced by the serving thread, either showed up as a
    # bare EOFError (or rpyc's "release unlocked lock") at the caller's first call.
    try:
        conn.root
    except (EOFError, OSError) as exc:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing a connection that is already broken
            pass
        raise _refused(host, port, tls, certfile, exc) from exc
    try:
        area = negotiate(conn, int(shared_memory_mb * 2**20)) if shared_memory else None
    except BaseException:
        conn.close()
        raise
    conn.shared_memory = area
    serving = ServingThread(conn)
    conn.serving_thread = serving
    close = conn.close

    def close_all(*args, **kwargs):
        serving.close()
        try:
            return close(*args, **kwargs)
        finally:
            if area is not None:
                area.close()

    conn.close = close_all
    return conn


def _refused(host: str, port: int, tls: bool, certfile: str | None,
             exc: BaseException) -> OSError:
    """A clear error for a connection the server refused (or TLS on one side only)."""
    cause = exc
    while not isinstance(cause, ssl.SSLError) and cause.__cause__ is not None:
        cause = cause.__cause__  # the transport wraps socket errors in EOFError
    where = f"{host}:{port}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return PermissionError(
            f"the certificate of the server at {where} is not signed by ca_certs "
            f"({cause.verify_message}); pass the CA that signed the server's --tls-cert.")
    if isinstance(cause, ssl.SSLError):
        mine = ("a certificate from certfile" if certfile is not None
                else "no client certificate (certfile=None)")
        return PermissionError(
            f"the server at {where} refused the TLS connection ({cause.reason or cause}); "
            f"this client sent {mine}. A server started with --tls-ca accepts only client "
            f"certificates signed by that CA: pass keyfile= and certfile= of one.")
    if tls and isinstance(exc, TimeoutError):
        return ConnectionError(
            f"the server at {where} did not answer the TLS handshake ({exc}); it probably "
            f"runs without TLS: connect without keyfile/certfile/ca_certs, or start it with "
            f"--tls-cert/--tls-key.")
    if tls:
        return ConnectionError(
            f"the server at {where} closed the TLS connection before answering ({exc!r}); "
            f"if it was started with --tls-ca, pass keyfile= and certfile= of a client "
            f"certificate signed by that CA.")
    return ConnectionError(
        f"the server at {where} closed the connection before answering ({exc!r}); if it "
        f"runs with TLS (start.py --tls-cert), pass ca_certs= (and keyfile=, certfile=).")


def _is_netref(obj) -> bool:
    """Whether ``obj`` is an RPyC proxy (checked locally: no round trip)."""
    return issubclass(type(obj), BaseNetref)


class _Target:
    """What an iterator reads from, resolved once: the service, its bound method, the
    connection. Every attribute of a proxy costs a round trip, so nothing is looked up
    again per chunk."""

    __slots__ = ("target", "svc", "call", "conn", "n_samples")

    def __init__(self, target, method: str) -> None:
        self.target = target  # kept alive, so that its id() is not reused
        if _is_netref(target):
            self.svc, self.conn = target, object.__getattribute__(target, "____conn__")
        elif hasattr(target, "root") and hasattr(target, "serve"):  # a Connection
            self.svc, self.conn = target.root, target
        else:  # a StreamService used in-process
            self.svc, self.conn = target, None
        self.call = getattr(self.svc, method)
        self.n_samples: int | None = None

    @property
    def served(self) -> bool:
        """Whether a ServingThread serves the connection (then callbacks arrive alone)."""
        serving = getattr(self.conn, "serving_thread", None)
        return serving is not None and not serving.closed


class _Iterator:
    """Shared machinery of the two CREPE iterators."""

    _method = ""

    def __init__(self, _range: int, start: int, target=None) -> None:
        self.target = target
        if int(_range) < 1:
            raise errors.InvalidRangeError(f"_range must be >= 1; {_range!r} is invalid.")
        if int(start) < 0:
            raise errors.InvalidRangeError(f"start must be >= 0; {start!r} is invalid.")
        self.range = int(_range)
        self.position = int(start)
        self._targets: dict[int, _Target] = {}

    def _resolve(self, target) -> _Target:
        found = self._targets.get(id(target))
        if found is None or found.target is not target:
            found = self._targets[id(target)] = _Target(target, self._method)
        return found

    def _call(self, call, callback):
        raise NotImplementedError

    def _at_end(self, found: _Target) -> bool:
        if found.n_samples is None:
            info = dict(found.svc.get_info())
            if info.get("growing", False):
                return False
            found.n_samples = int(info["n_samples"])
        return self.position >= found.n_samples

    def _advance(self, value):
        data = decode_segment(value)
        if data is False:
            return False
        self.position += int(data.shape[-1])
        return data

    def next(self, target):
        """Return the next chunk, or False when it is not available (past the end).

        Parameters
        ----------
        target : rpyc.Connection or StreamService
            Where to read; a connection means its root service.
        """
        return self._advance(self._call(self._resolve(target).call, None))

    def next_or_wait(self, target, sleep: float = 0.1, timeout: float | None = None):
        """Return the next chunk, waiting for it to be read if needed.

        Woken by the server's callback, not by polling. With a plain ``rpyc.connect``
        connection (no serving thread) it serves the connection itself in slices of
        ``sleep`` seconds.

        Parameters
        ----------
        target : rpyc.Connection or StreamService
            Where to read.
        sleep : float
            Longest single wait between checks.
        timeout : float, optional
            Seconds to wait in all; None waits as long as it takes.

        Returns
        -------
        numpy.ndarray or False
            The data, or False at the end of a stream that will not grow, or on timeout.
        """
        found = self._resolve(target)
        if self._at_end(found):
            return False
        arrived = threading.Event()
        box: list = []

        def deliver(value):
            box.append(value)
            arrived.set()

        value = self._call(found.call, deliver)
        if value is not False:
            return self._advance(value)
        conn, served = found.conn, found.served
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while not arrived.is_set():
            wait = sleep if deadline is None else min(sleep, deadline - time.monotonic())
            if wait <= 0:
                return False
            if served or conn is None:
                arrived.wait(wait)
            else:
                conn.serve(wait)
        return self._advance(box[0])

    def __iter__(self):
        if self.target is None:
            raise TypeError("give the iterator a target to iterate over it: "
                            "StreamSegmentIterator(_range, target=svc), or use it.over(svc)")
        return self.over(self.target)

    def over(self, target, timeout: float | None = None):
        """Iterate over ``target`` from the current position to the end."""
        while True:
            data = self.next_or_wait(target, timeout=timeout)
            if data is False:
                return
            yield data


class StreamSegmentIterator(_Iterator):
    """Iterate over every active channel in chunks of ``_range`` samples.

    Parameters
    ----------
    _range : int
        Samples per chunk (the last one may be shorter).
    start : int
        Grid index to start from (a saved :attr:`position` resumes an earlier run).
    target : rpyc.Connection or StreamService, optional
        Makes the iterator a Python iterable: ``for seg in StreamSegmentIterator(2560,
        target=svc)``.
    """

    def __init__(self, _range: int = 100, start: int = 0, target=None) -> None:
        super().__init__(_range, start, target)

    _method = "get_stream_segment"

    def _call(self, call, callback):
        return call(self.range, self.position, callback)

    def __repr__(self) -> str:
        return f"StreamSegmentIterator(_range={self.range}, start={self.position})"


class StreamRowIterator(_Iterator):
    """Iterate over one channel in chunks of ``_range`` samples.

    Parameters
    ----------
    _channel : int or str
        Index into the active channels, or a channel name.
    _range : int
        Samples per chunk.
    start : int
        Grid index to start from.
    target : rpyc.Connection or StreamService, optional
        Makes the iterator a Python iterable over that target.
    """

    def __init__(self, _channel: int | str = 0, _range: int = 100, start: int = 0,
                 target=None) -> None:
        super().__init__(_range, start, target)
        self.channel = _channel

    _method = "get_row_segment"

    def _call(self, call, callback):
        return call(self.channel, self.range, self.position, callback)

    def __repr__(self) -> str:
        return (f"StreamRowIterator(_channel={self.channel!r}, _range={self.range}, "
                f"start={self.position})")
