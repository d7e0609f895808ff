"""``conn.root`` of a :func:`~software.get_connection` connection: :class:`RemoteRoot`.

It opens sessions (and live streams served beside them) as
:class:`~software.client.stream.RemoteStream` objects, and answers like one itself when
the root is a stream (``start.py PATH.mefd``, ``--live``, ``--replay``).
"""
from __future__ import annotations

import os
from typing import Any

from .stream import RemoteStream, _Proxied

__all__ = ["RemoteRoot"]


#: What a root that is itself a stream (``start.py PATH.mefd``, ``--live``, ``--replay``)
#: answers as a :class:`RemoteStream` does: arrays, a dict, tuples sent by copy.
_STREAM_METHODS = frozenset({
    "get_info", "set_active_channels", "set_segment_size", "get_segment",
    "get_stream_segment", "get_row_segment", "get_time_segment",
    "append_stream_segment_data", "append_stream_row_data", "get_envelope",
    "get_time_envelope", "withdraw", "get_records", "get_records_by_index",
    "get_record_counts", "append_marker", "watch_markers"})


class RemoteRoot(_Proxied):
    """``conn.root`` of a :func:`~software.get_connection` connection.

    ``open_file`` returns a :class:`RemoteStream`; the stream methods of a root that is
    a stream (a session or a live stream served at the root) answer as a RemoteStream's
    do (arrays, a dict); every other attribute is the root service's own
    (``list_open_files``, ``close_file``, ``get_stats``, ``get_limits``, a replay's
    ``pause``...), fetched once and kept.

    Parameters
    ----------
    proxy : rpyc netref
        The connection's root service.
    connection : rpyc.Connection, optional
        The connection, handed to the streams.
    """

    def __init__(self, proxy: Any, connection: Any = None) -> None:
        super().__init__(proxy)
        self._stream: RemoteStream | None = None
        #: The connection (handed to the streams and the iterators).
        self.connection = connection

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        method = self._method(name)  # the plain root service refuses view methods here
        if name in _STREAM_METHODS:  # a session or live stream served at the root
            stream = self.as_stream()
            stream._methods.setdefault(name, method)
            return getattr(stream, name)
        return method

    def as_stream(self) -> RemoteStream:
        """The root as a :class:`RemoteStream` (a session or live stream at the root)."""
        if self._stream is None:
            self._stream = RemoteStream(self._proxy, None, None, self.connection)
        return self._stream

    def ring_follower(self) -> Any:
        """The shared-memory follower of a live stream at the root, or None."""
        return self.as_stream().ring_follower()

    def producer(self) -> Any:
        """A producer handle of the live stream at the root (see
        :meth:`RemoteStream.producer`)."""
        return self.as_stream().producer()

    def open_file(self, path: str, password: str | None = None) -> RemoteStream:
        """Open a session; returns this connection's view of it as a :class:`RemoteStream`.

        Parameters
        ----------
        path : str or os.PathLike
            Session directory, relative to the data root (or absolute, inside it).
        password : str, optional
            Level-2 password of an encrypted session.

        Returns
        -------
        RemoteStream

        Raises
        ------
        NotMefSessionError, OutsideDataRootError, WrongPasswordError
            As the server's ``open_file``.
        """
        if isinstance(path, os.PathLike):
            path = os.fspath(path)  # by copy: a Path object would cross as a proxy
        proxy = self._method("open_file")(path, password)
        stream = RemoteStream(proxy, self, path, self.connection)
        stream._follower = None        # a file: no live ring to ask for
        return stream

    def open_live(self, name: str) -> RemoteStream:
        """This connection's view of a live stream served beside the files (a server started
        with live streams), as a :class:`RemoteStream`.

        Parameters
        ----------
        name : str
            One of ``list_live_streams()``.

        Returns
        -------
        RemoteStream
        """
        proxy = self._method("open_live")(str(name))
        return RemoteStream(proxy, None, str(name), self.connection)

    def __repr__(self) -> str:
        return f"<RemoteRoot of {self.connection!r}>"
