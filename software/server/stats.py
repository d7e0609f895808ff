"""The server's counts in one place: what ``server.stats()`` and ``conn.root.get_stats()`` say.

The block cache and the reader pool keep their own counts; the connections, encoders and
callback deliverers add theirs to the server-wide :class:`~software.stream.counters.Counters`.
:func:`server_stats` reads them all into one tuple of ``(name, value)`` pairs, the only
form that crosses RPyC by value.
"""
from __future__ import annotations

from ..cache.blocks import BlockCache
from ..cache.registry import SessionRegistry
from ..readers.pool import ReaderPool
from ..stream.counters import Counters

__all__ = ["COUNTER_NAMES", "server_stats"]

#: Counters of :class:`~software.stream.counters.Counters` always reported (0 until added
#: to); any other counter added is reported after them.
COUNTER_NAMES = ("connections", "connections_total", "bytes_served", "answers_shared",
                 "shm_fallbacks", "callbacks_delivered", "callbacks_failed",
                 "client_callback_errors", "hung_callbacks", "dropped_requests",
                 "waiting_requests", "pending_answer_bytes")

#: BlockCache.stats() name -> reported name
_CACHE_NAMES = (("hits", "cache_hits"), ("misses", "cache_misses"),
                ("evictions", "cache_evictions"), ("entries", "cache_entries"),
                ("bytes", "cache_bytes"), ("max_bytes", "cache_budget"),
                ("in_flight", "cache_in_flight"))


def server_stats(cache: BlockCache, pool: ReaderPool, registry: SessionRegistry,
                 counters: Counters) -> tuple[tuple[str, int], ...]:
    """Every count of a server as ``(name, value)`` pairs (``dict()`` of it reads well).

    Parameters
    ----------
    cache, pool, registry
        The server's block cache, reader pool and open sessions.
    counters : Counters
        Its event counters.

    Returns
    -------
    tuple of (str, int) pairs
        In this order: ``cache_hits``, ``cache_misses``, ``cache_evictions``,
        ``cache_entries``, ``cache_bytes`` (bytes cached), ``cache_budget`` (the budget in
        bytes), ``cache_in_flight`` (blocks being read), ``reads`` (reads done by the
        reader processes: ``reads_landed`` in the landing area plus ``reads_piped`` through
        the pool's pipe), ``reads_landed``, ``reads_piped``, ``reader_restarts``,
        ``reads_retried``, ``open_sessions``, then :data:`COUNTER_NAMES` (``connections``
        is the number open now; ``bytes_served`` the answer bytes sent; ``hung_callbacks``
        client callbacks past the callback timeout; ``waiting_requests`` callback requests
        not answered yet, each connection bounded by ``--max-waiting``;
        ``pending_answer_bytes`` answers assembled for a callback and not sent yet, at most
        one per view...), then any other counter.
    """
    cached = dict(cache.stats())
    landed, piped = int(pool.reads_landed), int(pool.reads_piped)
    pairs = [(shown, int(cached[name])) for name, shown in _CACHE_NAMES]
    pairs += [("reads", landed + piped), ("reads_landed", landed), ("reads_piped", piped),
              ("reader_restarts", int(pool.restarts)),
              ("reads_retried", int(pool.tasks_retried)),
              ("open_sessions", len(registry.open_paths()))]
    counted = dict(counters.snapshot())
    pairs += [(name, counted.pop(name, 0)) for name in COUNTER_NAMES]
    pairs += sorted(counted.items())
    return tuple(pairs)
