"""An RPyC TCP registry on a chosen interface (loopback by default), run on a thread.

rpyc's own ``rpyc_registry`` command binds 0.0.0.0 in TCP mode and parses ``-l false`` as
``bool("false")``, i.e. listing on; this wraps :class:`rpyc.utils.registry.TCPRegistryServer`
instead, so the interface is explicit and listing is on. rpyc 6.0.2's server answers one
peer at a time and waits for each (forever, or 1 s with a timeout): four peers that
connect and send nothing made every lookup time out. :class:`_TcpRegistry` keeps rpyc's
commands and protocol but serves every peer at once from one thread::

    selector: listening socket -> accept every pending peer (at most MAX_PEERS held)
              peer readable    -> bytes appended; a whole request -> command -> reply
              each turn        -> peers past PEER_TIMEOUT seconds dropped

A registration carries at most :data:`MAX_NAMES` names of :data:`MAX_NAME_CHARS`
characters, and the registry holds at most :data:`MAX_ENTRIES` of them.
"""
from __future__ import annotations

import logging
import selectors
import socket
import threading
import time

from rpyc.core import brine
from rpyc.utils.registry import (
    DEFAULT_PRUNING_TIMEOUT,
    MAX_DGRAM_SIZE,
    REGISTRY_PORT,
    TCPRegistryServer,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PRUNING_TIMEOUT", "MAX_NAMES", "REGISTRY_PORT", "RegistryServer"]

#: Seconds a peer has to send its whole request (it is dropped after).
PEER_TIMEOUT = 1.0
#: Peers whose requests are awaited at once; the one waiting longest is dropped beyond.
MAX_PEERS = 256
#: Names one registration may carry, and characters per name.
MAX_NAMES = 16
MAX_NAME_CHARS = 64
#: (name, address) registrations held at once.
MAX_ENTRIES = 4096

_NO_REPLY = object()   # what a request that gets no answer gets


class _TcpRegistry(TCPRegistryServer):
    """rpyc's TCP registry serving every peer at once, with bounded registrations."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: Set once start() has made the server active: a close() before that would be
        #: undone by start() setting ``active`` again.
        self.running = threading.Event()
        self._peers: dict[socket.socket, tuple[tuple, bytearray, float]] = {}

    def cmd_register(self, host, names, port):
        """rpyc's ``register``, refused (a reply that is not "OK") beyond the bounds."""
        if not isinstance(names, (tuple, list)) or not 0 < len(names) <= MAX_NAMES \
                or not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME_CHARS
                           for n in names) \
                or not isinstance(port, int) or not 0 < port < 65536:
            self.logger.warning("refused a registration from %s: at most %d names of %d "
                                "characters and a port in 1..65535", host, MAX_NAMES,
                                MAX_NAME_CHARS)
            return (f"REFUSED: a registration carries 1..{MAX_NAMES} names of at most "
                    f"{MAX_NAME_CHARS} characters and a port in 1..65535")
        new = [n.upper() for n in names
               if (host, port) not in self.services.get(n.upper(), {})]
        if new and self._entries() + len(new) > MAX_ENTRIES:
            self._prune()
            if self._entries() + len(new) > MAX_ENTRIES:
                self.logger.warning("refused a registration from %s: the registry holds "
                                    "%d entries already", host, MAX_ENTRIES)
                return f"REFUSED: the registry is full ({MAX_ENTRIES} registrations)"
        return super().cmd_register(host, names, port)

    def _entries(self) -> int:
        return sum(len(servers) for servers in self.services.values())

    def _prune(self) -> None:
        oldest = time.time() - self.pruning_timeout
        for name in list(self.services):
            for addrinfo, seen in list(self.services.get(name, {}).items()):
                if seen < oldest:
                    self._remove_service(name, addrinfo)

    def _work(self):
        self.running.set()
        selector = selectors.DefaultSelector()
        self.sock.setblocking(False)
        selector.register(self.sock, selectors.EVENT_READ)
        try:
            while self.active:
                waits = [deadline for _, _, deadline in self._peers.values()]
                timeout = max(0.0, min(waits) - time.monotonic()) if waits else 1.0
                for key, _ in selector.select(min(timeout, 1.0)):
                    if key.fileobj is self.sock:
                        self._accept(selector)
                    else:
                        self._read(selector, key.fileobj)
                now = time.monotonic()
                for peer in [p for p, (_, _, d) in self._peers.items() if d <= now]:
                    self._drop(selector, peer)   # too slow: its request is ignored
        finally:
            for peer in list(self._peers):
                self._drop(selector, peer)
            selector.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                peer, addrinfo = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:   # e.g. out of descriptors: serve the ones held
                return
            peer.setblocking(False)
            self._peers[peer] = (addrinfo, bytearray(), time.monotonic() + PEER_TIMEOUT)
            selector.register(peer, selectors.EVENT_READ)
            if len(self._peers) > MAX_PEERS:   # the one waiting longest goes
                self._drop(selector, min(self._peers, key=lambda p: self._peers[p][2]))

    def _read(self, selector: selectors.BaseSelector, peer: socket.socket) -> None:
        addrinfo, buffer, _ = self._peers[peer]
        try:
            data = peer.recv(MAX_DGRAM_SIZE - len(buffer))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(selector, peer)
            return
        buffer += data
        try:
            magic, command, args = brine.load(bytes(buffer))
        except Exception:  # noqa: BLE001 - not whole yet (or garbage): wait, within limits
            if len(buffer) >= MAX_DGRAM_SIZE:
                self._drop(selector, peer)
            return
        reply = self._answer(addrinfo, magic, command, args)
        if reply is not _NO_REPLY:
            try:
                peer.settimeout(0.2)   # a reply fits the socket buffer: this is a bound
                peer.sendall(brine.dump(reply))
            except (OSError, ValueError, TypeError):
                pass
        self._drop(selector, peer)

    def _answer(self, addrinfo: tuple, magic, command, args):
        """The reply to one request, or _NO_REPLY (rpyc's server sends nothing then)."""
        if magic != "RPYC" or not isinstance(command, str) or not isinstance(args, tuple):
            self.logger.warning("invalid request from %s", addrinfo[0])
            return _NO_REPLY
        method = getattr(self, f"cmd_{command.lower()}", None)
        if method is None:
            self.logger.warning("unknown command %r", command)
            return _NO_REPLY
        try:
            return method(addrinfo[0], *args)
        except Exception:  # noqa: BLE001 - a bad request must not stop the registry
            self.logger.exception("error executing %s", command)
            return _NO_REPLY

    def _drop(self, selector: selectors.BaseSelector, peer: socket.socket) -> None:
        self._peers.pop(peer, None)
        try:
            selector.unregister(peer)
        except (KeyError, ValueError):
            pass
        peer.close()


