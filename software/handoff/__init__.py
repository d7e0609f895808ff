"""Hand-offs to the tools analyses already use: MNE, PyTorch and dask.

Each lives in its own module and imports its library only when used (none of them is a
core requirement): ``to_mne_raw`` (``software.handoff.mne``), ``WindowDataset`` and
``BlockRunSampler`` (``software.handoff.torch``), ``to_dask_array``
(``software.handoff.dask``). Worker processes read through one cached connection each
(``software.handoff.session``).
"""
from __future__ import annotations

import importlib

_HOME = {"to_mne_raw": "mne", "WindowDataset": "torch", "BlockRunSampler": "torch",
         "to_dask_array": "dask", "close_connections": "session"}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'software.handoff' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
