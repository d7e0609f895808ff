"""What killed servers and readers leave behind, removed when the next server starts.

A server killed with SIGKILL cannot remove its landing area (``/dev/shm``), its task board
or a broadcast's check-in directory; a reader killed while it opens a session leaves the
shadow tree it was reading the metadata from. Each is locked by its live owner
(:mod:`software.shm.arena`, :mod:`software.mef3.scratch`), so a sweep removes exactly
those whose owner is gone, whoever made them. :class:`~software.readers.pool.ReaderPool`
sweeps when it starts and after each reader crash. Runs in the server process.
"""
from __future__ import annotations

import logging

from ..mef3.scratch import SHADOW_PREFIX, sweep_owned
from ..shm.arena import sweep_stale
from ..shm.layout import SHM_DIR
from .board import BOARD_PREFIX
from .processes import RENDEZVOUS_PREFIX

__all__ = ["sweep_leftovers"]

logger = logging.getLogger(__name__)


def sweep_leftovers(shared_memory: bool = True, directory: str | None = None,
                    shm_directory: str | None = None) -> int:
    """Remove what dead servers and readers left; returns how many things.

    Parameters
    ----------
    shared_memory : bool
        Also the ``/dev/shm`` areas of dead owners (landing and connection areas).
    directory : str, optional
        The temporary directory to sweep (default: ``tempfile.gettempdir()``).
    shm_directory : str, optional
        Where the shared-memory areas are (default ``/dev/shm``).
    """
    removed = 0
    for prefix in (SHADOW_PREFIX, BOARD_PREFIX, RENDEZVOUS_PREFIX):
        removed += sweep_owned(prefix, directory)
    if shared_memory:
        removed += sweep_stale(shm_directory or SHM_DIR)
    if removed:
        logger.info("removed %d leftover(s) of servers or readers that died", removed)
    return removed
