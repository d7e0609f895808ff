"""``get_connection``: the script's connection to a mefstream server.

It waits for the server, connects with the fast transport (large answers received
straight into writable memory, :mod:`.receive`) on a
:class:`~software.client.protocol.ClientConnection` (errors rebuilt from a fixed table,
a server that is gone named in the error), takes the server's frame limit (``get_limits``,
capped), asks for the packed answer form (``set_answer_form``), sets up same-host shared
memory (:mod:`.shared_memory`), makes ``conn.root`` a
:class:`~software.client.root.RemoteRoot` (``open_file`` gives a
:class:`~software.client.stream.RemoteStream` of numpy arrays) and keeps a
:class:`~software.transport.serving.ServingThread` serving the connection, so callbacks
from the server run within about a millisecond and a server that stops answering is
noticed within ``server_timeout``. The whole connect is bounded by ``timeout``.
"""
from __future__ import annotations

import logging
import ssl
import time

import rpyc
from rpyc.core.async_ import AsyncResultTimeout

from ..discovery import lookup
from ..transport.connection import fast_connect
from ..transport.framing import FastChannel, check_max_frame
from ..transport.serving import ServingThread
from .protocol import ClientConnection
from .receive import install
from .shared_memory import negotiate
from .root import RemoteRoot

logger = logging.getLogger(__name__)

#: Default port of the root service (``settings.RPCPORTS["MEF"]``).
DEFAULT_PORT = 18861

#: Client-side RPyC settings: no module is ever imported at the server's request, nothing
#: is sent by pickle. A ``get_connection`` connection rebuilds errors from a fixed table
#: (:mod:`.protocol`); other connections with these settings let RPyC rebuild classes of
#: modules already loaded only (the builtins, ``software.errors``...).
CLIENT_RPYC_CONFIG = {
    "allow_public_attrs": False,
    "allow_pickle": False,
    "import_custom_exceptions": False,
    "instantiate_custom_exceptions": True,
    "sync_request_timeout": 300,
}


class _ClientService(rpyc.VoidService):
    """The (empty) service a client exposes, on a :class:`ClientConnection`."""

    __slots__ = ()
    _protocol = ClientConnection


def get_connection(port: int | None = None, host: str = "localhost", timeout: float = 10,
                   *, keyfile: str | None = None, certfile: str | None = None,
                   ca_certs: str | None = None, config: dict | None = None,
                   shared_memory: bool = True, shared_memory_mb: float = 128,
                   max_frame: int | None = None, service: str | None = None,
                   registry: str | tuple[str, int] | None = None,
                   server_timeout: float | None = 2.0) -> rpyc.Connection:
    """Connect to a mefstream server, waiting up to ``timeout`` seconds for it to come up.

    Parameters
    ----------
    port : int, optional
        Server port; default 18861 (``RPCPORTS["MEF"]``).
    host : str
        Server host.
    timeout : float
        Seconds the whole connect may take: retrying while the server is not listening
        yet, the TLS handshake and the first calls (a peer that accepts the connection but
        never answers is given up after that).
    keyfile, certfile, ca_certs : str, optional
        Client key and certificate, and the CA that signed the server's certificate, for a
        server started with TLS.
    config : dict, optional
        Extra RPyC settings (copied).
    shared_memory : bool
        When client and server share a host (and user), take answers from a shared-memory
        area instead of the socket (see :mod:`software.client.shared_memory`), read live
        streams straight from their ring and push through a producer handle into it (see
        :mod:`software.client.follower`, :mod:`software.client.producer`); values and
        :func:`~software.decode_segment` stay the same. Falls back to the socket silently.
    shared_memory_mb : float
        Size of that area in MiB: the answers in flight at once must fit (larger ones
        come through the socket). Memory is taken only as it is used.
    max_frame : int, optional
        Largest message accepted from the server, in bytes. By default the server tells
        its own limit at connect (``get_limits``: its ``--max-request-mb`` plus framing),
        followed up to 257 MiB (the default ``--max-request-mb 256``): pass ``max_frame``
        to accept more from a server started with a larger ``--max-request-mb``. Memory
        for a message is taken as its bytes arrive, not as announced.
    service : str, optional
        With ``registry``: the name servers announced (``start.py --service-name``,
        default ``"MEF"``); the first server registered under it is used and ``host`` and
        ``port`` are ignored.
    registry : str or (str, int), optional
        ``"host[:port]"`` of an RPyC registry (``python -m software registry``) to find
        the server in.
    server_timeout : float or None
        Seconds without any sign of life from the server (pinged after a quarter of it
        of silence) after which it is deemed gone, while no call of this client is in
        progress: every waiting call then raises :class:`~software.ServerGoneError`. A
        server that closes or dies is noticed at once. None: never ping.

    Returns
    -------
    rpyc.Connection
        ``conn.root`` is a :class:`~software.client.root.RemoteRoot`: its
        ``open_file`` returns a :class:`~software.RemoteStream` (numpy arrays, writable,
        received without a copy of their own); ``conn.root.proxy`` is the root service
        itself. ``conn.serving_thread`` serves callbacks; ``conn.close()`` stops it too.
        ``conn.shared_memory`` is the client's area, or None when answers come through
        the socket. ``conn.limits`` is the server's ``get_limits`` as a dict (empty for
        a server without it).

    Raises
    ------
    ConnectionRefusedError
        Nobody listened on ``host:port`` within ``timeout``, or no server is registered
        under ``service`` at ``registry``.
    TimeoutError
        A peer accepted the connection but did not answer within ``timeout``.
    PermissionError
        The server refused this client's certificate (or its lack of one), or the server's
        certificate is not signed by ``ca_certs``.
    ConnectionError
        The server closed the connection before answering, or did not answer the TLS
        handshake: TLS on one side only.
    """
    deadline = time.monotonic() + float(timeout)
    if registry is not None or service is not None:
        host, port = _find(service or "MEF", registry or "127.0.0.1", timeout)
    port = DEFAULT_PORT if port is None else int(port)
    settings = dict(CLIENT_RPYC_CONFIG)
    settings.update(config or {})
    tls = certfile is not None or ca_certs is not None
    delay = 0.02
    while True:
        try:
            conn = fast_connect(host, port, service=_ClientService, config=settings,
                                keyfile=keyfile, certfile=certfile, ca_certs=ca_certs,
                                timeout=min(3.0, max(deadline - time.monotonic(), 0.1)),
                                max_frame=max_frame, keepalive=True)
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
    install(conn._channel)  # before anything is received: large answers land writable
    # the first calls get what is left of timeout: a peer that accepted the connection but
    # never answers (not a mefstream server, or a hung one) is given up in time
    conn._config["sync_request_timeout"] = max(deadline - time.monotonic(), 0.1)
    # One round trip on this thread before the serving thread starts: a TLS 1.3 server
    # refuses a client certificate only after the handshake, and a TLS server drops a plain
    # client at its first request. Raced by the serving thread, either showed up as a
    # bare EOFError (or rpyc's "release unlocked lock") at the caller's first call.
    try:
        conn.root
    except AsyncResultTimeout as exc:
        _abandon(conn)
        raise _silent(host, port, timeout) from exc
    except (EOFError, OSError) as exc:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing a connection that is already broken
            pass
        raise _refused(host, port, tls, certfile, exc) from exc
    try:
        conn.limits = _follow_limits(conn, max_frame)
        _ask_packed(conn)
        area = negotiate(conn, int(shared_memory_mb * 2**20)) if shared_memory else None
    except AsyncResultTimeout as exc:
        _abandon(conn)
        raise _silent(host, port, timeout) from exc
    except BaseException:
        conn.close()
        raise
    conn._config["sync_request_timeout"] = settings["sync_request_timeout"]
    conn.shared_memory = area
    conn.live_memory = bool(shared_memory)   # live streams' rings (client/follower.py)
    conn._remote_root = RemoteRoot(conn._remote_root, conn)  # what conn.root returns
    serving = ServingThread(conn, server_timeout=server_timeout)
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


