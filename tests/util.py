"""Helpers shared by the tests."""
from __future__ import annotations

import os
import pathlib
import threading
import time

import numpy as np

#: Time stamp of the first sample of the test recordings.
START = 1_600_000_000_000_000
#: Sampling rate of the main test recording.
FS = 256.0


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.005) -> bool:
    """Wait until ``predicate()`` is true; raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        event.wait(interval)  # polling a predicate of another process; not a sync sleep
    return True


def reference(path: str, names, password=None) -> np.ndarray:
    """The whole-recording read of MefReader for ``names`` (rows in that order)."""
    import warnings

    from mef_tools.io import MefReader
    reader = MefReader(path, password2=password)
    starts = [reader.get_property("start_time", n) for n in names]
    ends = [reader.get_property("end_time", n) for n in names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = reader.get_data(list(names), int(min(starts)), int(max(ends)))
    return np.array(data)


def held(session: str, fifo: str) -> bytes:
    """A pool task that keeps its reader busy until the FIFO's writer closes it."""
    return pathlib.Path(fifo).read_bytes()


def release(fifo: str) -> None:
    """Let the task blocked on ``fifo`` finish (once a reader has it open)."""
    fds: list[int] = []

    def reader_blocked() -> bool:
        try:
            fds.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return False
        return True

    wait_until(reader_blocked, timeout=60)
    os.close(fds[0])
