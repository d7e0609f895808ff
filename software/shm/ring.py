"""A live stream's ring of samples in one memory file that processes on the host can share.

Sample index 0 is the first sample pushed; indices keep growing. Row ``r`` holds
``counts[r]`` samples in all, of which the ring keeps the last :attr:`Ring.capacity`
(``history`` plus a quarter of slack for rows pushed ahead of the others). The head is the
smallest count: where every channel has samples. The file (a sealed ``memfd``: it has no
name in ``/dev/shm`` and cannot be shrunk under a reader) is laid out as::

    0    magic "MEFRING1", token (16 random bytes: who maps the file can prove it)
    24   n_channels, history, capacity, dtype code, data offset       (fixed)
    64   head        samples every channel has (published; readers never read past it)
    72   reserved    highest index any row is being written to (the overwrite check)
    80   generation  the committed counts are states[generation & 1]
    88   lease       the producer lease allowed to write (0: the owner itself)
    96   closed      1 once the stream closed
    104  writes      writes committed
    128  seq         (uint32) bumped after each publish: the futex word waiters sleep on
    192  states      2 x (2 + n_channels) int64: [head, top, count of each row]
    data             n_channels x capacity samples, page aligned

One writer at a time (the owner's lock, or the one producer holding the lease) writes
:meth:`Ring.write`: **reserve** (``reserved`` raised before any sample is stored),
**fill**, **commit** (the next counts written to the other state, then one store of the
generation) and **publish** (``head``, ``seq``, a futex wake: the followers first,
the owner's thread after them). A writer killed before the
commit leaves nothing visible: head has not moved, and samples it overwrote are past
``reserved - capacity``, which readers check. Killed between commit and publish: the
owner's :meth:`Ring.repair` publishes the committed head. Readers copy ``[start, stop)``
with ``stop <= head`` and then check ``start >= reserved - capacity`` (a seqlock on the
write position): a copy that raced an overwrite is refused, never returned.

The protocol needs stores, and loads, to stay in program order between processes:
x86-64's memory model gives that, so the ring is shared only there (:data:`SHAREABLE`);
elsewhere it lives in the owner's memory. Imported by clients: no rpyc here.
"""
from __future__ import annotations

import mmap
import os
import secrets
import weakref

import numpy as np

from . import futex
from .ring_file import MAGIC, SHAREABLE, TOKEN_BYTES, create, open_shared

__all__ = ["DTYPES", "FOLLOWER", "RING_TAG", "SERVER", "SHAREABLE", "Ring"]

#: Sample types a live stream may hold (rigs produce int16).
DTYPES = ("float64", "float32", "int16", "int32")
_HEAD, _RESERVED, _GEN, _LEASE, _CLOSED, _WRITES = 8, 9, 10, 11, 12, 13   # int64 words
_SEQ_OFFSET, _STATES_OFFSET = 128, 192
#: First item of the server's offer of a ring (``open_ring``), checked by both ends.
RING_TAG = "mefstream-ring"
#: Futex bits of the two kinds of waiters (:meth:`Ring.wait`).
FOLLOWER, SERVER = 1, 2