def _abandon(conn: ClientConnection) -> None:
    """Close a connection whose peer does not answer, without waiting for it."""
    conn.declare_gone("it did not answer while connecting", log=False)
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a connection that is already broken
        pass


def _silent(host: str, port: int, timeout: float) -> TimeoutError:
    return TimeoutError(
        f"the peer at {host}:{port} accepted the connection but did not answer within "
        f"timeout={timeout:g} s; is a mefstream server (python start.py) listening there, "
        f"or is it hung? Check the port, or raise timeout=.")


def _ask_packed(conn: rpyc.Connection) -> None:
    """Ask for answers in the packed form (an older server answers packed anyway)."""
    try:
        conn.root.set_answer_form("packed")
    except AttributeError:
        logger.debug("the server has no set_answer_form: it answers packed")


def _follow_limits(conn: rpyc.Connection, max_frame: int | None) -> dict:
    """Ask the server for its limits; without ``max_frame`` from the caller, accept frames
    up to the server's ``max_frame``, but never above the default limit (a hostile
    server could announce anything). A server without ``get_limits`` keeps the default."""
    try:
        limits = dict(conn.root.get_limits())
    except AttributeError:  # an older or stock server
        logger.debug("the server tells no limits: max_frame stays %d",
                     conn._channel.max_frame)
        return {}
    if max_frame is None and "max_frame" in limits:
        try:
            told = check_max_frame(limits["max_frame"])
        except (TypeError, ValueError) as exc:
            logger.warning("ignoring the server's max_frame %r (%s)", limits["max_frame"],
                           exc)
            return limits
        if told > FastChannel.MAX_FRAME:
            logger.warning("the server at %s may answer up to %d bytes per message; this "
                           "client accepts %d: pass max_frame=%d to get_connection to "
                           "accept its largest answers", getattr(conn, "peer", "?"), told,
                           FastChannel.MAX_FRAME, told)
            told = FastChannel.MAX_FRAME
        conn._channel.max_frame = told
    return limits


def _find(service: str, registry, timeout: float) -> tuple[str, int]:
    """``(host, port)`` of a server registered as ``service`` at ``registry`` that
    accepts connections: the candidates are tried in turn, newest registration first (a
    server killed without unregistering stays listed for minutes).

    Raises ConnectionRefusedError when nothing is registered or nothing registered
    answers, TimeoutError when the registry itself is too slow to answer.
    """
    from ..discovery.health import first_answering

    found = lookup(str(service), registry, timeout=min(float(timeout), 5.0))
    if not found:
        raise ConnectionRefusedError(
            f"no server is registered as {service!r} at the registry {registry!r}; start one "
            f"with 'python start.py --registry {registry} --service-name {service}', or list "
            f"what is registered with 'python -m software ls --registry {registry}'.")
    return first_answering(found, str(service), registry, timeout=float(timeout))


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
