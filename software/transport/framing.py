"""RPyC frames of the fast transport: brine in parts, frames without copies, a size limit.

Frames stay RPyC's (``!LB`` header: length and compressed flag, brine payload,
``b"\\n"``), so stock peers interoperate. Sending, :func:`dump_parts` keeps large byte
strings and :class:`Buffer` payloads as parts of their own that
:meth:`FastChannel.send_parts` writes from their own memory. Receiving, a large frame that
holds a large byte string comes as a :class:`SplitFrame`, the string received straight
into its own bytes object (found by peeking its head with :func:`find_large_bytes`).
:attr:`FastChannel.max_frame` bounds what a peer may announce. The connection that uses
all this is :class:`software.transport.connection.FastConnection`.
"""
from __future__ import annotations

import logging
import zlib
from io import BytesIO
from typing import Any, NoReturn

from rpyc.core import brine
from rpyc.core.channel import Channel

__all__ = ["Brined", "Buffer", "FRAME_HEADROOM", "FastChannel", "SplitFrame",
           "check_max_frame", "dump_parts", "find_large_bytes"]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Room for the RPyC message around the samples of an answer (it needs tens of bytes).
FRAME_HEADROOM = MiB
#: Byte strings from this size up are sent from their own memory, not copied into the frame.
_LARGE = 64 * 1024


def check_max_frame(value: Any) -> int:
    """``value`` as a frame size limit in bytes; ``ValueError`` unless it is positive."""
    limit = int(value)
    if limit < 1:
        raise ValueError(f"max_frame must be a positive number of bytes; {value!r} is "
                         f"invalid (default {FastChannel.MAX_FRAME}).")
    return limit


