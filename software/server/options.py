"""The server's options, checked once against one table of valid ranges.

:data:`RANGES` says, for every numeric option, its kind, its bounds and why they are what
they are. :class:`ServerOptions` checks every value against it when it is made (so a
:class:`~software.server.server.MefStreamServer` refuses a bad value before it spawns
anything), and ``start.py`` checks its flags against the same table, naming the flag.
"""
from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass, fields

from ..errors import InvalidArgumentError, InvalidTypeError
from ..stream.counters import Counters
from ..stream.service import ServiceOptions
from ..stream.waiting import WaitingBudget
from ..transport.framing import FRAME_HEADROOM

__all__ = ["RANGES", "OptionRange", "ServerOptions", "check_option", "max_frame_for"]

MiB = 2**20


@dataclass(frozen=True)
class OptionRange:
    """The valid values of one numeric option.

    Attributes
    ----------
    kind : type
        ``int`` or ``float``.
    low, high : float
        Bounds; ``low`` is excluded when ``low_open`` (``> low`` rather than ``>= low``).
    low_open : bool
        Whether ``low`` itself is refused.
    unit : str
        What the number counts (``"seconds"``, ``"MiB"``...), shown in messages.
    why : str
        Why the bounds are what they are, shown in messages (may be empty).
    example : int or float
        A sensible value, suggested as the fix.
    """

    kind: type
    low: float
    high: float
    low_open: bool = False
    unit: str = ""
    why: str = ""
    example: float = 1

    def describe(self) -> str:
        """The valid range in words, e.g. ``"a number of seconds >= 0.1 and <= 3600"``."""
        what = "a whole number" if self.kind is int else "a number"
        if self.unit:
            what += f" of {self.unit}"
        elif self.kind is int:
            what = "an integer"
        low = f"> {_number(self.low)}" if self.low_open else f">= {_number(self.low)}"
        text = f"{what} {low} and <= {_number(self.high)}"
        return f"{text} ({self.why})" if self.why else text


#: Every numeric option of the server: name -> valid range. ``start.py``'s flags are these
#: names with dashes (``block_seconds`` -> ``--block-seconds``).
RANGES: dict[str, OptionRange] = {
    "port": OptionRange(int, 0, 65535, why="a TCP port; 0 picks a free one",
                        example=18861),
    "workers": OptionRange(int, 1, 256, unit="reader processes", example=2),
    "prefetch": OptionRange(int, 0, 100, unit="requests read ahead",
                            why="0 turns reading ahead off", example=1),
    "cache_mb": OptionRange(float, 0, 2**20, unit="MiB", why="0 keeps no block cached",
                            example=1024),
    "segment_seconds": OptionRange(float, 0, 1e9, low_open=True, unit="seconds",
                                   example=60.0),
    "max_request_mb": OptionRange(
        float, 0, 4000, low_open=True, unit="MiB",
        why="an answer travels as one message whose length is a 32-bit number", example=256),
    "block_seconds": OptionRange(
        float, 0.1, 3600, unit="seconds",
        why="shorter blocks make more cache keys, 0.1 s blocks already 36,000 per channel "
            "and hour of recording; a block is read whole, so longer ones slow small reads",
        example=10.0),
    "reader_nice": OptionRange(int, 0, 19, unit="nice steps",
                               why="only root may raise a priority", example=0),
    "callback_timeout": OptionRange(float, 0, 1e6, low_open=True, unit="seconds",
                                    example=30.0),
    "read_timeout": OptionRange(float, 0, 1e6, low_open=True, unit="seconds",
                                why="how long a call without callback waits for its data",
                                example=120.0),
    "keep_warm_seconds": OptionRange(
        float, 0, 7 * 86400, unit="seconds",
        why="how long a session stays cached after its last client closed it; 0 closes "
            "it at once", example=300.0),
    "max_waiting": OptionRange(
        int, 1, 10**7, unit="callback requests per connection",
        why="requests waiting for their answer; each holds a little memory until answered",
        example=10_000),
}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _show(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken object must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def check_option(name: str, value: object, flag: str | None = None) -> int | float:
    """Return ``value`` as the kind :data:`RANGES` gives ``name``, after checking its range.

    Parameters
    ----------
    name : str
        A key of :data:`RANGES`.
    value : object
        The value given.
    flag : str, optional
        How the user wrote the option (``"--block-seconds"``); messages then name it as
        ``--block-seconds 0.0`` instead of ``block_seconds=0.0``.

    Returns
    -------
    int or float

    Raises
    ------
    InvalidTypeError
        ``value`` is not a number (or, for an integer option, not a whole number).
    InvalidArgumentError
        ``value`` is NaN, infinite or out of range; the message names the option, the value
        and the valid range.
    """
    spec = RANGES[name]
    shown = f"{flag} {_show(value)}" if flag else f"{name}={_show(value)}"
    fix = f"{flag} {spec.example}" if flag else f"{name}={spec.example!r}"
    if isinstance(value, (bool, str, bytes, bytearray)) or value is None:
        raise InvalidTypeError(f"{shown} is not {spec.describe()}. Pass e.g. {fix}.")
    try:
        number = operator.index(value) if spec.kind is int else float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidTypeError(f"{shown} is not {spec.describe()}. Pass e.g. {fix}.") \
            from None
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{shown} is invalid: it must be {spec.describe()}. "
                                   f"Pass e.g. {fix}.")
    below = number <= spec.low if spec.low_open else number < spec.low
    if below or number > spec.high:
        raise InvalidArgumentError(f"{shown} is out of range: it must be {spec.describe()}. "
                                   f"Pass e.g. {fix}.")
    return spec.kind(number)


