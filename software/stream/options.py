"""Settings every view of a server uses, fixed when the server starts."""
from __future__ import annotations

from dataclasses import dataclass, field

from .counters import Counters
from .waiting import WaitingBudget

__all__ = ["ServiceOptions"]


@dataclass(frozen=True)
class ServiceOptions:
    """Per-server settings every view uses.

    Attributes
    ----------
    segment_seconds : float
        Default segment size of a new view (cut to what fits ``max_request_bytes``).
    prefetch : int
        Requests of the same size (at least 60 s) read ahead of a streaming client.
    max_request_bytes : int
        Largest answer one call may produce (counted as float64 samples).
    read_timeout : float
        Seconds a call without callback waits for its data before failing.
    callback_timeout : float
        Seconds after which a client callback that has not returned is noted (logged once
        per view, counted).
    counters : Counters
        The server's event counters (one object shared by every view and connection).
    waiting : WaitingBudget
        Callback requests waiting per connection, and the limit of each
        (``--max-waiting``; one object shared by every view and connection).
    """

    segment_seconds: float = 60.0
    prefetch: int = 1
    max_request_bytes: int = 256 * 2**20
    read_timeout: float = 120.0
    callback_timeout: float = 30.0
    counters: Counters = field(default_factory=Counters)
    waiting: WaitingBudget = field(default_factory=WaitingBudget)

    def max_samples(self, n_channels: int) -> int:
        """The most samples per channel one answer of ``n_channels`` channels may hold."""
        return max(1, self.max_request_bytes // (8 * max(1, n_channels)))
