"""Connection roots of live streams, and who may push into them.

:class:`LiveRootService` serves one :class:`~software.live.source.LiveStream` at the
connection root, CREPE style (``start.py --live NAME`` or ``--replay``), with a replay's
controls; :class:`LiveFileRootService` is the file service's root plus
``open_live(name)`` / ``list_live_streams()`` for streams served beside the files.

Pushing (and a replay's controls) over RPyC is allowed from the same host, and from other
hosts only to clients that presented a TLS certificate the server verified (start the
server with ``--tls-ca``): see :func:`push_refusal`.
"""
from __future__ import annotations

import ipaddress
import threading
from collections.abc import Mapping

from ..errors import StreamError, UnknownChannelError
from ..live.source import LiveStream
from ..stream.options import ServiceOptions
from ..stream.service import StreamService
from ..validation import as_uutc
from .live_sharing import LiveStreamService, RingSharing
from .roots import RootService

__all__ = ["LiveFileRootService", "LiveRootService", "push_refusal"]


def push_refusal(endpoints, credentials) -> str | None:
    """Why a connection may not push, or None when it may.

    Parameters
    ----------
    endpoints : (sockname, peername) or None
        The connection's socket addresses (RPyC's ``conn._config['endpoints']``); None for
        a view used in-process.
    credentials : object
        What the authenticator returned: a verified TLS client certificate (a non-empty
        dict) or nothing.

    Returns
    -------
    str or None
        The refusal message, or None (loopback peer, verified client certificate, or
        in-process).
    """
    if endpoints is None or credentials:
        return None
    peer = endpoints[1]
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
        if getattr(address, "ipv4_mapped", None) is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            return None
    except ValueError:  # a unix socket path: the same host
        if not isinstance(peer, tuple):
            return None
    return (f"pushing samples from {host} is refused: only clients on the server's host, or "
            f"clients presenting a TLS certificate signed by the server's --tls-ca, may push "
            f"into a live stream. Start the server with --tls-cert/--tls-key/--tls-ca and "
            f"connect with get_connection(keyfile=..., certfile=...).")


def _refusal_of(conn) -> str | None:
    config = getattr(conn, "_config", {}) or {}
    return push_refusal(config.get("endpoints"), config.get("credentials"))


def _peer_of(conn) -> str:
    """The client's address, for messages about the producer handle it holds."""
    endpoints = (getattr(conn, "_config", {}) or {}).get("endpoints")
    peer = endpoints[1] if endpoints else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"the client at {peer[0]}:{peer[1]}"
    return "a client on this host"


