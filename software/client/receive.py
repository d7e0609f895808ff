"""The client's socket end: large payloads are received into writable memory.

:class:`~software.transport.framing.FastChannel` receives the samples of a large answer
with one ``read`` of exactly their size (a split frame), so whatever that read returns is
what :func:`~software.decode_segment` wraps. :class:`WritableSocketStream` returns a
``bytearray`` for every read of at least :data:`LARGE` bytes, filled by the kernel
(``recv_into``), so the array over it is writable without a copy of its own; smaller reads
stay ``bytes``. :func:`get_connection <software.client.connect.get_connection>` installs
it on its connections; servers keep the plain stream. On both ends memory follows the
bytes that arrive, not the sizes a peer announces.
"""
from __future__ import annotations

import socket

from ..transport.socket_stream import FastSocketStream

__all__ = ["LARGE", "WritableSocketStream", "install"]

#: Reads from this size up return a bytearray (the frame layer's large-string threshold).
LARGE = 64 * 1024

_MSG_WAITALL = getattr(socket, "MSG_WAITALL", 0)


class WritableSocketStream(FastSocketStream):
    """A :class:`FastSocketStream` whose large reads return a ``bytearray``.

    Parameters
    ----------
    sock : socket.socket
        A connected socket (plain TCP, ``ssl.SSLSocket`` or AF_UNIX).

    Notes
    -----
    A large read grows its bytearray as the data arrives (at most doubling it, from
    :attr:`~FastSocketStream.READ_CHUNK`), never to the size a peer merely announced: a
    server that announces 200 MiB and sends 1 kB costs about ``READ_CHUNK``. Growing
    moves the bytes received so far at most a few times (``realloc``, a page remap for
    large buffers). Runs in whichever thread receives a message.
    """

    __slots__ = ()

    def read(self, count: int) -> bytes | bytearray:
        """Read exactly ``count`` bytes (a bytearray from :data:`LARGE` up), or raise
        ``EOFError``."""
        if count < LARGE:
            return super().read(count)
        buf = bytearray()
        got = 0
        if self._tls_peeked:  # the byte poll() took to check for data
            buf += self._tls_peeked
            self._tls_peeked = b""
            got = 1
        while got < count:
            size = min(count, max(2 * got, self.READ_CHUNK))
            while len(buf) < size:  # memory for the data about to arrive only
                buf += _ZEROS[:size - len(buf)]
            view = memoryview(buf)
            try:
                self._fill_all(view[got:size])
            finally:
                view.release()
            got = size
        return buf

    def _fill_all(self, view: memoryview) -> None:
        """Fill ``view``: one ``recv_into(MSG_WAITALL)`` on plain TCP, the rest in turns."""
        got = 0
        if _MSG_WAITALL and self._tls_lock is None:
            try:
                got = self.sock.recv_into(view, len(view), _MSG_WAITALL)
            except socket.timeout:
                got = 0
            except OSError as exc:
                self.close()
                raise EOFError(exc) from exc
            else:
                if got == 0:
                    self.close()
                    raise EOFError("connection closed by peer")
        if got < len(view):  # TLS, signals, timeouts, a peer that sends part: the rest
            self._fill(view[got:])


#: Zeros appended to a growing receive buffer, at most this many at a time.
_ZEROS = memoryview(bytes(FastSocketStream.READ_CHUNK))


def install(channel) -> bool:
    """Make ``channel`` receive large payloads writable (before anything was read).

    Parameters
    ----------
    channel : FastChannel
        The channel of a connection that has not received anything yet.

    Returns
    -------
    bool
        Whether the stream was replaced (False for a stream of another kind).
    """
    stream = getattr(channel, "stream", None)
    if type(stream) is not FastSocketStream:
        return False
    channel.stream = WritableSocketStream(stream.sock)
    return True
