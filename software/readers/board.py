"""Which task each reader process is running: what tells a crash's cause from its victims.

When a reader dies, ``ProcessPoolExecutor`` fails every task it had handed out, and
terminates the other readers, without saying which task killed the dead one. The board
does: a scratch directory of the server holding one 8-byte file per reader process, named
by its pid, that the reader overwrites with the id of the task it starts (0 once done)::

    server: submit(_tracked_task, board, id, ...)  -->  reader 4242: pwrite(board/4242, id)
                                                                      run the task
                                                                      pwrite(board/4242, 0)
    pool broken --> the reader that died on its own (exit code not SIGTERM's, which the
    executor gives the others) --> board/<its pid> --> the task that crashed it

:func:`_tracked_task` runs in reader processes (it imports only :mod:`.worker`);
:class:`Board` is the server's side.
"""
from __future__ import annotations

import os

from ..mef3.scratch import OwnedDir
from .worker import _task

__all__ = ["BOARD_PREFIX", "Board"]

#: Name prefix of boards in the temporary directory (swept after their server died).
BOARD_PREFIX = "mefstream-board-"

_board_fds: dict[str, int] = {}   # in a reader process: board directory -> its file


def _board_fd(board: str) -> int | None:
    fd = _board_fds.get(board)
    if fd is None:
        try:
            fd = os.open(os.path.join(board, str(os.getpid())),
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:   # the board is gone (pool closed): the task still runs
            return None
        for old in list(_board_fds):   # a board of an earlier pool
            os.close(_board_fds.pop(old))
        _board_fds[board] = fd
    return fd


def _mark(fd: int | None, task_id: int) -> None:
    if fd is not None:
        try:
            os.pwrite(fd, task_id.to_bytes(8, "little"), 0)
        except OSError:
            pass


def _tracked_task(board: str, task_id: int, forgets, fn, *args):
    """Runs in a reader process: note ``task_id`` on the board, run the task, clear it."""
    fd = _board_fd(board)
    _mark(fd, task_id)
    try:
        return _task(forgets, fn, *args)
    finally:
        _mark(fd, 0)


class Board:
    """The server's side: the board directory, read after a reader died.

    Notes
    -----
    Thread-safe (reads files only). :meth:`close` removes the directory.
    """

    def __init__(self) -> None:
        self._dir = OwnedDir.create(BOARD_PREFIX)
        #: The directory the readers write in (passed with every task).
        self.path = self._dir.path

    def running(self, pid: int) -> int:
        """Id of the task reader ``pid`` was running (0: none, or unknown)."""
        try:
            with open(os.path.join(self.path, str(int(pid))), "rb") as fh:
                raw = fh.read(8)
        except OSError:
            return 0
        return int.from_bytes(raw, "little") if len(raw) == 8 else 0

    def forget(self, pid: int) -> None:
        """Remove the file of reader ``pid`` (it is gone)."""
        try:
            os.unlink(os.path.join(self.path, str(int(pid))))
        except OSError:
            pass

    def close(self) -> None:
        """Remove the board (idempotent)."""
        self._dir.remove()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._dir.removed

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Board {self._dir.path or 'closed'}>"
