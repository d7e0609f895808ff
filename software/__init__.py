"""mefstream: stream MEF3 recordings to experiment scripts over RPyC.

Data path (imports flow one way)::

    mef_access -> readers -> cache -> recording -> registry -> view -> service -> server
    (pymef, in reader processes)                   delivery, shared_memory_server -^
    socket_stream, framing -> transport -> shared_memory -> client

Importing this package does nothing else: reader processes re-import it (spawn).
"""
from .client import StreamRowIterator, StreamSegmentIterator, get_connection
from .errors import (CorruptSessionError, InvalidArgumentError, InvalidRangeError,
                     InvalidTypeError, MixedRateError, NotMefSessionError, OutsideDataRootError,
                     ReaderError, ServiceClosedError, SessionError, StreamError,
                     UnknownChannelError, WrongPasswordError)
from .server import MefStreamServer
from .wire import decode_segment, encode_segment

__all__ = [
    "CorruptSessionError", "InvalidArgumentError", "InvalidRangeError", "InvalidTypeError",
    "MefStreamServer", "MixedRateError", "NotMefSessionError", "OutsideDataRootError",
    "ReaderError", "ServiceClosedError", "SessionError", "StreamError", "StreamRowIterator",
    "StreamSegmentIterator", "UnknownChannelError", "WrongPasswordError", "decode_segment",
    "encode_segment", "get_connection",
]
