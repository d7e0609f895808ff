"""Which of the servers registered under a name answers: tried in turn, freshest first.

The registry lists a server until its pruning timeout (240 s by default) even if it was
killed without unregistering, and anyone who reaches the registry can register a port.
A client given several candidates tries each with a short TCP connect and takes the
first that accepts, newest registration first (a live server re-registers every minute,
so a dead one's entry is the oldest)::

    lookup("MEF") -> [(A, 1) dead since 3 min, (B, 2) live]  ->  try B: accepts -> B
"""
from __future__ import annotations

import socket
from collections.abc import Sequence

from .address import format_address

__all__ = ["CHECK_TIMEOUT", "first_answering"]

#: Longest wait for one candidate's TCP connect, in seconds.
CHECK_TIMEOUT = 1.0


def first_answering(servers: Sequence[tuple[str, int]], service: str, registry: object,
                    timeout: float = CHECK_TIMEOUT) -> tuple[str, int]:
    """The first of ``servers`` (tried last to first) that accepts a TCP connection.

    Parameters
    ----------
    servers : sequence of (str, int)
        ``(host, port)`` as :func:`~software.discovery.lookup` returns them (oldest
        registration first).
    service, registry
        For the error message.
    timeout : float
        Seconds to wait for each candidate (at most :data:`CHECK_TIMEOUT`).

    Raises
    ------
    ConnectionRefusedError
        None of them accepts; the message lists why each failed.
    """
    wait = min(max(float(timeout), 0.05), CHECK_TIMEOUT)
    failures = []
    for host, port in reversed(list(servers)):
        try:
            with socket.create_connection((host, int(port)), timeout=wait):
                return host, int(port)
        except (OSError, ValueError, OverflowError) as exc:   # ValueError: a bad host
            reason = "no answer" if isinstance(exc, TimeoutError) else \
                (getattr(exc, "strerror", None) or type(exc).__name__)
            failures.append(f"{format_address((host, int(port)))} ({reason})")
    raise ConnectionRefusedError(
        f"{len(failures)} server(s) are registered as {service!r} at the registry "
        f"{registry!r} but none accepts connections: {', '.join(failures)}. A server killed "
        f"without unregistering stays listed until the registry's pruning timeout (240 s "
        f"by default); start one with 'python start.py --registry {registry} "
        f"--service-name {service}'.")
