"""mefstream: stream MEF3 recordings to experiment scripts over RPyC.

Data path (imports flow one way)::

    mef_access -> readers -> cache -> recording -> registry -> view -> service -> server
    (pymef, in reader processes)                   delivery, shared_memory_server -^
    socket_stream, framing -> transport -> shared_memory -> client

Importing this package imports nothing else: each public name is loaded from its module
on first use (PEP 562). Reader processes are spawned and import ``software.readers``;
they must not load rpyc, the server and the client (about 10 MiB per reader).
"""
from __future__ import annotations

import importlib

#: public name -> module that defines it
_HOME = {
    "StreamRowIterator": "client", "StreamSegmentIterator": "client",
    "get_connection": "client", "MefStreamServer": "server",
    "decode_segment": "wire", "encode_segment": "wire",
    **{name: "errors" for name in (
        "CorruptSessionError", "InvalidArgumentError", "InvalidRangeError",
        "InvalidTypeError", "MixedRateError", "NotMefSessionError", "OutsideDataRootError",
        "ReaderError", "ServiceClosedError", "SessionError", "StreamError",
        "UnknownChannelError", "WrongPasswordError")},
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'software' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