def _layout(n_channels: int, capacity: int, dtype: np.dtype) -> tuple[int, int]:
    """(data offset, file size) of a ring."""
    header = _STATES_OFFSET + 2 * (2 + n_channels) * 8
    data = -(-header // mmap.PAGESIZE) * mmap.PAGESIZE
    return data, data + n_channels * capacity * dtype.itemsize


class Ring:
    """Samples of ``n_channels`` channels, the last ``history + slack`` of each.

    Parameters
    ----------
    n_channels : int
        Channels (rows).
    history : int
        Samples every channel keeps at least (the longest request that can wait).
    dtype : str
        One of :data:`DTYPES`.
    shared : bool
        Put the samples in a memory file other processes of this host can map
        (:meth:`share`, :meth:`attach`; its memory is taken at once, see
        :mod:`software.shm.ring_file`); otherwise (or where :data:`SHAREABLE` is False)
        in this process's memory, taken as samples arrive.

    Raises
    ------
    MemoryError
        A shared ring does not fit in memory.
    """

    def __init__(self, n_channels: int, history: int, dtype: str = "float64",
                 shared: bool = False) -> None:
        history, n_channels, dtype = int(history), int(n_channels), np.dtype(str(dtype))
        capacity = history + max(1, history // 4)
        offset, size = _layout(n_channels, capacity, dtype)
        try:
            mm, self._fd = create(size, shared)
        except OSError as exc:
            raise MemoryError(f"a ring of {n_channels} channels x {capacity} samples of "
                              f"{dtype.name} ({size / 2**20:.1f} MiB) does not fit in memory "
                              f"({exc}); keep a shorter history.") from exc
        # the memfd is closed with the ring if nobody called close()
        self._closer = None if self._fd is None else weakref.finalize(self, os.close, self._fd)
        self.token = secrets.token_bytes(TOKEN_BYTES)
        fixed = np.frombuffer(mm, dtype=np.int64, count=8)
        mm[8:8 + TOKEN_BYTES] = self.token
        fixed[3:8] = (n_channels, history, capacity, DTYPES.index(dtype.name), offset)
        mm[:8] = MAGIC
        self._bind(mm, writable=True, shared=self._fd is not None)

    @classmethod
    def attach(cls, pid: int, fd: int, size: int, writable: bool = False) -> Ring:
        """Map the ring another process of this host shares (its :meth:`share`).

        Parameters
        ----------
        pid, fd, size : int
            What the owner's :meth:`share` returned.
        writable : bool
            Map it for writing (a producer holding the lease); otherwise read-only.

        Raises
        ------
        OSError
            No such file here (another host, another user, no ``/proc``).
        ValueError
            The file is not a ring of this version, or not of that size.
        """
        mm = open_shared(pid, fd, size, writable)
        ring = cls.__new__(cls)
        ring._fd, ring._closer = None, None
        ring.token = bytes(mm[8:8 + TOKEN_BYTES])
        ring._bind(mm, writable, shared=True)
        return ring

    def _bind(self, mm: mmap.mmap, writable: bool, shared: bool) -> None:
        n, history, capacity, code, offset = (int(v) for v in np.frombuffer(
            mm, dtype=np.int64, count=5, offset=24))
        if not (n > 0 and 0 < history < capacity and 0 <= code < len(DTYPES)):
            raise ValueError("not a mefstream ring of this version")
        dtype = np.dtype(DTYPES[code])
        if _layout(n, capacity, dtype) != (offset, len(mm)):
            raise ValueError("the ring's size does not match its header")
        self._mm = mm
        self.writable = writable
        self.history, self.capacity, self.dtype = history, capacity, dtype
        self.slack = capacity - history
        # header words through memoryviews: an item read or written is one aligned 8-byte
        # (4-byte: seq) load or store, without numpy's overhead on the hot paths
        self._q = memoryview(mm)[:_SEQ_OFFSET].cast("q")
        self._seq = memoryview(mm)[_SEQ_OFFSET:_SEQ_OFFSET + 4].cast("I")
        self._seq_address = np.frombuffer(mm, dtype=np.uint32, count=1,
                                          offset=_SEQ_OFFSET).ctypes.data
        self._states = np.frombuffer(mm, dtype=np.int64, count=2 * (2 + n),
                                     offset=_STATES_OFFSET).reshape(2, 2 + n)
        self._stride = 2 + n           # a state: head (smallest count), top (largest), counts
        self._state_rows = (self._states[0], self._states[1])
        self._sq = memoryview(mm)[_STATES_OFFSET:_STATES_OFFSET + 16 * (2 + n)].cast("q")
        self._data = np.frombuffer(mm, dtype=dtype, count=n * capacity,
                                   offset=offset).reshape(n, capacity)
        #: Whether other processes may map it (then each publish wakes their waiters).
        self.shared = shared
        if shared:   # followers first: on a small machine they get the idle core
            wake_followers = futex.waker(self._seq_address, FOLLOWER)
            wake_server = futex.waker(self._seq_address, SERVER)

            def wake() -> None:
                wake_followers()
                wake_server()
            self._wake = wake
        else:
            self._wake = None

    # ---- what everyone reads ----------------------------------------------------------

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return self._data.shape[0]

    @property
    def nbytes(self) -> int:
        """Memory the samples take."""
        return self._data.nbytes

    @property
    def head(self) -> int:
        """Samples every channel has (published)."""
        return self._q[_HEAD]

    @property
    def reserved(self) -> int:
        """Highest count any row has or is being written to."""
        return self._q[_RESERVED]

    @property
    def first_available(self) -> int:
        """The oldest index every channel still holds."""
        return max(0, self._q[_RESERVED] - self.capacity)

    @property
    def counts(self) -> np.ndarray:
        """Samples of each row (committed; the writer's to read, not to change)."""
        return self._states[self._q[_GEN] & 1, 2:]

    @property
    def level(self) -> bool:
        """Whether every row has the same count (committed; a segment may be pushed)."""
        base = (self._q[_GEN] & 1) * self._stride
        return self._sq[base] == self._sq[base + 1]

    @property
    def top(self) -> int:
        """The largest count of a row (committed)."""
        return self._sq[(self._q[_GEN] & 1) * self._stride + 1]

    @property
    def seq(self) -> int:
        """The futex word: changes with every publish (read it before checking the head)."""
        return self._seq[0]

    @property
    def lease(self) -> int:
        """The producer lease allowed to write (0: the owner)."""
        return self._q[_LEASE]

    @property
    def closed(self) -> bool:
        """Whether the owner closed the stream."""
        return bool(self._q[_CLOSED])

    @property
    def writes(self) -> int:
        """Writes committed since the ring was made."""
        return self._q[_WRITES]

    def wait(self, seq: int, timeout: float, who: int = FOLLOWER) -> bool:
        """Sleep until a publish changes :attr:`seq` from ``seq`` (at most ``timeout`` s).

        ``who`` is :data:`FOLLOWER` (woken first) or :data:`SERVER` (the owner's thread
        that follows a producer: woken just after). Returns False on the timeout. Only for
        shared rings (futexes).
        """
        return futex.wait(self._seq_address, seq, timeout, who)

    def copy(self, rows, start: int, stop: int, out: np.ndarray) -> bool:
        """Copy samples ``[start, stop)`` of ``rows`` into ``out`` (len(rows) x n).

        Safe without the writer's lock, in any process: returns False when a write
        overwrote some of them before or during the copy (``out`` holds nothing usable
        then). The caller checked that ``stop <= head``.
        """
        lo = start % self.capacity
        n = stop - start
        first = min(n, self.capacity - lo)
        data = self._data
        out[:, :first] = data[rows, lo:lo + first]
        if first < n:
            out[:, first:] = data[rows, :n - first]
        return start >= self._q[_RESERVED] - self.capacity

    def take(self, rows, start: int, stop: int) -> np.ndarray | None:
        """Samples ``[start, stop)`` of ``rows`` (a slice, a list, or one row index: 1-D)
        in an array of their own, or None when a write overwrote some of them (see
        :meth:`copy`). The caller checked that ``stop <= head``."""
        capacity, data = self.capacity, self._data
        lo, n = start % capacity, stop - start
        first = min(n, capacity - lo)
        if isinstance(rows, list):             # advanced indexing makes the copy
            out = data[rows, lo:lo + first]
            if first < n:
                out = np.concatenate((out, data[rows, :n - first]), axis=-1)
        else:   # np.empty + copyto: far cheaper than .copy() of a large strided view
            part = data[rows, lo:lo + first]
            out = np.empty(part.shape[:-1] + (n,), dtype=self.dtype)
            np.copyto(out[..., :first], part)
            if first < n:
                np.copyto(out[..., first:], data[rows, :n - first])
        return out if start >= self._q[_RESERVED] - capacity else None   # the seqlock check

    # ---- the writer's side (one at a time) ------------------------------------------

    def write(self, block: np.ndarray, rows: slice | int = slice(None)) -> None:
        """Append ``block`` (rows x n, already of the ring's dtype) at the rows' counts.

        Every row written must have the same count (a segment: all rows at the head; a
        row push: one row). At most :attr:`capacity` samples are written per call.
        """
        n = block.shape[-1]
        if n == 0:
            return
        if not isinstance(rows, int):          # a segment: the four steps, inlined
            q, sq, capacity = self._q, self._sq, self.capacity
            gen = q[_GEN]
            at = sq[(gen & 1) * self._stride + 2]
            if at + n > q[_RESERVED]:
                q[_RESERVED] = at + n                                  # reserve
            lo = at % capacity
            if lo + n <= capacity:
                self._data[:, lo:lo + n] = block                       # fill
            else:
                self.fill(block, rows, at)
            self._state_rows[(gen + 1) & 1].fill(at + n)               # commit
            q[_GEN] = gen + 1
            q[_WRITES] += 1
            q[_HEAD] = at + n                                          # publish
            self._seq[0] = (self._seq[0] + 1) & 0xFFFFFFFF
            if self._wake is not None:
                self._wake()
            return
        at = self.reserve(rows, n)
        self.fill(block, rows, at)
        self.commit(rows, n)
        self.publish()

    def reserve(self, rows, n: int) -> int:
        """Step 1 of a write: announce the samples about to be overwritten; returns the
        index the rows' samples start at."""
        q = self._q
        row = rows if isinstance(rows, int) else (rows.start or 0)
        at = self._sq[(q[_GEN] & 1) * self._stride + 2 + row]
        if at + n > q[_RESERVED]:
            q[_RESERVED] = at + n
        return at

    def fill(self, block: np.ndarray, rows, at: int) -> None:
        """Step 2: store the samples (not visible yet)."""
        n = block.shape[-1]
        lo = at % self.capacity
        first = min(n, self.capacity - lo)
        if first == n:
            self._data[rows, lo:lo + n] = block
            return
        self._data[rows, lo:lo + first] = block[..., :first]
        self._data[rows, :n - first] = block[..., first:]

    def commit(self, rows, n: int) -> None:
        """Step 3: count the samples in the other state, then switch to it (one store).

        ``rows`` is every row (``slice(None)``: all at the same count) or one row index.
        """
        q = self._q
        gen = q[_GEN]
        nxt = self._states[(gen + 1) & 1]
        if isinstance(rows, int):
            nxt[:] = self._states[gen & 1]
            nxt[2 + rows] += n
            nxt[0] = nxt[2:].min()
            nxt[1] = max(nxt[1], nxt[2 + rows])
        else:                                  # a segment: every row at the same count
            nxt.fill(self._sq[(gen & 1) * self._stride + 2] + n)
        q[_GEN] = gen + 1
        q[_WRITES] += 1

    def publish(self) -> None:
        """Step 4: move the head to the committed one and wake every waiter."""
        q = self._q
        q[_HEAD] = self._sq[(q[_GEN] & 1) * self._stride]
        self._seq[0] = (self._seq[0] + 1) & 0xFFFFFFFF
        if self._wake is not None:
            self._wake()

    repair = publish   # a writer killed between commit and publish: publish for it

    def set_lease(self, lease: int) -> None:
        """Let producer ``lease`` write (0: only the owner)."""
        self._q[_LEASE] = int(lease)

    def mark_closed(self) -> None:
        """Tell every reader the stream closed, and wake them."""
        self._q[_CLOSED] = 1
        self._seq[0] = (self._seq[0] + 1) & 0xFFFFFFFF
        if self._wake is not None:
            self._wake()

    # ---- sharing ----------------------------------------------------------------------

    def share(self) -> tuple[int, int, int] | None:
        """``(pid, fd, size)`` for :meth:`attach` in another process; None when this ring
        is not shared (or closed)."""
        if self._fd is None:
            return None
        return os.getpid(), self._fd, len(self._mm)

    def close(self) -> None:
        """No more attaching (idempotent). The memory goes with the last mapping: this
        object's (when it is collected) and those of the processes that attached."""
        self._fd = None
        if self._closer is not None:
            self._closer()

    def __repr__(self) -> str:
        where = ("shared" if self._fd is not None else "attached") if self.shared \
            else "local"
        return (f"<Ring {where} {self.n_channels} x {self.capacity} {self.dtype.name}, "
                f"head {self.head}>")
