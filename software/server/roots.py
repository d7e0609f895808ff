"""The connection roots: what a client reaches as ``conn.root`` (one instance per connection).

:class:`RootService` opens sessions under the data root and hands out this connection's
:class:`~software.stream.service.StreamService` views; :class:`FileRootService` serves one
session at the root, CREPE style. Both offer the connection shared memory for its answers,
report the server's counts (``get_stats``) and limits (``get_limits``), and give everything
back when the client disconnects. The view classes are re-exported here.

Threads: every method runs in the connection's serving thread.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable

import rpyc

from ..cache.recording import Recording
from ..cache.registry import SessionRegistry
from ..errors import NoFileOpenError, SessionError
from ..stream.answers import SegmentEncoder
from ..stream.service import ServiceOptions, StreamService
from .options import max_frame_for

__all__ = ["FileRootService", "RootService", "ServiceOptions",
           "StreamService", "sessions_under"]

#: Methods of an open file that CREPE scripts call on ``conn.root`` of the root service.
VIEW_METHODS = ("get_info", "set_active_channels", "set_segment_size", "get_segment",
                "get_stream_segment", "get_row_segment", "get_time_segment",
                "append_stream_segment_data", "append_stream_row_data", "get_envelope",
                "get_time_envelope", "build_envelope", "get_records", "get_records_by_index",
                "get_record_counts", "append_marker", "watch_markers",
                "get_stream_segment_marked")
#: Sessions named in the error for a view method asked of the root service.
LISTED_SESSIONS = 10
#: Sessions ``list_sessions`` answers at most.
LISTED_ANSWER = 10_000
#: Directories looked into at most when listing sessions (a huge data root stays quick).
_SCAN_LIMIT = 2000


def _has_channels(path: str) -> bool:
    """Whether a ``.mefd`` directory holds a time-series channel (``*.timd``)."""
    try:
        with os.scandir(path) as entries:
            return any(e.name.endswith(".timd") for e in entries)
    except OSError:
        return False


def sessions_under(data_root: str, limit: int = LISTED_SESSIONS,
                   depth: int = 3) -> tuple[tuple[str, ...], bool]:
    """Sessions (``*.mefd`` directories holding a ``*.timd`` channel) under ``data_root``, relative to it and sorted.

    Parameters
    ----------
    data_root : str
        Directory to look in (hidden directories are skipped, sessions not entered).
    limit : int
        Most sessions returned.
    depth : int
        Most directory levels looked into.

    Returns
    -------
    (tuple of str, bool)
        The first ``limit`` paths in sorted order, and whether there were more (or the
        look stopped after ``_SCAN_LIMIT`` directories).
    """
    found: list[str] = []
    level, scanned, more = [data_root], 0, False
    for _ in range(depth):
        below = []
        for folder in level:
            scanned += 1
            if scanned > _SCAN_LIMIT:
                more = True
                break
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.startswith(".") or not entry.is_dir():
                            continue
                        if entry.name.endswith(".mefd"):
                            if _has_channels(entry.path):
                                found.append(os.path.relpath(entry.path, data_root))
                        else:
                            below.append(entry.path)
            except OSError:
                continue
        level = sorted(below)
    found.sort()
    return tuple(found[:limit]), more or len(found) > limit


def _open_file_first(name: str) -> property:
    def refuse(self: RootService):
        sessions, more = sessions_under(self._registry.data_root)
        listed = ", ".join(repr(s) for s in sessions) + (", ..." if more else "")
        raise NoFileOpenError(
            f"{name} is a method of an open file, not of the root service: call "
            f"svc = conn.root.open_file(path) first, then svc.{name}(...). Sessions under "
            f"the data root: {listed or 'none'}.")
    refuse.__name__ = f"exposed_{name}"
    return property(refuse, doc=f"Refuses: ``{name}`` needs ``open_file(path)`` first.")


class RootService(rpyc.Service):
    """The connection root: opens sessions under the data root (one instance per connection).

    Parameters
    ----------
    registry : SessionRegistry
        Shared open sessions.
    options : ServiceOptions
        Settings handed to each view (its ``counters`` count this connection).
    stats : callable, optional
        Returns the server's counts as ``(name, value)`` pairs (``MefStreamServer.stats``);
        without it ``get_stats`` reports the open sessions and the counters only.

    Notes
    -----
    The methods of an open file (:data:`VIEW_METHODS`) asked of this root raise
    :class:`NoFileOpenError` (an ``AttributeError`` too), saying to call ``open_file``
    first and naming sessions under the data root.
    """

    def __init__(self, registry: SessionRegistry, options: ServiceOptions,
                 stats: Callable[[], tuple] | None = None) -> None:
        self._registry = registry
        self._options = options
        self._stats = stats
        # real path at open -> (view, recording, the strings it was opened by)
        self._views: dict[str, tuple[StreamService, Recording, set[str]]] = {}
        self._lock = threading.Lock()

    _encoder = StreamService._encoder      # replaced per connection by on_connect

    def on_connect(self, conn) -> None:
        """Give this connection its segment encoder (the socket until shared memory)."""
        self._encoder = SegmentEncoder(conn, counters=self._options.counters)
        self._options.counters.add("connections")
        self._options.counters.add("connections_total")

    def on_disconnect(self, conn) -> None:
        """Drop this connection's views, pending callbacks and shared memory."""
        self._options.counters.add("connections", -1)
        with self._lock:
            views = list(self._views.values())
            self._views.clear()
        for view, recording, _ in views:
            view.close()
            self._registry.release(recording)
        self._encoder.close()

    def exposed_get_stats(self) -> tuple[tuple[str, int], ...]:
        """The server's counts (all connections together).

        Returns
        -------
        tuple of (str, int) pairs
            ``dict(conn.root.get_stats())`` gives ``cache_hits``, ``cache_misses``,
            ``cache_bytes`` (bytes cached), ``cache_budget``, ``reads``,
            ``reader_restarts``, ``reads_retried``, ``open_sessions``, ``connections``
            (open now), ``bytes_served``, ``hung_callbacks``, ``client_callback_errors``,
            ``shm_fallbacks``... (see :func:`software.server.stats.server_stats`).
        """
        if self._stats is not None:
            return self._stats()
        return ((("open_sessions", len(self._registry.open_paths())),)
                + self._options.counters.snapshot())

    def exposed_get_limits(self) -> tuple[tuple[str, int], ...]:
        """What a client needs to size its own limits.

        Returns
        -------
        tuple of (str, int) pairs
            ``max_request_bytes``: the largest answer of one call; ``max_frame``: the
            largest message the server accepts, and the one a client must accept (the
            ``max_frame`` of ``get_connection``).
        """
        largest = int(self._options.max_request_bytes)
        return (("max_request_bytes", largest), ("max_frame", max_frame_for(largest)))

    def exposed_set_answer_form(self, form) -> str:
        """Choose how this connection's segments and rows cross (every view of it).

        Parameters
        ----------
        form : str
            ``"plain"`` (the default): CREPE's shape, a tuple of per-channel tuples of
            Python numbers (a row: a tuple of numbers), at most
            :data:`~software.stream.answers.PLAIN_MAX_VALUES` values per answer.
            ``"packed"``: ``(bytes, dtype, shape)`` for :func:`~software.decode_segment`,
            no such cap, and the same-host shared memory (what ``get_connection`` asks
            for).

        Returns
        -------
        str
            The form now in effect.

        Raises
        ------
        InvalidArgumentError
            ``form`` is neither.
        """
        return self._encoder.set_form(form)

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
                shown = self._registry.display_path(real)
                view = StreamService(recording, self._options, shown)
                view._encoder = self._encoder
                self._views[real] = (view, recording, {shown, real, str(path)})
                return view
            entry[2].add(str(path))
        self._registry.release(recording)
        return entry[0]

    def exposed_list_open_files(self) -> tuple[str, ...]:
        """Paths (relative to the data root) of the sessions this connection has open."""
        with self._lock:
            return tuple(sorted(v.exposed_get_info()[0][1] for v, _, _ in
                                self._views.values()))

    def exposed_list_sessions(self) -> tuple[str, ...]:
        """Sessions under the data root, relative to it and sorted (at most
        :data:`LISTED_ANSWER`; three directory levels deep)."""
        return sessions_under(self._registry.data_root, limit=LISTED_ANSWER)[0]

    def exposed_list_server_sessions(self) -> tuple[str, ...]:
        """Sessions open on this server by any connection (paths relative to the data root)."""
        return self._registry.open_paths()

    def exposed_close_file(self, path) -> bool:
        """Close this connection's view of a session.

        Parameters
        ----------
        path : str
            The path the file was opened by, or the one ``get_info()`` and
            ``list_open_files()`` show. The session folder may have been moved or renamed
            since it was opened: the path is not looked up on disk again.

        Returns
        -------
        bool
            Whether this connection had it open (False for a path that names nothing).

        Raises
        ------
        InvalidTypeError
            ``path`` is not a str.
        """
        key = path if isinstance(path, str) else None
        with self._lock:
            real = next((r for r, (_, _, names) in self._views.items() if key in names), None)
        if real is None:
            try:
                real = self._registry.resolve(path)    # another spelling of an open session?
            except SessionError:
                return False
        with self._lock:
            entry = self._views.pop(real, None)
        if entry is None:
            return False
        entry[0].close()
        self._registry.release(entry[1])
        return True


for _name in VIEW_METHODS:
    setattr(RootService, f"exposed_{_name}", _open_file_first(_name))
del _name


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
    stats : callable, optional
        Returns the server's counts (see :class:`RootService`).
    """

    def __init__(self, registry: SessionRegistry, options: ServiceOptions, path: str,
                 password: str | None = None,
                 stats: Callable[[], tuple] | None = None) -> None:
        self._registry = registry
        self._stats = stats
        recording = registry.acquire(path, password)
        super().__init__(recording, options, registry.display_path(recording.path))

    on_connect = RootService.on_connect
    exposed_set_answer_form = RootService.exposed_set_answer_form
    exposed_open_shared_memory = RootService.exposed_open_shared_memory
    exposed_attach_shared_memory = RootService.exposed_attach_shared_memory
    exposed_get_stats = RootService.exposed_get_stats
    exposed_get_limits = RootService.exposed_get_limits

    def on_disconnect(self, conn) -> None:
        """Drop pending callbacks, shared memory, and give the session back."""
        self._options.counters.add("connections", -1)
        self.close()
        self._registry.release(self._recording)
        self._encoder.close()
