"""An iterator's one request registered with a callback, and what came through it."""
from __future__ import annotations

import threading

from .records import RECORDS_TAG
from .targets import Target

__all__ = ["Waiting"]


class Waiting:
    """One request registered with a callback, and what came through it.

    :attr:`deliver` is one object for the request's whole life: the server recognises the
    callback to withdraw by its identity (``obj.method`` would make a new one each time).
    """

    __slots__ = ("found", "position", "arrived", "box", "marks", "deliver")

    def __init__(self, found: Target, position: int) -> None:
        self.found, self.position = found, position
        arrived = self.arrived = threading.Event()
        box: list = []
        marks: list = []
        self.box, self.marks = box, marks

        def deliver(value) -> None:  # the callback: in whichever thread serves it
            if type(value) is tuple and len(value) == 2 and value[0] == RECORDS_TAG:
                marks.append(value[1])   # the chunk's records, sent just before it
                return
            box.append(value)
            arrived.set()

        self.deliver = deliver

    @property
    def records(self) -> tuple:
        """The wire records that came with the answer (none lie in a chunk that came
        alone)."""
        return self.marks[0] if self.marks else ()