def max_frame_for(max_request_bytes: int) -> int:
    """The largest message a peer may send or be sent: the largest answer plus framing."""
    return int(max_request_bytes) + FRAME_HEADROOM


@dataclass(frozen=True)
class ServerOptions:
    """Every setting of a :class:`~software.server.server.MefStreamServer`, checked once.

    The numeric fields are checked against :data:`RANGES` (and converted to their kind)
    when the object is made; see :class:`~software.server.server.MefStreamServer` for what
    each one does.

    Raises
    ------
    InvalidArgumentError
        A value is out of range (the message names it, its value and the valid range).
    InvalidTypeError
        A value has the wrong type.
    """

    host: str = "127.0.0.1"
    port: int = 0
    data_root: str = "."
    workers: int = 2
    prefetch: int = 1
    cache_mb: float = 1024.0
    segment_seconds: float = 60.0
    max_request_mb: float = 256.0
    block_seconds: float = 10.0
    reader_nice: int = 0
    callback_timeout: float = 30.0
    read_timeout: float = 120.0
    keep_warm_seconds: float = 0.0
    max_waiting: int = 10_000

    def __post_init__(self) -> None:
        for name in RANGES:
            object.__setattr__(self, name, check_option(name, getattr(self, name)))
        if not isinstance(self.host, str) or not self.host:
            raise InvalidArgumentError(f"host={_show(self.host)} is invalid: it must be a "
                                       f"non-empty str naming an interface. Pass e.g. "
                                       f"host='127.0.0.1'.")
        root = self.data_root
        if isinstance(root, os.PathLike):
            root = os.fspath(root)
        if not isinstance(root, str) or not root or "\0" in root:
            raise InvalidArgumentError(f"data_root={_show(self.data_root)} is invalid: it "
                                       f"must be a directory path (str). Pass e.g. "
                                       f"data_root='.'.")
        object.__setattr__(self, "data_root", os.path.realpath(root))

    @property
    def max_request_bytes(self) -> int:
        """``max_request_mb`` in bytes: the largest answer of one call."""
        return max(1, int(self.max_request_mb * MiB))

    @property
    def max_frame(self) -> int:
        """The largest message a client may send, and must accept (:func:`max_frame_for`)."""
        return max_frame_for(self.max_request_bytes)

    def service_options(self, counters: Counters | None = None) -> ServiceOptions:
        """The settings every view of this server uses, sharing ``counters``."""
        return ServiceOptions(segment_seconds=self.segment_seconds, prefetch=self.prefetch,
                              max_request_bytes=self.max_request_bytes,
                              read_timeout=self.read_timeout,
                              callback_timeout=self.callback_timeout,
                              counters=Counters() if counters is None else counters,
                              waiting=WaitingBudget(self.max_waiting))

    def as_dict(self) -> dict[str, object]:
        """The options as a plain dict (field name -> value)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
