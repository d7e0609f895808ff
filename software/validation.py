"""Checks of values arriving over RPyC, converted to plain Python once, at the boundary.

Values may be netrefs (remote proxies); each check converts with ``int``/``float``/``str``
and raises an error that names the argument, the value and the fix.
"""
from __future__ import annotations

import math
import operator
import time

from .errors import (
    InvalidArgumentError,
    InvalidRangeError,
    InvalidTypeError,
    WrongPasswordError,
)

#: Largest integer accepted for an index or a range, far beyond any recording.
MAX_INDEX = 2**62
#: Largest number of seconds accepted (about 31 years); larger values overflow sample counts.
MAX_SECONDS = 1e9
#: Longest MEF3 password in UTF-8 bytes: pymef copies it into a 16-byte C buffer with
#: ``strcpy``, so a longer one overflows that buffer and kills the reader process.
MAX_PASSWORD_BYTES = 15


def _show(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken remote object must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def as_index(name: str, value: object, *, minimum: int = 0) -> int:
    """Return ``value`` as an int ``>= minimum``.

    Raises
    ------
    InvalidTypeError
        ``value`` is not an integer (a float, even 2.0, a string, a bool, None...).
    InvalidRangeError
        ``value`` is below ``minimum`` or absurdly large.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidTypeError(f"{name} must be an integer; {_show(value)} is not. "
                               f"Pass a whole number such as {name}={max(minimum, 0)}.")
    try:
        number = operator.index(value)
    except TypeError:
        hint = f" ({name}={int(value)})" if isinstance(value, float) and math.isfinite(
            value) and value.is_integer() else ""
        raise InvalidTypeError(f"{name} must be an integer; {_show(value)} of type "
                               f"{type(value).__name__} is not. Convert it with int()"
                               f"{hint}.") from None
    if number < minimum:
        raise InvalidRangeError(f"{name} must be >= {minimum}; {number} is invalid.")
    if number > MAX_INDEX:
        raise InvalidRangeError(f"{name}={number} is too large; it must be <= {MAX_INDEX}.")
    return int(number)


def as_positive_float(name: str, value: object, *, maximum: float = MAX_SECONDS) -> float:
    """Return ``value`` as a finite float with ``0 < value <= maximum``.

    Raises
    ------
    InvalidTypeError
        ``value`` is not a number (a string, even "1.5", a bool, None...).
    InvalidArgumentError
        ``value`` is NaN, infinite, zero or negative.
    InvalidRangeError
        ``value`` is above ``maximum`` (or too large for a float).
    """
    if isinstance(value, (bool, str, bytes, bytearray)) or value is None:
        raise InvalidTypeError(f"{name} must be a number of seconds; {_show(value)} is not. "
                               f"Pass a number such as {name}=10.0.")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidRangeError(f"{name}={_show(value)} is too large; it must be <= "
                                f"{maximum:g}.") from None
    except (TypeError, ValueError):
        raise InvalidTypeError(f"{name} must be a number of seconds; {_show(value)} of type "
                               f"{type(value).__name__} is not.") from None
    if not math.isfinite(number) or number <= 0:
        raise InvalidArgumentError(f"{name} must be a finite number > 0; {_show(value)} is "
                                   f"invalid.")
    if number > maximum:
        raise InvalidRangeError(f"{name}={number:g} is too large; it must be <= {maximum:g}.")
    return number


#: Seconds a remote argument may take to arrive item by item before it is refused.
MAX_CONVERT_SECONDS = 5.0


def as_name_list(name: str, value: object, *, limit: int,
                 seconds: float = MAX_CONVERT_SECONDS) -> tuple[str, ...]:
    """Return a list/tuple of channel names (or a single name) as a tuple of str.

    A list arriving as an RPyC proxy is fetched item by item (a round trip each), so at
    most ``limit + 1`` items are taken and for at most ``seconds``: an endless or slow
    iterable from a hostile client is refused instead of holding the connection's thread
    and growing memory.

    Raises
    ------
    InvalidTypeError
        ``value`` is not a name, a list of names or None.
    InvalidArgumentError
        More than ``limit`` items, or the items took longer than ``seconds`` to arrive.
    """
    if isinstance(value, str):
        return (value,)
    if value is None:
        return ()
    if isinstance(value, (bytes, bytearray)):
        raise InvalidTypeError(f"{name} must be channel names (str); {_show(value)} is bytes. "
                               f"Decode it, e.g. {name}=[b.decode()].")
    try:
        items = iter(value)
    except TypeError:
        raise InvalidTypeError(f"{name} must be a list of channel names; {_show(value)} is "
                               f"not.") from None
    out: list[str] = []
    deadline = time.monotonic() + seconds
    for item in items:
        if len(out) >= limit:
            raise InvalidArgumentError(
                f"{name} holds more than {limit} names, more than the session has channels; "
                f"give each channel at most once.")
        if time.monotonic() > deadline:
            raise InvalidArgumentError(
                f"{name} took more than {seconds:g} s to arrive ({len(out)} names so far); "
                f"send the names as a tuple of str, e.g. {name}=tuple(names).")
        # a str subclass (numpy.str_) arrives as a proxy that claims to be a str
        if type(item) is not str:
            if not isinstance(item, str):
                raise InvalidTypeError(f"{name} must hold channel names (str); {_show(item)} "
                                       f"is not a str.")
            item = str(item)
        out.append(item)
    return tuple(out)


def as_password(name: str, value: object) -> str | None:
    """Return a MEF3 password as a str (None for None or ""), refusing what pymef cannot take.

    The message never contains the password itself.

    Raises
    ------
    InvalidTypeError
        ``value`` is neither None nor a str.
    WrongPasswordError
        ``value`` holds a NUL character or is longer than
        :data:`MAX_PASSWORD_BYTES` UTF-8 bytes: no MEF3 session has such a password.
    """
    if value is None:
        return None
    if type(value) is not str:
        if not isinstance(value, str):
            raise InvalidTypeError(f"{name} must be a str or None; a value of type "
                                   f"{type(value).__name__} is not. Pass the level-2 (data) "
                                   f"password as a string.")
        value = str(value)
    if not value:
        return None  # "" (an unset environment variable, say) means no password
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: pymef's strict encoding would fail
        size = -1
    if "\0" in value or not 0 < size <= MAX_PASSWORD_BYTES:
        raise WrongPasswordError(
            f"{name} cannot be a MEF3 password: it must be 1 to {MAX_PASSWORD_BYTES} UTF-8 "
            f"bytes of valid text without NUL characters. Pass the "
            f"level-2 (data) password of the session.")
    return value


def as_uutc(name: str, value: object) -> int:
    """Return a time stamp in microseconds since the epoch as an int."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(f"{name} must be a finite time stamp in microseconds; "
                                       f"{value!r} is invalid.")
        if not value.is_integer():
            raise InvalidTypeError(f"{name} must be an integer number of microseconds; "
                                   f"{value!r} is not. Round it with int().")
        value = int(value)
    return as_index(name, value, minimum=-MAX_INDEX)


def check_request_size(n_channels: int, n_samples: int, limit_bytes: int) -> None:
    """Refuse a request whose answer would exceed ``limit_bytes`` (float64 samples)."""
    size = n_channels * n_samples * 8
    if size > limit_bytes:
        max_samples = max(1, limit_bytes // (8 * max(1, n_channels)))
        raise InvalidRangeError(
            f"the request asks for {n_channels} channels x {n_samples} samples = "
            f"{size / 2**20:.1f} MiB, above the per-request limit of "
            f"{limit_bytes / 2**20:.4g} MiB; ask for at most {max_samples} samples at a "
            f"time with these channels (or fewer channels).")