class FastChannel(Channel):
    """RPyC channel that never compresses, avoids large-frame copies and bounds frame sizes.

    Parameters
    ----------
    stream : rpyc.core.stream.Stream
        Usually a :class:`~software.transport.socket_stream.FastSocketStream`.
    compress : bool, optional
        Ignored (accepted for signature compatibility); frames are always sent
        uncompressed. Compressed frames from a stock peer are decompressed.
    max_frame : int, optional
        Largest frame accepted from the peer, in bytes (default :attr:`MAX_FRAME`).

    Notes
    -----
    Frames stay ``!LB`` header (length, compressed flag 0), payload, ``b"\\n"``.
    Frames up to ``SMALL_FRAME`` bytes go out in one write; larger ones as the
    header, ``MAX_SEND_CHUNK``-sized memoryview slices of the payload and the
    flusher, without concatenation.

    A peer whose frame header announces more than :attr:`max_frame` bytes (or whose
    compressed frame would inflate beyond it) is refused before anything is allocated
    for it: a WARNING names the peer, the stream is closed and :meth:`recv` raises
    ``EOFError``. A frame header that is the start of a TLS record (a TLS client of a
    server without TLS) is refused the same way, except that the peer's data is read
    and dropped until it gives up (at most :attr:`TLS_LINGER` seconds), so that its
    handshake times out rather than being reset: the client can then tell that the
    server runs without TLS.
    """

    __slots__ = ("split_large", "max_frame")
    MAX_SEND_CHUNK = 4 * MiB
    SMALL_FRAME = 64 * 1024
    #: Default :attr:`max_frame`: the largest answer of a mefstream server with the
    #: default ``max_request_mb`` (256 MiB of samples) plus :data:`FRAME_HEADROOM`.
    #: :class:`~software.server.server.MefStreamServer` sets its own limit from its
    #: ``max_request_mb``.
    MAX_FRAME = 256 * MiB + FRAME_HEADROOM
    #: Seconds a refused TLS client is left waiting for its handshake's answer.
    TLS_LINGER = 10.0
    _PEEK = 512  # bytes of a large frame looked at to find its large byte string

    def __init__(self, stream: Any, compress: bool = False,
                 max_frame: int | None = None) -> None:
        super().__init__(stream, compress=False)
        #: Set by ``FastConnection``: :meth:`recv` may return a :class:`SplitFrame`.
        self.split_large = False
        #: Largest frame accepted from the peer, in bytes.
        self.max_frame = self.MAX_FRAME if max_frame is None else check_max_frame(max_frame)

    def recv(self) -> bytes | SplitFrame:
        """Receive the next frame's payload (decompressed if flagged).

        With :attr:`split_large`, a large frame holding a large byte string (a segment)
        comes as a :class:`SplitFrame` whose string was received straight into its own
        bytes object: no copy of it is made after the kernel's.

        Raises
        ------
        EOFError
            The connection closed, or the frame was refused (see the class notes).
        """
        read = self.stream.read
        header = read(self.FRAME_HEADER.size)
        length, compressed = self.FRAME_HEADER.unpack(header)
        if length > self.max_frame:
            self._refuse(header, length)
        flush_size = len(self.FLUSHER)
        if length <= self.SMALL_FRAME:  # one read; slicing a small frame is cheap
            data = read(length + flush_size)[:length]
        else:
            found = None
            if self.split_large and not compressed:
                peek = getattr(self.stream, "peek", _no_peek)
                found = find_large_bytes(peek(min(length, self._PEEK)), length)
            if found is not None:  # head, the string into its own object, the rest
                start, size = found
                head = read(start)
                data = SplitFrame(head, read(size), read(length - start - size))
                read(flush_size)
                return data
            data = read(length)  # no full-size slice copy: payload, then the flusher
            read(flush_size)
        if compressed:
            inflater = zlib.decompressobj()  # a stock peer's frame: inflated within bounds
            data = inflater.decompress(data, self.max_frame + 1)
            if len(data) > self.max_frame:
                self._refuse(header, self.max_frame, "inflates to more than")
            if not inflater.eof:
                raise zlib.error("incomplete or truncated compressed frame")
        return data

    def _refuse(self, header: bytes, size: int, what: str = "announces") -> NoReturn:
        """Log, close the stream and raise ``EOFError`` for a frame over the limit."""
        stream, limit = self.stream, self.max_frame
        peer = getattr(stream, "peer", "the peer")
        if header[:1] in (b"\x15", b"\x16") and header[1:2] == b"\x03":  # a TLS record
            logger.warning("refused %s: it speaks TLS and this end does not (its TLS record "
                           "reads as a frame of %d bytes); use TLS on both ends (start.py "
                           "--tls-cert/--tls-key) or on neither", peer, size)
            drain = getattr(stream, "drain", None)
            if drain is not None:
                drain(self.TLS_LINGER)
        else:
            logger.warning("refused %s: its frame %s %d bytes, over max_frame=%d; connection "
                           "closed (raise max_frame on this end if such frames are "
                           "legitimate)", peer, what, size, limit)
        stream.close()
        raise EOFError(f"refused a frame of {size} bytes from {peer} (max_frame={limit})")

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one uncompressed frame. Blocks until written."""
        view = data if isinstance(data, memoryview) else memoryview(data)
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        size = view.nbytes
        header = self.FRAME_HEADER.pack(size, 0)
        write = self.stream.write
        if size <= self.SMALL_FRAME:
            write(b"".join((header, view, self.FLUSHER)))
            return
        write(header)
        step = self.MAX_SEND_CHUNK
        for start in range(0, size, step):
            write(view[start:start + step])
        write(self.FLUSHER)

    def send_parts(self, parts: list[bytes | memoryview]) -> None:
        """Send the concatenation of ``parts`` as one frame without concatenating them.

        Parameters
        ----------
        parts : list of bytes or 1-D byte memoryviews
            Runs of small parts are joined into one write; each part of at least
            ``SMALL_FRAME`` bytes is written from its own memory.
        """
        size = sum(map(len, parts))
        header = self.FRAME_HEADER.pack(size, 0)
        write = self.stream.write
        if size <= self.SMALL_FRAME:
            write(b"".join((header, *parts, self.FLUSHER)))
            return
        pending: list = [header]
        step = self.MAX_SEND_CHUNK
        for part in parts:
            if len(part) < self.SMALL_FRAME:
                pending.append(part)
                continue
            write(b"".join(pending))
            pending = []
            view = memoryview(part)
            for start in range(0, len(view), step):
                write(view[start:start + step])
        pending.append(self.FLUSHER)
        write(b"".join(pending))


def _no_peek(count: int) -> bytes:
    return b""


# ------------------------------------------------------------------ sending in parts
class Buffer:
    """A payload that ``FastConnection`` sends as brine ``bytes`` without copying.

    Put it first in a tuple of brine values, e.g. ``(Buffer(array), "<f8", (64, 256))``,
    and return that tuple from an exposed method or pass it to a callback: the peer
    receives ``(bytes, "<f8", (64, 256))``, so stock RPyC peers are served too. The
    memory is read when the message is sent (possibly later, by another thread), so it
    must not change after the buffer is made.

    Parameters
    ----------
    data : bytes-like
        Any C-contiguous buffer (a numpy array, bytes, a memoryview).
    """

    __slots__ = ("view",)

    def __init__(self, data: Any) -> None:
        view = memoryview(data)
        self.view = view if view.format == "B" and view.ndim == 1 else view.cast("B")

    def __len__(self) -> int:
        return self.view.nbytes

    def __repr__(self) -> str:
        return f"<Buffer {self.view.nbytes} bytes>"


class Brined:
    """A value already in brine's encoding, sent by ``FastConnection`` as that value.

    Return it from an exposed method or pass it to a callback: the peer (stock RPyC too)
    receives the value the bytes encode. Made for values whose encoding numpy can build
    at once (tuples of floats, see :func:`~software.transport.wire.encode_plain`), where
    brine would walk every item in Python.

    Parameters
    ----------
    data : bytes
        ``brine.dump(value)`` of a value brine can load.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"<Brined {len(self.data)} bytes>"


_TUPLE_TAGS = (brine.TAG_EMPTY_TUPLE, brine.TAG_TUP1, brine.TAG_TUP2, brine.TAG_TUP3,
               brine.TAG_TUP4)


