"""The connection roots: what a client reaches as ``conn.root`` (one instance per connection).

:class:`RootService` opens sessions under the data root and hands out this connection's
:class:`~software.view.StreamService` views; :class:`FileRootService` serves one session
at the root, CREPE style. Both offer the connection shared memory for its answers, and
give everything back when the client disconnects. The view classes are re-exported here.
"""
from __future__ import annotations

import threading

import rpyc

from ..cache.recording import Recording
from ..cache.registry import SessionRegistry
from ..stream.answers import SegmentEncoder
from ..stream.service import ServiceOptions, StreamService

__all__ = ["FileRootService", "RootService", "ServiceOptions", "StreamService"]


class RootService(rpyc.Service):
    """The connection root: opens sessions under the data root (one instance per connection).

    Parameters
    ----------
    registry : SessionRegistry
        Shared open sessions.
    options : ServiceOptions
        Settings handed to each view.
    """

    def __init__(self, registry: SessionRegistry, options: ServiceOptions) -> None:
        self._registry = registry
        self._options = options
        self._views: dict[str, tuple[StreamService, Recording]] = {}
        self._lock = threading.Lock()

    _encoder = StreamService._encoder      # replaced per connection by on_connect

    def on_connect(self, conn) -> None:
        """Give this connection its segment encoder (the socket until shared memory)."""
        self._encoder = SegmentEncoder(conn)

    def on_disconnect(self, conn) -> None:
        """Drop this connection's views, pending callbacks and shared memory."""
        with self._lock:
            views = list(self._views.values())
            self._views.clear()
        for view, recording in views:
            view.close()
            self._registry.release(recording)
        self._encoder.close()

    def exposed_open_shared_memory(self, nbytes) -> tuple | bool:
        """Offer this connection a shared-memory area for its answers (same host only).

        Parameters
        ----------
        nbytes : int
            Wanted size in bytes (granted between 1 MiB and 1 GiB).

        Returns
        -------
        tuple or False
            ``(name, capacity)``: the file ``/dev/shm/<name>`` to map and unlink, then
            call :meth:`exposed_attach_shared_memory`; False when none can be offered.
        """
        return self._encoder.offer(nbytes)

    def exposed_attach_shared_memory(self, token) -> bool:
        """Send this connection's answers through the offered area from now on.

        Parameters
        ----------
        token : bytes or False
            The token read from the area's header (proof of mapping it), or False to
            decline the offer (the area is removed).

        Returns
        -------
        bool
            Whether answers now go through the area.
        """
        return self._encoder.attach(token)

    def exposed_open_file(self, path, password=None) -> StreamService:
        """Open a session and return this connection's StreamService for it.

        Parameters
        ----------
        path : str
            Session directory, relative to the data root (or absolute, inside it).
        password : str, optional
            Level-2 (data) password of an encrypted session.

        Returns
        -------
        StreamService
            This connection's view; opening the same path again returns the same view.
        """
        # acquire even when this connection has a view: it checks the password every time
        recording = self._registry.acquire(path, password)  # checks the password's type
        real = recording.path
        with self._lock:
            entry = self._views.get(real)
            if entry is None:
                view = StreamService(recording, self._options, self._registry.display_path(real))
                view._encoder = self._encoder
                self._views[real] = (view, recording)
                return view
        self._registry.release(recording)
        return entry[0]

    def exposed_list_open_files(self) -> tuple[str, ...]:
        """Paths (relative to the data root) of the sessions this connection has open."""
        with self._lock:
            return tuple(sorted(v.exposed_get_info()[0][1] for v, _ in self._views.values()))

    def exposed_close_file(self, path) -> bool:
        """Close this connection's view of ``path``; returns whether it was open."""
        real = self._registry.resolve(path)
        with self._lock:
            entry = self._views.pop(real, None)
        if entry is None:
            return False
        entry[0].close()
        self._registry.release(entry[1])
        return True


class FileRootService(StreamService):
    """CREPE style: one session served at the connection root (``start.py PATH.mefd``).

    Parameters
    ----------
    registry : SessionRegistry
        Shared open sessions.
    options : ServiceOptions
        Settings of the view.
    path : str
        The session served.
    password : str or None
        Its level-2 password.
    """

    def __init__(self, registry: SessionRegistry, options: ServiceOptions, path: str,
                 password: str | None = None) -> None:
        self._registry = registry
        recording = registry.acquire(path, password)
        super().__init__(recording, options, registry.display_path(recording.path))

    on_connect = RootService.on_connect
    exposed_open_shared_memory = RootService.exposed_open_shared_memory
    exposed_attach_shared_memory = RootService.exposed_attach_shared_memory

    def on_disconnect(self, conn) -> None:
        """Drop pending callbacks, shared memory, and give the session back."""
        self.close()
        self._registry.release(self._recording)
        self._encoder.close()
