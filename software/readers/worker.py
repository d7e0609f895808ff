"""Code that runs in the reader processes: open sessions, decode reads, watch the server.

A reader process imports this module, :mod:`software.mef3` and :mod:`software.shm` and
nothing else of mefstream (no rpyc, no server, no client). Each keeps its open sessions in
a per-process dict; tasks are plain functions the pool submits by reference.
"""
from __future__ import annotations

import mmap
import os
import signal
import threading
import time
from collections import OrderedDict

import numpy as np

from ..mef3.metadata import SessionInfo
from ..mef3.samples import STORED_DTYPE

#: Sessions a reader process keeps open at once (least recently used closed first).
MAX_OPEN_PER_WORKER = 16

_open_sessions: OrderedDict = OrderedDict()  # lives in each reader process


#: Seconds between a reader's checks that the server process is still alive.
PARENT_CHECK_SECONDS = 0.5


def _exit_with_parent(parent: int) -> None:
    """Runs in a reader's daemon thread: end the reader once the server process is gone.

    A killed server (SIGKILL, OOM killer) cannot stop its readers, and a reader waiting
    for its next task would wait forever; orphaned, it is re-parented, which this notices.
    """
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)  # polling another process's liveness
    os._exit(0)


def _worker_init(nice: int, server: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the server decides shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the server's pid from the server: a reader still starting when it was killed is
    # already orphaned here, and its getppid() would name its new parent
    threading.Thread(target=_exit_with_parent, args=(server,), name="parent-watch",
                     daemon=True).start()
    if nice:
        try:
            os.nice(nice)
        except (AttributeError, OSError):  # not on this platform, or not allowed
            pass


def _session(path: str, password: str | None):
    from ..mef3.access import MefSessionFile  # imported in reader processes only

    key = (path, password)
    session = _open_sessions.get(key)
    if session is None:
        session = MefSessionFile(path, password)
        _open_sessions[key] = session
        while len(_open_sessions) > MAX_OPEN_PER_WORKER:
            _open_sessions.popitem(last=False)[1].close()
    else:
        _open_sessions.move_to_end(key)
    return session


def _inspect_task(path: str, password: str | None) -> SessionInfo:
    """Runs in a reader process: open the session and return its metadata."""
    return _session(path, password).info


def _envelope_task(path: str, password: str | None, max_groups: int) -> dict:
    """Runs in a reader process: every channel's block minima and maxima (no decoding)."""
    from ..mef3.envelope import block_envelopes  # imported in reader processes only

    return block_envelopes(_session(path, password), max_groups)


def _read_task(path: str, password: str | None, names: tuple[str, ...], start: int,
               stop: int) -> np.ndarray:
    """Runs in a reader process: grid samples ``[start, stop)`` of ``names``."""
    return _session(path, password).read_grid(names, start, stop)


def _records_task(path: str, password: str | None) -> tuple:
    """Runs in a reader process: the session's records as plain tuples (see
    :mod:`software.mef3.records`)."""
    from ..mef3.records import session_records  # imported in reader processes only
    return session_records(_session(path, password))


def _read_into_task(path: str, password: str | None, names: tuple[str, ...], start: int,
                    stop: int, area: str, offset: int) -> np.ndarray | None:
    """Runs in a reader process: decode ``[start, stop)`` into landing area ``area``.

    Returns None, or the samples themselves when the area cannot be mapped (a pool rebuilt
    after a crash removed it between the reservation and this task).
    """
    try:
        out = reader_view(area, offset, (len(names), stop - start))
    except OSError:
        return _read_task(path, password, names, start, stop)
    try:
        _session(path, password).read_grid(names, start, stop, out=out)
    finally:
        reader_release(area, offset, out.nbytes)


def _read_task_stored(path: str, password: str | None, names: tuple[str, ...], start: int,
                      stop: int) -> np.ndarray:
    """Runs in a reader process: grid samples ``[start, stop)`` of ``names`` as stored
    (int32, see :mod:`software.mef3.samples`)."""
    return _session(path, password).read_stored(names, start, stop)


def _read_into_task_stored(path: str, password: str | None, names: tuple[str, ...],
                           start: int, stop: int, area: str, offset: int) -> np.ndarray | None:
    """Runs in a reader process: :func:`_read_task_stored` into landing area ``area``.

    Returns None, or the samples themselves when the area cannot be mapped.
    """
    try:
        out = reader_view(area, offset, (len(names), stop - start), STORED_DTYPE)
    except OSError:
        return _read_task_stored(path, password, names, start, stop)
    try:
        _session(path, password).read_stored(names, start, stop, out=out)
    finally:
        reader_release(area, offset, out.nbytes)


#: Reads that can land in a landing area: task -> (its landing variant, sample dtype).
LANDED = {_read_task: (_read_into_task, np.dtype(np.float64)),
          _read_task_stored: (_read_into_task_stored, STORED_DTYPE)}


def _forget_task(path: str) -> None:
    """Runs in a reader process: close every open handle of ``path``."""
    for key in [k for k in _open_sessions if k[0] == path]:
        _open_sessions.pop(key).close()


_forgotten_up_to = 0   # the pool's forget epoch this reader has applied


def _task(forgets: tuple[int, tuple[str, ...]], fn, *args):
    """Runs in a reader process: apply the forgets it missed, then run ``fn(*args)``.

    ``forgets`` is ``(epoch, paths)``: the pool's count of forgets so far and the paths
    of the last ``len(paths)`` of them. Every task carries it, so a reader that did not
    run a forget's own task (another reader took two) closes the stale handles before
    its next task; one that missed more than the window closes everything.
    """
    global _forgotten_up_to
    epoch, recent = forgets
    if epoch > _forgotten_up_to:
        first = epoch - len(recent)          # epoch before the oldest one carried
        if _forgotten_up_to < first:
            for key in list(_open_sessions):
                _open_sessions.pop(key).close()
        else:
            for path in recent[_forgotten_up_to - first:]:
                _forget_task(path)
        _forgotten_up_to = epoch
    return fn(*args)


#: Seconds between a broadcast task's checks that every reader has checked in.
RENDEZVOUS_POLL = 0.002


def _everywhere_task(rendezvous: str, count: int, wait: float, fn, *args):
    """Runs in a reader process: ``fn(*args)``, then wait for ``count`` readers to do so.

    Each reader checks in with a file named by its pid in directory ``rendezvous`` and
    holds on (at most ``wait`` seconds) until ``count`` have: a reader cannot take a
    second task of the same broadcast while another has not run one.
    """
    try:
        return fn(*args)
    finally:
        try:
            os.close(os.open(os.path.join(rendezvous, str(os.getpid())),
                             os.O_CREAT | os.O_WRONLY, 0o600))
            deadline = time.monotonic() + wait
            while len(os.listdir(rendezvous)) < count and time.monotonic() < deadline:
                time.sleep(RENDEZVOUS_POLL)  # polling other processes' check-ins
        except OSError:  # the broadcast is over (its directory removed)
            pass



_reader_maps: dict[str, mmap.mmap] = {}   # landing area path -> its mapping


def reader_view(path: str, offset: int, shape: tuple[int, int],
                dtype=np.float64) -> np.ndarray:
    """In a reader process: the ``dtype`` array at ``offset`` of the area at ``path``."""
    mm = _reader_maps.get(path)
    if mm is None:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            mm = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        for old in list(_reader_maps):   # an area of an earlier pool generation
            _reader_maps.pop(old).close()
        _reader_maps[path] = mm
    return np.ndarray(shape, dtype=dtype, buffer=mm, offset=offset)


def reader_release(path: str, offset: int, nbytes: int) -> None:
    """In a reader process: unmap the pages of a region it wrote from this process only.

    The samples stay in the file for the server; without this every reader would keep
    every page it ever wrote mapped, and each process's RSS would count the area again.
    """
    mm = _reader_maps.get(path)
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = offset - offset % mmap.PAGESIZE
    try:
        mm.madvise(mmap.MADV_DONTNEED, start, min(offset + nbytes, len(mm)) - start)
    except OSError:  # only memory accounting suffers
        pass
