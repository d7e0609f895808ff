"""The mefstream server: reader processes, block cache, sessions and the RPyC listener.

::

    clients --RPyC (FastThreadedServer, one thread per connection)--> RootService /
        FileRootService (one per connection) --> StreamService views
            --> SessionRegistry --> Recording --> BlockCache <--fulfil-- ReaderPool
                                                                   (spawned processes)

:class:`MefStreamServer` owns every thread, process and socket behind that picture and
releases them all in an idempotent :meth:`MefStreamServer.close`.
"""
from __future__ import annotations

import errno
import logging
import threading

from rpyc.utils.helpers import classpartial

from ..cache.blocks import BlockCache
from ..cache.registry import SessionRegistry
from ..live.source import LiveStream
from ..readers.pool import ReaderPool
from ..stream.counters import Counters
from ..transport.connection import FastThreadedServer
from .live_roots import LiveFileRootService, LiveRootService
from .options import ServerOptions
from .roots import FileRootService, RootService
from .stats import server_stats

logger = logging.getLogger(__name__)

#: RPyC settings of the server side: nothing reachable but ``exposed_`` names, no pickle.
SERVER_RPYC_CONFIG = {
    "allow_public_attrs": False,
    "allow_all_attrs": False,
    "allow_setattr": False,
    "allow_delattr": False,
    "allow_pickle": False,
    "allow_getattr": True,
    "import_custom_exceptions": False,
    "instantiate_custom_exceptions": False,
    "sync_request_timeout": 300,
}


