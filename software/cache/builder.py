"""Filling a session's tiles in the background, a stretch at a time.

:class:`TileBuilder` reads ``[start, stop)`` of some channels through the recording (cache
blocks first, the reader processes for the rest) one stretch of :data:`STRETCH_BLOCKS`
cache blocks at a time, and stores every tile level of each stretch in the session's
:class:`~software.cache.pyramid.SessionPyramid`, so that later envelopes at any
resolution come from tiles. One stretch in flight at a time: a client's read waits behind
at most one stretch's reader tasks. Stretches whose tiles are all there are skipped.

Threads: one daemon thread per builder, named ``tiles-<session>``.
"""
from __future__ import annotations

import logging
import os
import threading

from ..mef3.metadata import RateGroup

__all__ = ["STRETCH_BLOCKS", "TileBuilder"]

logger = logging.getLogger(__name__)

#: Cache blocks read per stretch (6 blocks of 10 s: one reader run).
STRETCH_BLOCKS = 6


class TileBuilder:
    """Fill the tiles of ``names`` over grid samples ``[start, stop)`` (see the module).

    Parameters
    ----------
    recording : Recording
        The open session.
    pyramid : SessionPyramid
        Its pyramid.
    names : tuple of str
        Channels of one rate.
    group : RateGroup
        Their grid.
    start, stop : int
        The stretch to fill, ``0 <= start < stop <= group.n_samples``.
    timeout : float
        Seconds to wait for each stretch's reads.
    """

    def __init__(self, recording, pyramid, names, group: RateGroup, start: int, stop: int,
                 timeout: float) -> None:
        self._recording = recording
        self._pyramid = pyramid
        self._names = tuple(names)
        self._group = group
        self._range = (int(start), int(stop))
        self._timeout = float(timeout)
        self._stop = threading.Event()
        self.blocks_done = 0
        self.error: BaseException | None = None
        name = os.path.basename(recording.path.rstrip(os.sep))
        self._thread = threading.Thread(target=self._run, name=f"tiles-{name}", daemon=True)

    def start(self) -> TileBuilder:
        """Start the thread (once)."""
        self._thread.start()
        return self

    def _run(self) -> None:
        size = self._pyramid.geometry(self._group).block
        start, stop = self._range
        first, last = start // size, (stop - 1) // size
        try:
            for b0 in range(first, last + 1, STRETCH_BLOCKS):
                if self._stop.is_set() or self._recording.closed:
                    return
                b1 = min(b0 + STRETCH_BLOCKS - 1, last)
                if all(self._pyramid.tiles(n, self._group, b0, b1)[2].all()
                       for n in self._names):
                    self.blocks_done += b1 - b0 + 1
                    continue
                lo, hi = b0 * size, min((b1 + 1) * size, self._group.n_samples)
                data = self._recording.gather(self._names, self._group, lo, hi).result(
                    timeout=self._timeout).assemble()
                self._pyramid.fill(self._names, self._group, b0, data)
                self.blocks_done += b1 - b0 + 1
        except Exception as exc:  # noqa: BLE001 - kept for the caller; the server goes on
            self.error = exc
            logger.exception("filling the tiles of %s stopped", self._recording.path)

    @property
    def running(self) -> bool:
        """Whether the thread is still filling tiles."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop after the stretch in flight (idempotent; does not wait)."""
        self._stop.set()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._stop.is_set()

    def __enter__(self) -> TileBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else ("closed" if self.closed else "done")
        return (f"<TileBuilder {self._recording.path!r} {state}, {len(self._names)} channels, "
                f"{self.blocks_done} blocks filled>")
