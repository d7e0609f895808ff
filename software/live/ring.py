"""A bounded ring of samples per live stream: every channel's recent history, by index.

The ring lives in :mod:`software.shm.ring` (clients on the same host map it too); this
module keeps the names the live side has always imported.
"""
from __future__ import annotations

from ..shm.ring import DTYPES, SHAREABLE, Ring

__all__ = ["DTYPES", "SHAREABLE", "Ring"]
