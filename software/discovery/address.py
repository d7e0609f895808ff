"""``host:port`` strings and ``(host, port)`` pairs, checked once at the boundary."""
from __future__ import annotations

from ..errors import InvalidArgumentError, InvalidTypeError


def parse_address(value: object, default_port: int | None = None,
                  name: str = "address") -> tuple[str, int]:
    """Return ``value`` as a ``(host, port)`` pair.

    Parameters
    ----------
    value : str or (str, int)
        ``"host:port"``, ``"[::1]:port"``, ``"host"`` (with ``default_port``) or a
        ``(host, port)`` pair.
    default_port : int, optional
        Port used when ``value`` names only a host.
    name : str
        Argument name for error messages.

    Returns
    -------
    (str, int)

    Raises
    ------
    InvalidTypeError
        ``value`` is neither a string nor a pair.
    InvalidArgumentError
        The port is missing (and there is no default), not a number, or outside 1..65535.
    """
    if isinstance(value, (tuple, list)) and len(value) == 2:
        host, port = value
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):                       # [IPv6]:port
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host, port = text, None
        if port in (None, ""):
            if default_port is None:
                raise InvalidArgumentError(
                    f"{name}={value!r} has no port; write it as 'host:port', e.g. "
                    f"{name}='127.0.0.1:18861'.")
            port = default_port
    else:
        raise InvalidTypeError(f"{name} must be 'host:port' or a (host, port) pair; "
                               f"{value!r} is neither.")
    if not isinstance(host, str) or not host:
        raise InvalidArgumentError(f"{name}={value!r} has no host; write it as 'host:port'.")
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name}={value!r}: the port {port!r} is not a number; "
                                   f"write it as 'host:port', e.g. '{host}:18861'.") from None
    if isinstance(port, float) or not 0 < number < 65536:
        raise InvalidArgumentError(f"{name}={value!r}: the port must be a whole number in "
                                   f"1..65535.")
    return host, number


def format_address(address: tuple[str, int]) -> str:
    """``(host, port)`` -> ``"host:port"`` (``"[host]:port"`` for IPv6)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
