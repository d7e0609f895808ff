"""``withdraw``: a client takes back the callback requests it no longer waits for.

A mixin of :class:`~software.stream.service.StreamService` (so every view, and every root
that is a stream, has it). A client whose ``next_or_wait(timeout=...)`` gave up calls
``svc.withdraw(callback)`` with the callback it registered; the server forgets those
requests (they never call back, and no longer count against the connection's
``--max-waiting``), and says how many there were.
"""
from __future__ import annotations

from ..errors import InvalidTypeError

__all__ = ["Withdrawal"]


class Withdrawal:
    """The exposed ``withdraw`` of a view (needs ``_requests`` and ``_closed``)."""

    def exposed_withdraw(self, _callback) -> int:
        """Withdraw this view's waiting requests registered with ``_callback``.

        Runs in the connection's serving thread.

        Parameters
        ----------
        _callback : callable
            The very object passed as ``_callback`` to ``get_stream_segment`` (or another
            ``get_*``); over RPyC the server recognises it as long as a request holds it.

        Returns
        -------
        int
            How many requests were withdrawn: they will not call back. 0 when none was
            waiting (its callback was sent, or is being sent, already).

        Raises
        ------
        InvalidTypeError
            ``_callback`` is not callable.
        """
        if not callable(_callback):
            raise InvalidTypeError(f"_callback must be the function registered with a "
                                   f"request; a value of type {type(_callback).__name__} is "
                                   f"not callable.")
        if self._closed:
            return 0
        return self._requests.withdraw(_callback)
