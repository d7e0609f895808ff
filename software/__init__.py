"""mefstream: stream MEF3 recordings, and live signals, to experiment scripts over RPyC.

The folders are the data path; imports run one way, down it::

    cli/ --> plot/, handoff/, live/recorder --> client/ --> discovery/, transport/, shm/
    server/ --> live/ --> stream/ --> cache/ --> readers/ --> mef3/ (pymef: readers only)
                              +--> transport/        +--> shm/  (tmpfs: landing, answers)
    errors, validation: used by every layer

Importing this package imports nothing else: each public name below is loaded from its
module on first use (PEP 562). Reader processes are spawned and import
``software.readers.worker``, which runs this file; they must not load rpyc, the server and
the client (about 10 MiB per reader).
"""
from __future__ import annotations

import importlib

#: public name -> module that defines it
_HOME = {
    "StreamRowIterator": "client.iterators", "StreamSegmentIterator": "client.iterators",
    "get_connection": "client.connect", "MefStreamServer": "server.server",
    "RemoteStream": "client.stream", "RemoteRoot": "client.root", "Record": "client.records",
    "plot_window": "plot.window", "Recorder": "live.recorder",
    "LiveStream": "live.source", "Replay": "live.replay",
    "to_mne_raw": "handoff.mne", "WindowDataset": "handoff.torch",
    "BlockRunSampler": "handoff.torch", "to_dask_array": "handoff.dask",
    "decode_segment": "transport.wire", "encode_segment": "transport.wire",
    **{name: "errors" for name in (
        "CorruptSessionError", "DroppedSamplesError", "InvalidArgumentError", "InvalidRangeError",
        "InvalidTypeError", "MixedRateError", "NoFileOpenError", "NotMefSessionError",
        "OutsideDataRootError", "PushRefusedError",
        "ReaderError", "ServiceClosedError", "SessionError", "SessionExistsError", "StreamError",
        "UnknownChannelError", "WaitingLimitError", "WrongPasswordError", "ServerGoneError",
        "RemoteError")},
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