class LiveRootService(RingSharing, StreamService):
    """CREPE style: one live stream served at the connection root.

    Parameters
    ----------
    stream : LiveStream
        The stream (shared by every connection).
    options : ServiceOptions
        Settings of the view.
    registry : SessionRegistry, optional
        The server's sessions (counted by ``get_stats``).
    stats : callable, optional
        Returns the server's counts (see :class:`~software.server.roots.RootService`).
    """

    def __init__(self, stream: LiveStream, options: ServiceOptions, registry=None,
                 stats=None) -> None:
        self._stream = stream
        self._registry = registry
        self._stats = stats
        self._live_view = stream.view(options.counters)
        super().__init__(self._live_view, options, stream.name)

    def on_connect(self, conn) -> None:
        """Give this connection its encoder and decide whether it may push."""
        RootService.on_connect(self, conn)
        refusal = _refusal_of(conn)
        self._live_view._may_push = refusal is None
        self._live_view._refusal = refusal or ""
        self._peer_name = _peer_of(conn)

    def on_disconnect(self, conn) -> None:
        """Withdraw pending callbacks and drop shared memory."""
        self._options.counters.add("connections", -1)
        self.close()
        self._encoder.close()

    exposed_open_shared_memory = RootService.exposed_open_shared_memory
    exposed_attach_shared_memory = RootService.exposed_attach_shared_memory
    exposed_get_stats = RootService.exposed_get_stats
    exposed_get_limits = RootService.exposed_get_limits
    exposed_set_answer_form = RootService.exposed_set_answer_form

    # ---- a replay's controls ----------------------------------------------------------

    def _controller(self):
        self._check_open()
        if not self._live_view._may_push:
            self._live_view._check_push()
        controller = self._stream.controller
        if controller is None:
            raise StreamError(f"{self._stream.name!r} is pushed by a producer, not replayed "
                              f"from a file: it has no pause/resume/seek/set_speed.")
        return controller

    def exposed_pause(self) -> bool:
        """Pause the replay (nothing more is pushed until :meth:`exposed_resume`).

        Returns
        -------
        bool
            True.
        """
        self._controller().pause()
        return True

    def exposed_resume(self) -> bool:
        """Resume a paused replay, on a new wall-clock schedule from now."""
        self._controller().resume()
        return True

    def exposed_seek(self, uutc) -> int:
        """Continue the replay from file time ``uutc`` (a new stretch).

        Parameters
        ----------
        uutc : int
            File time in microseconds, inside the recording.

        Returns
        -------
        int
            The stream index where the new stretch begins.
        """
        return self._controller().seek(as_uutc("uutc", uutc))

    def exposed_set_speed(self, x) -> float:
        """Replay at ``x`` times real time from now on.

        Parameters
        ----------
        x : float
            Speed factor, 0.001 to 1e6.

        Returns
        -------
        float
            The speed now in effect.

        Raises
        ------
        InvalidRangeError
            ``x`` is outside the range (the speed is unchanged).
        """
        return self._controller().set_speed(x)


class LiveFileRootService(RootService):
    """The file service's root, plus live streams served beside the files.

    Parameters
    ----------
    registry : SessionRegistry
        Shared open sessions.
    options : ServiceOptions
        Settings handed to each view.
    streams : mapping of str to LiveStream
        The live streams, by name.
    stats : callable, optional
        Returns the server's counts.
    """

    def __init__(self, registry, options: ServiceOptions,
                 streams: Mapping[str, LiveStream], stats=None) -> None:
        super().__init__(registry, options, stats)
        self._streams = dict(streams)
        self._live_views: dict[str, StreamService] = {}
        self._live_lock = threading.Lock()
        self._refusal: str | None = None
        self._peer_name = "a client on this host"

    def on_connect(self, conn) -> None:
        """Give this connection its encoder and decide whether it may push."""
        super().on_connect(conn)
        self._refusal = _refusal_of(conn)
        self._peer_name = _peer_of(conn)

    def on_disconnect(self, conn) -> None:
        """Drop this connection's file and live views."""
        with self._live_lock:
            views = list(self._live_views.values())
            self._live_views.clear()
        for view in views:
            view.close()
        super().on_disconnect(conn)

    def exposed_list_live_streams(self) -> tuple[str, ...]:
        """Names of the live streams this server serves."""
        return tuple(sorted(self._streams))

    def exposed_open_live(self, name) -> StreamService:
        """This connection's StreamService of the live stream ``name``.

        Parameters
        ----------
        name : str
            One of :meth:`exposed_list_live_streams`.

        Returns
        -------
        StreamService
            The same view each time on this connection.

        Raises
        ------
        UnknownChannelError
            No live stream has that name.
        """
        stream = self._streams.get(name) if isinstance(name, str) else None
        if stream is None:
            raise UnknownChannelError(f"name={name!r} is not a live stream of this server; "
                                      f"streams: {', '.join(sorted(self._streams)) or 'none'}.")
        with self._live_lock:
            view = self._live_views.get(name)
            if view is None or view.closed:
                source = stream.view(self._options.counters, self._refusal is None,
                                     self._refusal or "")
                view = LiveStreamService(source, self._options, stream.name)
                view._encoder = self._encoder
                view._peer_name = self._peer_name
                self._live_views[name] = view
            return view

