"""An RPyC TCP registry on a chosen interface (loopback by default), run on a thread.

rpyc's own ``rpyc_registry`` command binds 0.0.0.0 in TCP mode and parses ``-l false`` as
``bool("false")``, i.e. listing on; this wraps :class:`rpyc.utils.registry.TCPRegistryServer`
instead, so the interface is explicit and listing is on. Three behaviours of rpyc 6.0.2's
server are fixed in :class:`_TcpRegistry`: a peer that connects and sends nothing blocked
the registry for good (the accepted socket had no timeout), the socket of a request that
failed to parse was never closed, and ``close()`` took up to 3 s (the accept timeout).
"""
from __future__ import annotations

import logging
import socket
import threading

from rpyc.utils.registry import (
    DEFAULT_PRUNING_TIMEOUT,
    MAX_DGRAM_SIZE,
    REGISTRY_PORT,
    TCPRegistryServer,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PRUNING_TIMEOUT", "REGISTRY_PORT", "RegistryServer"]


class _TcpRegistry(TCPRegistryServer):
    """rpyc's TCP registry with a timeout on each request and no leaked sockets."""

    #: seconds a peer has to send its request (and the accept timeout; rpyc: none, 3)
    TIMEOUT = 1.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: Set once start() has made the server active: a close() before that would be
        #: undone by start() setting ``active`` again.
        self.running = threading.Event()

    def _work(self):
        self.running.set()
        return super()._work()

    def _recv(self):
        for stale in self._connected_sockets.values():  # requests that were dropped
            stale.close()
        self._connected_sockets.clear()
        sock2, _ = self.sock.accept()
        try:
            sock2.settimeout(self.TIMEOUT)
            addrinfo = sock2.getpeername()
            data = sock2.recv(MAX_DGRAM_SIZE)
        except OSError:
            sock2.close()
            raise
        self._connected_sockets[addrinfo] = sock2
        return data, addrinfo


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
        for sock in list(self._server._connected_sockets.values()):
            sock.close()
        self._server._connected_sockets.clear()
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
