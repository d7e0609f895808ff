"""Announce a server to an RPyC TCP registry, and find servers there.

:func:`announce` speaks rpyc's registrar protocol (``REGISTER (names, port)``, re-sent every
``interval`` seconds, ``UNREGISTER port`` on close) from a named thread. The registry
records the address the registration came from, so the announcing socket binds the
server's interface (``host=``): announce to the registry's address on the data network,
never to ``localhost`` on the registry's own host (remote clients would be told
``127.0.0.1``).
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import closing

from rpyc.core import brine
from rpyc.utils.registry import MAX_DGRAM_SIZE, REGISTRY_PORT, TCPRegistryClient

from ..errors import InvalidArgumentError
from .address import format_address, parse_address
from .registry import MAX_NAME_CHARS

logger = logging.getLogger(__name__)

#: Seconds between re-registrations (rpyc's ``REREGISTER_INTERVAL``).
REREGISTER_INTERVAL = 60.0

__all__ = ["Announcement", "announce", "list_services", "lookup"]


class _Registrar(TCPRegistryClient):
    """rpyc's TCP registrar, with register/unregister sent from the same interface and a
    result that says what went wrong (rpyc's returns True even without an "OK")."""

    def _request(self, command: str, args: tuple, interface: str) -> object:
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.bind((interface, 0))
            sock.settimeout(self.timeout)
            sock.connect((self.ip, self.port))
            sock.sendall(brine.dump(("RPYC", command, args)))
            return brine.load(sock.recv(MAX_DGRAM_SIZE))

    def register(self, aliases, port, interface=""):  # noqa: D102 - rpyc's signature
        self.last_reply = self._request("REGISTER", (tuple(aliases), int(port)), interface)
        return self.last_reply == "OK"

    def unregister(self, port, interface=""):  # noqa: D102 - rpyc's signature
        return self._request("UNREGISTER", (int(port),), interface) == "OK"


def _interface(host: str | None) -> str:
    """The address to send registrations from: the server's bind address, unless that is
    every interface (then the OS picks the route to the registry)."""
    return "" if host in (None, "", "0.0.0.0", "::") else host


class Announcement:
    """A running announcement of one server; see :func:`announce`.

    Runs a thread ``announce-NAME`` that registers at once and every ``interval`` seconds
    until :meth:`close`, which unregisters the server.
    """

    def __init__(self, name: str, port: int, registry: tuple[str, int], host: str | None,
                 interval: float, timeout: float) -> None:
        self.name = name
        self.port = port
        self.registry = registry
        self.host = host
        self.interval = interval
        self._registrar = _Registrar(registry[0], registry[1], timeout=timeout,
                                     logger=logging.getLogger(f"{__name__}.rpyc"))
        self._stop = threading.Event()
        self._registered = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._failing = False
        self.registrations = 0
        self._thread = threading.Thread(target=self._run, name=f"announce-{name}",
                                        daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def wait_registered(self, timeout: float | None = None) -> bool:
        """Wait until the registry acknowledged a registration; False on timeout."""
        return self._registered.wait(timeout)

    def _run(self) -> None:
        where = format_address(self.registry)
        while not self._stop.is_set():
            try:
                ok = self._registrar.register((self.name,), self.port,
                                              interface=_interface(self.host))
                error = None if ok else \
                    f"it answered {getattr(self._registrar, 'last_reply', None)!r}, not OK"
            except (OSError, EOFError, ValueError) as exc:
                error = str(exc) or type(exc).__name__
            except Exception:  # noqa: BLE001 - a background loop must keep going
                logger.exception("announcing %s to %s failed", self.name, where)
                error = "unexpected error"
            if error is None:
                self.registrations += 1
                self._registered.set()
                if self._failing or self.registrations == 1:
                    logger.info("announced %s (port %d) to the registry %s", self.name,
                                self.port, where)
                self._failing = False
            elif not self._failing:  # once per outage, not every interval
                self._failing = True
                logger.warning("cannot announce %s to the registry %s (%s); retrying every "
                               "%g s", self.name, where, error, self.interval)
            self._stop.wait(self.interval)

    def close(self) -> None:
        """Stop re-registering and unregister the server (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._thread.join(timeout=self._registrar.timeout + 5)
        try:
            self._registrar.unregister(self.port, interface=_interface(self.host))
        except (OSError, EOFError, ValueError) as exc:
            logger.warning("could not unregister %s from the registry %s (%s); it drops "
                           "the entry after its pruning timeout", self.name,
                           format_address(self.registry), exc)

    def __enter__(self) -> Announcement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (
            "registered" if self._registered.is_set() else "registering")
        return (f"<Announcement {self.name} port {self.port} to "
                f"{format_address(self.registry)} {state}>")


def announce(name: str, port: int, registry: str | tuple[str, int] = "127.0.0.1",
             *, host: str | None = None, interval: float = REREGISTER_INTERVAL,
             timeout: float = 2.0) -> Announcement:
    """Register a server with an RPyC TCP registry, and keep it registered until closed.

    Parameters
    ----------
    name : str
        Service name (the registry stores it upper-case; lookups ignore case), e.g.
        ``"MEF"`` or one name per data host such as ``"MEF-HOSTA"``.
    port : int
        The server's listening port.
    registry : str or (str, int)
        ``"host[:port]"`` of the registry (port 18811 when omitted).
    host : str, optional
        The server's bind address; registrations are sent from it, and the registry
        records that address. None or ``0.0.0.0``: the interface routing to the registry.
    interval : float
        Seconds between registrations; keep it well below the registry's pruning
        timeout (240 s by default).
    timeout : float
        Seconds to wait for the registry on each attempt.

    Returns
    -------
    Announcement
        A context manager; ``close()`` stops it and unregisters the server. The first
        registration runs on its thread: ``wait_registered(timeout)`` waits for it. An
        unreachable registry is logged once and retried every ``interval``.

    Raises
    ------
    InvalidArgumentError
        ``name`` is empty or longer than 64 characters, ``port`` outside 1..65535,
        ``interval`` not > 0, or ``registry`` unreadable.
    """
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME_CHARS:
        raise InvalidArgumentError(f"name must be a non-empty service name of at most "
                                   f"{MAX_NAME_CHARS} characters; {name!r} is not. Pass "
                                   f"e.g. name='MEF'.")
    where = parse_address(registry, REGISTRY_PORT, name="registry")
    try:
        port = int(port)
    except (TypeError, ValueError):
        port = -1
    if not 0 < port < 65536:
        raise InvalidArgumentError(f"port must be the server's port (1..65535); {port!r} "
                                   f"is invalid. Pass server.port after start().")
    if not interval > 0:
        raise InvalidArgumentError(f"interval must be > 0 seconds; {interval!r} is invalid.")
    return Announcement(name.strip(), port, where, host, float(interval), float(timeout))


def _unreachable(registry, exc: BaseException) -> ConnectionError:
    host, port = parse_address(registry, REGISTRY_PORT, name="registry")
    return ConnectionRefusedError(
        f"no RPyC registry answered at {host}:{port} ({exc}); start one with "
        f"'python -m software registry --host {host} --port {port}' or pass the right "
        f"registry='host:port'.")


def _ask(registry: str | tuple[str, int], command: str, args: tuple,
         timeout: float) -> object:
    """Send one request to the registry and return its answer.

    Raises
    ------
    InvalidArgumentError
        ``registry`` is not an address (or its host not a host name).
    ConnectionRefusedError
        Nothing accepts connections there (or it cannot be reached in ``timeout``).
    TimeoutError
        The registry accepted the connection but did not answer within ``timeout``
        seconds (overloaded, or not an RPyC registry): not the same as "nothing
        registered", which is an empty answer.
    ConnectionError
        It closed the connection without answering.
    """
    host, port = parse_address(registry, REGISTRY_PORT, name="registry")
    timeout = max(float(timeout), 0.05)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise _unreachable(registry, exc) from exc
    except (UnicodeError, ValueError, OverflowError) as exc:   # not a host name at all
        raise InvalidArgumentError(f"registry={format_address((host, port))!r}: {host!r} is "
                                   f"not a host name or address ({exc}).") from None
    with closing(sock):
        received = bytearray()
        try:
            sock.sendall(brine.dump(("RPYC", command, args)))
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                data = sock.recv(MAX_DGRAM_SIZE - len(received))
                if not data:
                    raise ConnectionError(
                        f"the registry at {host}:{port} closed the connection without "
                        f"answering {command}; is it an RPyC registry?")
                received += data
                try:
                    return brine.load(bytes(received))
                except Exception:  # noqa: BLE001 - not whole yet
                    if len(received) >= MAX_DGRAM_SIZE:
                        raise ConnectionError(f"the registry at {host}:{port} answered "
                                              f"{command} with garbage") from None
        except (socket.timeout, TimeoutError):
            raise TimeoutError(
                f"the registry at {host}:{port} accepted the connection but did not answer "
                f"within {timeout:g} s (overloaded, or not an RPyC registry); this says "
                f"nothing about what is registered. Try again, or pass a longer "
                f"timeout=.") from None
        except ConnectionResetError as exc:
            raise ConnectionError(f"the registry at {host}:{port} reset the connection "
                                  f"({exc})") from None


def lookup(name: str, registry: str | tuple[str, int] = "127.0.0.1",
           timeout: float = 2.0) -> list[tuple[str, int]]:
    """Servers registered under ``name``.

    Parameters
    ----------
    name : str
        Service name (case does not matter).
    registry : str or (str, int)
        ``"host[:port]"`` of the registry (port 18811 when omitted).
    timeout : float
        Seconds to wait for the registry.

    Returns
    -------
    list of (str, int)
        ``(host, port)`` of each live server, oldest registration first; empty when none.

    Raises
    ------
    ConnectionRefusedError
        No registry answered at ``registry``.
    TimeoutError
        The registry is there but did not answer in time (slow or overloaded).
    """
    found = _ask(registry, "QUERY", (str(name),), timeout)
    try:
        return [(str(h), int(p)) for h, p in found]
    except (TypeError, ValueError):
        where = format_address(parse_address(registry, REGISTRY_PORT, name="registry"))
        raise ConnectionError(f"the registry at {where} answered a lookup with {found!r}, "
                              f"not a list of addresses") from None


def list_services(registry: str | tuple[str, int] = "127.0.0.1",
                  timeout: float = 2.0) -> dict[str, list[tuple[str, int]]]:
    """Every service registered, with its live servers.

    Parameters
    ----------
    registry : str or (str, int)
        ``"host[:port]"`` of the registry (port 18811 when omitted).
    timeout : float
        Seconds to wait for the registry (per request).

    Returns
    -------
    dict
        Service name (upper-case, as the registry stores it) -> list of ``(host, port)``;
        names whose servers have all expired are left out.

    Raises
    ------
    ConnectionRefusedError
        No registry answered at ``registry``.
    TimeoutError
        The registry is there but did not answer in time (slow or overloaded).
    PermissionError
        The registry does not allow listing (rpyc's ``rpyc_registry`` without ``-l``).
    """
    where = format_address(parse_address(registry, REGISTRY_PORT, name="registry"))
    names = _ask(registry, "LIST", ((None,),), timeout)
    if names is None:
        raise PermissionError(f"the registry at {where} does not allow listing; start it "
                              f"with 'python -m software registry' (listing on) or look "
                              f"services up by name.")
    if not isinstance(names, tuple):
        raise ConnectionError(f"the registry at {where} answered a listing with "
                              f"{names!r}")
    out = {}
    for service in sorted(str(n) for n in names):
        servers = lookup(service, registry, timeout)
        if servers:
            out[service] = servers
    return out
