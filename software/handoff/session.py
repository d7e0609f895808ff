"""One connection per process and server, for hand-offs that read in worker processes.

PyTorch data-loader workers and dask worker processes each read through their own
connection, opened on first use and kept for the life of the process; tasks and datasets
carry only plain values (address, session path, channels, sample range)::

    task (address, path, channels, start, stop) --> read_range() in the worker process
        --> this process's connection to address (cached) --> its view of path
            --> get_stream_segment in pieces <= 32 MiB --> one array

A forked child (PyTorch's default on Linux) inherits its parent's cached connections;
using, closing or even garbage-collecting them would write on the parent's socket, so the
child sets them aside untouched and opens its own.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading

import numpy as np

from ..errors import InvalidArgumentError, ServiceClosedError
from ..transport.wire import decode_segment

logger = logging.getLogger(__name__)

#: Largest piece read in one call, in bytes (the server's default limit is 256 MiB).
PIECE_BYTES = 32 * 2**20

_lock = threading.Lock()
_servers: dict[tuple, _Server] = {}
#: Connections inherited through fork: kept referenced and never touched.
_inherited: list = []


def _forget_after_fork() -> None:
    global _lock
    _inherited.append(dict(_servers))
    _servers.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def connect_key(connect: dict | tuple | None) -> tuple:
    """``get_connection`` keyword arguments as a hashable, picklable tuple of pairs."""
    if not connect:
        return ()
    items = connect.items() if isinstance(connect, dict) else connect
    return tuple(sorted((str(k), v) for k, v in items))


class _View:
    """This process's view of one session: bound methods and the active channels."""

    def __init__(self, svc) -> None:
        self.get = svc.get_stream_segment        # bound once: each lookup is a round trip
        self.set_channels = svc.set_active_channels
        self.get_info = svc.get_info
        self.channels: tuple[str, ...] | None = None      # active now (None: unknown)
        self.default: tuple[str, ...] | None = None       # the session's default ones
        self.lock = threading.Lock()


class _Server:
    """This process's connection to one server and its views, by (path, password)."""

    def __init__(self, address: tuple[str, int], connect: tuple) -> None:
        from ..client.connect import get_connection
        options = dict(connect)
        options.setdefault("timeout", 30)
        self.conn = get_connection(address[1], host=address[0], **options)
        self.open_file = self.conn.root.open_file
        self.views: dict[tuple, _View] = {}
        self.lock = threading.Lock()

    def view(self, path: str, password: str | None) -> _View:
        with self.lock:
            view = self.views.get((path, password))
            if view is None:
                view = _View(self.open_file(path, password))
                self.views[(path, password)] = view
            return view

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a connection that already broke
            logger.debug("closing a broken connection", exc_info=True)


def _server(address: tuple[str, int], connect: tuple) -> _Server:
    key = (address, connect)
    with _lock:
        server = _servers.get(key)
    if server is None:
        server = _Server(address, connect)     # outside the lock: connecting may wait
        with _lock:
            if key in _servers:                # another thread was faster
                server.close()
                server = _servers[key]
            else:
                _servers[key] = server
                logger.debug("process %d connected to %s:%d", os.getpid(), *address)
    return server


def _drop(address: tuple[str, int], connect: tuple, server: _Server) -> None:
    with _lock:
        if _servers.get((address, connect)) is server:
            del _servers[(address, connect)]
    server.close()


def _select(view: _View, channels: tuple[str, ...] | None) -> tuple[str, ...]:
    """Make ``channels`` active (None: the session's default); caller holds view.lock."""
    if channels is None:
        if view.default is None:
            view.default = tuple(str(c) for c in view.set_channels(None))
            view.channels = view.default
        channels = view.default
    if view.channels != channels:
        view.channels = tuple(str(c) for c in view.set_channels(list(channels)))
    return view.channels


def _with_view(address, path, password, connect, fn):
    """Run ``fn(view)`` on this process's view, reconnecting once if the connection broke."""
    connect = connect_key(connect)
    for attempt in (1, 2):
        server = _server(address, connect)
        try:
            view = server.view(path, password)
            with view.lock:
                return fn(view)
        except (EOFError, BrokenPipeError, ConnectionResetError, ServiceClosedError):
            _drop(address, connect, server)
            if attempt == 2:
                raise
            logger.warning("connection to %s:%d lost; reconnecting once", *address)


def read_range(address: tuple[str, int], path: str, channels: tuple[str, ...] | None,
               start: int, stop: int, *, password: str | None = None,
               connect: dict | tuple | None = None) -> np.ndarray:
    """Samples ``[start, stop)`` of ``channels`` (grid indices), read through the service.

    Runs in the calling process (a data-loader or dask worker) on that process's cached
    connection; concurrent threads of one process take turns on a session.

    Parameters
    ----------
    address : (str, int)
        Server host and port.
    path : str
        Session path, relative to the server's data root.
    channels : tuple of str or None
        Channel names in order; None: the session's default channels.
    start, stop : int
        Grid indices, ``0 <= start < stop <= n_samples``.
    password : str, optional
        Level-2 password of the session.
    connect : dict or tuple of pairs, optional
        Extra :func:`~software.get_connection` arguments (TLS files, ``shared_memory``).

    Returns
    -------
    numpy.ndarray
        ``(channels, stop - start)``, writable, bit-equal to ``MefReader``'s
        whole-recording read (NaN in gaps).
    """
    start, stop = int(start), int(stop)

    def read(view: _View) -> np.ndarray:
        names = _select(view, channels)
        piece = max(1, PIECE_BYTES // (8 * max(1, len(names))))
        out = None
        at = start
        while at < stop:
            part = decode_segment(view.get(min(piece, stop - at), at))
            if part is False:
                raise InvalidArgumentError(f"stop={stop} is past the end of {path!r}")
            if out is None:
                out = np.empty((part.shape[0], stop - start), dtype=part.dtype)
            out[:, at - start:at - start + part.shape[1]] = part
            at += part.shape[1]
        if out is None:
            out = np.empty((len(names), 0))
        return out

    return _with_view(address, path, password, connect, read)


def session_info(address: tuple[str, int], path: str,
                 channels: tuple[str, ...] | None = None, *, password: str | None = None,
                 connect: dict | tuple | None = None) -> dict:
    """``get_info()`` of the session with ``channels`` active, as a dict (cached conn.)."""
    def info(view: _View) -> dict:
        _select(view, channels)
        return dict(view.get_info())

    return _with_view(address, path, password, connect, info)


def open_sessions() -> tuple[tuple[str, int, str], ...]:
    """``(host, port, path)`` of every session this process reads through the service."""
    with _lock:
        return tuple((addr[0], addr[1], path) for (addr, _), server in _servers.items()
                     for path, _ in server.views)


def close_connections() -> None:
    """Close this process's cached connections (also run at exit); idempotent."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.close()


atexit.register(close_connections)