class MefStreamServer:
    """Serve MEF3 sessions over RPyC.

    Parameters
    ----------
    host : str
        Interface to bind (default loopback).
    port : int
        TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
    data_root : str
        Directory clients may open sessions under.
    workers : int
        Reader processes.
    prefetch : int
        Requests of the same size (at least 60 s) read ahead of a streaming client.
    cache_mb : float
        Block cache budget in MiB.
    segment_seconds : float
        Default segment size of a new view.
    max_request_mb : float
        Largest answer of one call, in MiB. A client frame may not be larger either
        (plus 1 MiB): one announcing more is refused and disconnected.
    block_seconds : float
        Cache block length in seconds.
    session : str, optional
        Serve this one session at the connection root (CREPE style) instead of the root
        service that opens files.
    password : str, optional
        Level-2 password of ``session``.
    rpyc_config : dict, optional
        Extra RPyC settings (copied, merged over :data:`SERVER_RPYC_CONFIG`).
    authenticator : callable, optional
        An RPyC authenticator, e.g. ``rpyc.utils.authenticators.SSLAuthenticator`` for TLS.
    reader_nice : int
        Nice value added to the reader processes, so that reading ahead yields the CPU to
        the server and to clients on the same machine (0: same priority as the server).
    callback_timeout : float
        Seconds after which a client callback that has not returned is logged (once per
        view) and counted; the server never waits for it.
    live : LiveStream or callable, optional
        Serve this live stream at the connection root (CREPE style) instead of the root
        service; a callable is called with the server's registry and returns the stream
        (a replay), which the server then closes with itself.
    live_streams : sequence of LiveStream
        Live streams served beside the file service (``open_live(name)``).
    read_timeout : float
        Seconds a call without callback waits for its data before failing.
    keep_warm_seconds : float
        Seconds a session stays open, its blocks cached, after its last client closed it,
        so that the next tool to open it (unchanged on disk) reads from the cache.
    max_waiting : int
        Callback requests one connection may have waiting for their answer (one client
        that floods the server reaches its own limit, never the others').

    Raises
    ------
    InvalidArgumentError
        An option is out of range (see :data:`software.server.options.RANGES`); raised
        before any process, thread or socket is made. The message names the option, the
        value and the valid range.
    InvalidTypeError
        An option has the wrong type.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, data_root: str = ".",
                 workers: int = 2, prefetch: int = 1, cache_mb: float = 1024,
                 segment_seconds: float = 60.0, max_request_mb: float = 256,
                 block_seconds: float = 10.0, session: str | None = None,
                 password: str | None = None, rpyc_config: dict | None = None,
                 authenticator=None, reader_nice: int = 0,
                 callback_timeout: float = 30.0, read_timeout: float = 120.0,
                 live=None, live_streams=(), max_waiting: int = 10_000,
                 keep_warm_seconds: float = 0.0) -> None:
        # every value checked once, before anything is spawned
        opts = self.server_options = ServerOptions(
            host=host, port=port, data_root=data_root, workers=workers, prefetch=prefetch,
            cache_mb=cache_mb, segment_seconds=segment_seconds,
            max_request_mb=max_request_mb, block_seconds=block_seconds,
            reader_nice=reader_nice, callback_timeout=callback_timeout,
            read_timeout=read_timeout, max_waiting=max_waiting,
            keep_warm_seconds=keep_warm_seconds)
        self.host = opts.host
        self.data_root = opts.data_root
        self.counters = Counters()
        self.options = opts.service_options(self.counters)
        self.pool = ReaderPool(opts.workers, nice=opts.reader_nice)
        self.cache = BlockCache(int(opts.cache_mb * 2**20))
        self.registry = SessionRegistry(self.data_root, self.pool, self.cache,
                                        block_seconds=opts.block_seconds,
                                        keep_warm_seconds=opts.keep_warm_seconds)
        self._session = session
        self._pinned = None
        self._owned_live = None
        self._readers_used = True     # a pure live stream reads no file: no reader started
        try:
            if live is not None:
                if not isinstance(live, LiveStream):
                    live = self._owned_live = live(self.registry)
                self._readers_used = live.controller is not None   # a replay reads its file
                self._session = f"the live stream {live.name!r}"
                service = classpartial(LiveRootService, live, self.options, self.registry,
                                       self.stats)
            elif live_streams:
                service = classpartial(LiveFileRootService, self.registry, self.options,
                                       {s.name: s for s in live_streams}, self.stats)
            elif session is not None:
                # open once now: a bad path or password fails at start, not at first connect
                self._pinned = self.registry.acquire(session, password)
                service = classpartial(FileRootService, self.registry, self.options,
                                       self._pinned.path, password, self.stats)
            else:
                service = classpartial(RootService, self.registry, self.options, self.stats)
            config = dict(SERVER_RPYC_CONFIG)
            config.update(rpyc_config or {})
            # no client frame may be larger than the largest answer: a peer announcing more
            # is refused before anything is allocated for it
            self._server = FastThreadedServer(
                service, hostname=self.host, port=opts.port, protocol_config=config,
                authenticator=authenticator, logger=logging.getLogger("software.rpyc"),
                max_frame=opts.max_frame)
        except BaseException as exc:   # a bad session or a busy port: leave no reader behind
            if self._owned_live is not None:
                self._owned_live.close()
            self.registry.close()
            self.pool.close()
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                raise _port_in_use(self.host, opts.port) from None
            raise
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        if host not in ("127.0.0.1", "localhost", "::1") and authenticator is None:
            logger.warning("listening on %s without TLS: anyone who can reach this port can "
                           "read every session under %s. Use --tls-cert/--tls-key or bind "
                           "127.0.0.1.", host, self.data_root)

    @property
    def port(self) -> int:
        """The TCP port actually bound."""
        return self._server.port

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def start(self) -> MefStreamServer:
        """Accept connections on a background thread and return at once."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this server was closed; create a new one")
            if self._thread is None:
                self._server._listen()  # listening before start() returns; close() may follow
                if self._readers_used:   # spawning a reader takes ~1 s: not at 1st read
                    self.pool.warm_up(wait=False)
                self._thread = threading.Thread(target=self._server.start, name="rpyc-accept",
                                                daemon=True)
                self._thread.start()
                logger.info("serving %s on %s:%d (data root %s, %d reader processes)",
                            self._session or "the root service", self.host, self.port,
                            self.data_root, self.pool.workers if self._readers_used else 0)
        return self

    def serve_forever(self) -> None:
        """Accept connections on the calling thread until :meth:`close`."""
        self.start()
        # in slices, as start.py waits: Ctrl-C (KeyboardInterrupt) is raised between them
        # even when the signal reached the process while this thread slept
        while self._thread.is_alive():
            self._thread.join(0.2)

    def stats(self) -> tuple[tuple[str, int], ...]:
        """Every count of the server as ``(name, value)`` pairs, as ``get_stats()`` gives them.

        Returns
        -------
        tuple of (str, int) pairs
            See :func:`software.server.stats.server_stats`.
        """
        return server_stats(self.cache, self.pool, self.registry, self.counters)

    def close(self) -> None:
        """Stop listening, drop every connection, end the reader processes (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._owned_live is not None:
            self._owned_live.close()
        self.registry.close()
        self.pool.close()
        logger.info("server closed")

    def __enter__(self) -> MefStreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("serving" if self._thread else "created")
        return f"<MefStreamServer {state} {self.host}:{self.port} root={self.data_root!r}>"


def _port_in_use(host: str, port: int) -> OSError:
    """The error for a port another process holds: which port, and ``port=`` to change."""
    busy = OSError(f"port {port} on {host} is in use (another server?); pass another "
                   f"port=, or port=0 for a free one")
    busy.errno = errno.EADDRINUSE
    return busy