def dump_parts(obj: Any, out: list) -> None:
    """Append brine's encoding of ``obj`` to ``out`` as parts, large byte strings uncopied.

    ``b"".join(out)`` equals ``brine.dump(obj)`` (with each :class:`Buffer` as the bytes
    it holds, each :class:`Brined` as the value it encodes); brine itself copies every
    byte string twice (tag concatenation, join).
    Raises ``TypeError`` for what brine cannot dump.
    """
    kind = type(obj)
    if kind is tuple:
        n = len(obj)
        if n < len(_TUPLE_TAGS):
            out.append(_TUPLE_TAGS[n])
        elif n < 256:
            out.append(brine.TAG_TUP_L1 + brine.I1.pack(n))
        else:
            out.append(brine.TAG_TUP_L4 + brine.I4.pack(n))
        for item in obj:
            dump_parts(item, out)
    elif kind is Buffer:
        view = obj.view
        if view.nbytes < _LARGE:
            brine._dump(view.tobytes(), out)
        else:
            out.append(brine.TAG_STR_L4 + brine.I4.pack(view.nbytes))
            out.append(view)
    elif kind is bytes and len(obj) >= _LARGE:
        out.append(brine.TAG_STR_L4 + brine.I4.pack(len(obj)))
        out.append(obj)
    elif kind is Brined:
        out.append(obj.data)
    else:
        brine._dump(obj, out)


# ------------------------------------------------------------- receiving in parts
_SKIP = {tag: 0 for tag in (brine.TAG_NONE, brine.TAG_EMPTY_STR, brine.TAG_EMPTY_TUPLE,
                            brine.TAG_TRUE, brine.TAG_FALSE, brine.TAG_NOT_IMPLEMENTED,
                            brine.TAG_ELLIPSIS, brine.TAG_UNICODE, brine.TAG_TUP1,
                            brine.TAG_TUP2, brine.TAG_TUP3, brine.TAG_TUP4, brine.TAG_SLICE,
                            brine.TAG_FSET)}
_SKIP.update({brine.TAG_STR1: 1, brine.TAG_STR2: 2, brine.TAG_STR3: 3, brine.TAG_STR4: 4,
              brine.TAG_TUP_L1: 1, brine.TAG_TUP_L4: 4, brine.TAG_FLOAT: 8,
              brine.TAG_COMPLEX: 16})
_SKIP.update({tag: 0 for tag in brine.IMM_INTS_LOADER})
_SIZED = {brine.TAG_STR_L1: brine.I1, brine.TAG_INT_L1: brine.I1,
          brine.TAG_STR_L4: brine.I4, brine.TAG_INT_L4: brine.I4}


def find_large_bytes(head: bytes, length: int) -> tuple[int, int] | None:
    """Where the first large byte string of an RPyC message starts, from its first bytes.

    Parameters
    ----------
    head : bytes
        The beginning of a message (message type byte, then brine).
    length : int
        The message's full length.

    Returns
    -------
    (start, size) or None
        Offset and length of the first byte string of at least 64 KiB, or None when
        ``head`` ends before one (or holds something unexpected).
    """
    pos, end = 1, len(head)
    while pos < end:
        tag = head[pos:pos + 1]
        pos += 1
        skip = _SKIP.get(tag)
        if skip is not None:
            pos += skip
            continue
        sizer = _SIZED.get(tag)
        if sizer is None or pos + sizer.size > end:
            return None
        size, = sizer.unpack_from(head, pos)
        pos += sizer.size
        if tag == brine.TAG_STR_L4 and size >= _LARGE:
            return (pos, size) if pos + size <= length else None
        pos += size
    return None


class SplitFrame:
    """A received message in three parts: the bytes before its large byte string, that
    string (its own bytes object) and the rest. ``FastConnection`` loads it."""

    __slots__ = ("head", "payload", "tail")

    def __init__(self, head: bytes, payload: bytes, tail: bytes) -> None:
        self.head, self.payload, self.tail = head, payload, tail

    def __len__(self) -> int:
        return len(self.head) + len(self.payload) + len(self.tail)

    def join(self) -> bytes:
        """The message as one bytes object (a copy)."""
        return b"".join((self.head, self.payload, self.tail))

    def load(self) -> Any:
        """Load the brine value after the message type byte; the string is not copied."""
        return brine._load(_SplitReader(self))


class _SplitReader:
    """File-like reader of a :class:`SplitFrame` for ``brine._load``: the read that asks
    for exactly the large string gets the payload object itself."""

    __slots__ = ("_head", "_payload", "_tail")

    def __init__(self, frame: SplitFrame) -> None:
        self._head = BytesIO(frame.head)
        self._head.seek(1)
        self._payload: bytes | None = frame.payload
        self._tail = BytesIO(frame.tail)

    def read(self, count: int) -> bytes:
        if self._payload is None:          # past the payload
            return self._tail.read(count)
        data = self._head.read(count)
        if data:
            if len(data) != count:
                raise ValueError("brine read across the start of a split frame's payload")
            return data
        payload, self._payload = self._payload, None
        if count != len(payload):
            raise ValueError("brine read across the end of a split frame's payload")
        return payload
