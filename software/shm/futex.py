"""Wake-ups across processes: Linux futexes on a 32-bit word of a shared mapping.

A writer changes the word and calls :func:`wake`; a waiter reads the word, finds nothing
new, and calls :func:`wait` with the value it read: the kernel puts it to sleep only if the
word still holds that value, so a change between the read and the wait is never missed.
One :func:`wake` wakes every waiter of every process mapping the word (the futex key is
the page of the shared file, not an address), and a waiter may map it read-only. A waiter
may say which wakes concern it (``bits``, a bitset futex) so that a writer can wake some
waiters before others: the live ring wakes its followers first and the server's own thread
after them, so on a machine with few cores the followers get the idle one.

The call goes through ``ctypes`` (which releases the GIL while the thread sleeps). Where
futexes are not available (:data:`AVAILABLE` is False: not Linux, an unknown machine),
callers do without shared memory.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import logging
import platform
import sys
import time

__all__ = ["ALL", "AVAILABLE", "wait", "wake", "waker"]

logger = logging.getLogger(__name__)

#: ``SYS_futex`` by machine (``uname -m``).
_SYSCALLS = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
# shared (not _PRIVATE): the waiters are other processes. The bitset wait takes an
# absolute CLOCK_MONOTONIC deadline (time.monotonic's clock on Linux).
_FUTEX_WAIT_BITSET, _FUTEX_WAKE_BITSET = 9, 10
_EVERYONE = 2**31 - 1
#: Every bit: a wait woken by any wake, a wake of every waiter.
ALL = 0xFFFFFFFF


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load():
    number = _SYSCALLS.get(platform.machine().lower())
    if not sys.platform.startswith("linux") or number is None:
        return None, None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syscall
    except (OSError, AttributeError) as exc:
        logger.debug("no syscall() in libc (%s): no futexes", exc)
        return None, None
    call.restype = ctypes.c_long
    return call, ctypes.c_long(number)


_syscall, _SYS_FUTEX = _load()

#: Whether :func:`wait` and :func:`wake` work on this system.
AVAILABLE = _syscall is not None


def wait(address: int, expected: int, timeout: float, bits: int = ALL) -> bool:
    """Sleep while the 32-bit word at ``address`` holds ``expected``, at most ``timeout`` s.

    Parameters
    ----------
    address : int
        Address of a 4-byte aligned word of a shared mapping (``array.ctypes.data``).
    expected : int
        The value the caller read (0 .. 2**32 - 1).
    timeout : float
        Longest sleep in seconds (> 0).
    bits : int
        Wakes that concern this waiter: those whose bits meet these (default: all).

    Returns
    -------
    bool
        True when woken (or the word no longer held ``expected``); False on the timeout.
        A signal may end the sleep early: callers re-check their condition either way.
    """
    deadline = time.monotonic() + max(float(timeout), 0.0)
    seconds = int(deadline)
    spec = _Timespec(seconds, int((deadline - seconds) * 1e9))
    done = _syscall(_SYS_FUTEX, ctypes.c_void_p(address), ctypes.c_int(_FUTEX_WAIT_BITSET),
                    ctypes.c_uint32(expected & 0xFFFFFFFF), ctypes.byref(spec), None,
                    ctypes.c_uint32(bits))
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.ETIMEDOUT:
        return False
    if code in (errno.EAGAIN, errno.EINTR):
        return True
    raise OSError(code, f"futex wait failed: {errno.errorcode.get(code, code)}")


def wake(address: int, bits: int = ALL) -> int:
    """Wake every thread of every process waiting on the word at ``address`` whose
    ``bits`` meet these.

    Returns
    -------
    int
        How many were woken (0: nobody waited).
    """
    woken = _syscall(_SYS_FUTEX, ctypes.c_void_p(address), ctypes.c_int(_FUTEX_WAKE_BITSET),
                     ctypes.c_uint32(_EVERYONE), None, None, ctypes.c_uint32(bits))
    return max(int(woken), 0)


def waker(address: int, bits: int = ALL):
    """:func:`wake` of the word at ``address`` and ``bits``, its arguments made once (for
    hot paths).

    Returns
    -------
    callable
        Called with no argument; returns what the system call returned.
    """
    return functools.partial(_syscall, _SYS_FUTEX, ctypes.c_void_p(address),
                             ctypes.c_int(_FUTEX_WAKE_BITSET), ctypes.c_uint32(_EVERYONE), None,
                             None, ctypes.c_uint32(bits))