class RegistryServer:
    """An RPyC TCP registry serving on a background thread.

    Servers register with :func:`~software.discovery.announce`; clients find them with
    :func:`~software.discovery.lookup` and :func:`~software.discovery.list_services`.

    Parameters
    ----------
    host : str
        Interface to bind; loopback by default. Use the data network's interface (or
        ``0.0.0.0``) for servers on other hosts.
    port : int
        TCP port; 0 picks a free one (see :attr:`port`). rpyc's default is 18811.
    pruning_timeout : float
        Seconds after its last registration that a server is dropped from answers
        (announcers re-register every ``interval`` seconds, 60 by default).
    allow_listing : bool
        Answer ``list`` requests (what :func:`list_services` and ``ls --registry`` use).

    Examples
    --------
    >>> with RegistryServer() as registry:           # doctest: +SKIP
    ...     print(registry.address)
    ('127.0.0.1', 40123)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 pruning_timeout: float = DEFAULT_PRUNING_TIMEOUT,
                 allow_listing: bool = True) -> None:
        self._server = _TcpRegistry(host=host, port=int(port),
                                    pruning_timeout=float(pruning_timeout),
                                    logger=logging.getLogger(f"{__name__}.rpyc"),
                                    allow_listing=bool(allow_listing))
        self.host = self._server.sock.getsockname()[0]
        self.port: int = self._server.port
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._server.start, daemon=True,
                                        name=f"rpyc-registry-{self.port}")
        self._thread.start()
        self._server.running.wait(10)
        logger.info("RPyC registry listening on %s:%d (listing %s)", self.host, self.port,
                    "on" if allow_listing else "off")

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the registry listens on."""
        return self.host, self.port

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def services(self) -> dict[str, tuple[tuple[str, int], ...]]:
        """What is registered now: service name -> ``(host, port)`` pairs (unpruned)."""
        return {name: tuple(entries)
                for name, entries in list(self._server.services.items())}

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.active = False
        try:  # wake the accept() up instead of waiting for its timeout
            with socket.create_connection(self._wake_address(), timeout=1.0):
                pass
        except OSError:
            pass
        self._thread.join(timeout=10)
        logger.info("RPyC registry on %s:%d closed", self.host, self.port)

    def _wake_address(self) -> tuple[str, int]:
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1", self.port
        if self.host == "::":
            return "::1", self.port
        return self.host, self.port

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return f"<RegistryServer {state} {self.host}:{self.port}>"
