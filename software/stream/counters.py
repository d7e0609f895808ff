"""Server-wide event counters that views, deliverers and encoders add to.

One :class:`Counters` per server is handed down to every connection's encoder and every
view's callback deliverer; the root service's ``get_stats()`` reads them together with the
cache's and the reader pool's own counts.
"""
from __future__ import annotations

import threading
from collections import Counter

__all__ = ["Counters"]


class Counters:
    """Named integer counters, safe to add to from any thread.

    Names in use: ``connections`` (open now), ``connections_total``, ``bytes_served``,
    ``answers_shared`` (through shared memory), ``shm_fallbacks`` (an area was full),
    ``callbacks_delivered``, ``callbacks_failed``, ``client_callback_errors``,
    ``hung_callbacks``, ``dropped_requests`` (asked for samples a live ring no longer holds),
    and two levels: ``waiting_requests`` (callback requests not answered yet, on every
    connection) and ``pending_answer_bytes`` (answers assembled for a callback and not sent
    yet).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` (may be negative) to counter ``name``."""
        with self._lock:
            self._values[name] += amount

    def get(self, name: str) -> int:
        """The value of ``name`` (0 if never added to)."""
        with self._lock:
            return self._values[name]

    def snapshot(self) -> tuple[tuple[str, int], ...]:
        """Every counter as sorted ``(name, value)`` pairs."""
        with self._lock:
            return tuple(sorted(self._values.items()))

    def __repr__(self) -> str:
        return f"<Counters {dict(self.snapshot())}>"
