"""The client's socket end: large payloads are received into writable memory.

:class:`~software.transport.framing.FastChannel` receives the samples of a large answer
with one ``read`` of exactly their size (a split frame), so whatever that read returns is
what :func:`~software.decode_segment` wraps. :class:`WritableSocketStream` returns a
``bytearray`` for every read of at least :data:`LARGE` bytes, filled by the kernel
(``recv_into``), so the array over it is writable without a copy of its own; smaller reads
stay ``bytes``. :func:`get_connection <software.client.connect.get_connection>` installs
it on its connections; servers keep the plain stream, whose memory follows the bytes
that arrive.
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
    A large read allocates its whole ``count`` before the data arrives (the bytearray is
    zero-filled: 0.3 ms for 8 MiB), where the server's stream commits memory only as data
    arrives. On a client that is bounded by the channel's ``max_frame``, which follows
    the server's limit. Runs in whichever thread receives a message.
    """

    __slots__ = ()

    def read(self, count: int) -> bytes | bytearray:
        """Read exactly ``count`` bytes (a bytearray from :data:`LARGE` up), or raise
        ``EOFError``."""
        if count < LARGE:
            return super().read(count)
        buf = bytearray(count)
        view = memoryview(buf)
        got = 0
        if self._tls_peeked:  # the byte poll() took to check for data
            view[0:1], self._tls_peeked = self._tls_peeked, b""
            got = 1
        elif _MSG_WAITALL and self._tls_lock is None:
            try:
                got = self.sock.recv_into(view, count, _MSG_WAITALL)
            except socket.timeout:
                got = 0
            except OSError as exc:
                self.close()
                raise EOFError(exc) from exc
            else:
                if got == 0:
                    self.close()
                    raise EOFError("connection closed by peer")
        if got < count:  # TLS, signals, timeouts, a peer that sends part: the rest
            self._fill(view[got:])
        view.release()
        return buf


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
