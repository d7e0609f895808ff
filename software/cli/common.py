"""What every command shares: connection options, opening a session, channels, error classes.

Exit codes (see :func:`software.cli.main.main`): 2 for a usage error or bad input, with a
message naming the argument (:class:`UsageError`); 1 for server and I/O errors.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import socket

from .. import errors
from .times import TimeFormatError, format_clock, parse_time

#: Errors of the service that mean the user gave a wrong value (exit code 2).
INPUT_ERRORS = (errors.InvalidArgumentError, errors.InvalidTypeError,
                errors.UnknownChannelError, errors.NotMefSessionError,
                errors.OutsideDataRootError, errors.WrongPasswordError)

_REMOTE_TRACEBACK = "\n\n========= Remote Traceback"
#: Seconds closing a connection waits for the server's goodbye.
CLOSE_WAIT = 2.0


class UsageError(Exception):
    """Bad input on the command line: exit code 2, the message names the argument.

    Parameters
    ----------
    argument : str
        The argument at fault as the user wrote it (``--channels``, ``PATH``).
    message : str
        What is wrong and how to fix it.
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument


#: ``name=...`` hints of the Python API whose fix on the command line is ``--name``.
_API_HINT = re.compile(r"(?<![\w-])(password|timeout|port|host|registry)="
                       r"(?:\.\.\.|'([^'\s]*)'|([\w:.\[\]-]*\w))?")


def for_cli(text: str) -> str:
    """Say a fix the way the command line takes it: ``password=...`` -> ``--password``,
    ``port=0`` -> ``--port 0``, ``registry='h:p'`` -> ``--registry h:p``."""
    def cli(match: re.Match) -> str:
        value = match.group(2) or match.group(3)
        return f"--{match.group(1)}" + (f" {value}" if value else "")

    return _API_HINT.sub(cli, text)


def message_of(exc: BaseException) -> str:
    """The message of an error without the server's traceback that RPyC appends."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])  # KeyError's str() quotes its message
    else:
        text = str(exc)
    return text.split(_REMOTE_TRACEBACK, 1)[0].strip() or type(exc).__name__


def positive_seconds(option: str, value: float | None, maximum: float = 1e9,
                     hint: str = "") -> float | None:
    """Check a number of seconds given as ``option``: finite, > 0 and at most ``maximum``.

    Raises
    ------
    UsageError
        Not such a number (None passes: the option was left out).
    """
    if value is None:
        return None
    if not (math.isfinite(value) and 0 < value <= maximum):
        raise UsageError(option, f"{value:g} must be a number of seconds > 0 and at most "
                                 f"{maximum:g}{hint}")
    return value


@contextlib.contextmanager
def argument(name: str):
    """Turn the service's refusal of a value into a :class:`UsageError` naming ``name``."""
    try:
        yield
    except INPUT_ERRORS as exc:
        raise UsageError(name, message_of(exc)) from None
    except TimeFormatError as exc:
        raise UsageError(name, str(exc)) from None


def add_connection_arguments(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The options of :func:`software.get_connection`: --host, --port, --tls-*, --timeout.

    With ``defaults=False`` an option left out sets nothing (for the copies on each
    command, so that the options work before and after the command's name).
    """
    def d(value):
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    group.add_argument("--host", default=d("localhost"), help="server host (default localhost)")
    group.add_argument("--port", type=int, default=d(None),
                       help="server port (default 18861, the root service)")
    group.add_argument("--tls-cert", default=d(None), metavar="PEM",
                       help="client certificate, for a server started with TLS")
    group.add_argument("--tls-key", default=d(None), metavar="PEM",
                       help="private key of --tls-cert")
    group.add_argument("--tls-ca", default=d(None), metavar="PEM",
                       help="CA that signed the server's certificate")
    group.add_argument("--timeout", type=float, default=d(5.0), metavar="SECONDS",
                       help="how long to wait for the server to answer (default 5)")


def connect(args: argparse.Namespace):
    """Connect as the command line asks; returns the connection (close it).

    Raises
    ------
    UsageError
        A TLS file that does not exist.
    ConnectionError
        No server, or the server refused this client (message says what to pass).
    """
    from ..client.connect import get_connection
    for option, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key),
                          ("--tls-ca", args.tls_ca)):
        if value is not None and not os.path.isfile(value):
            raise UsageError(option, f"{value!r} is not a file; give the PEM file's path")
    if args.timeout is not None and not (math.isfinite(args.timeout)
                                         and 0 <= args.timeout <= 3600):
        raise UsageError("--timeout", f"{args.timeout:g} must be a number of seconds from 0 "
                                      f"to 3600")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError("--port", f"{args.port} must be a TCP port in 1..65535 (the "
                                   f"server's, 18861 by default)")
    where = f"{args.host}:{args.port if args.port is not None else 18861}"
    try:
        conn = get_connection(args.port, host=args.host, timeout=args.timeout,
                              keyfile=args.tls_key, certfile=args.tls_cert,
                              ca_certs=args.tls_ca)
        close = conn.close

        def close_bounded(*a, **k):
            # rpyc says goodbye with a request that waits behind a pending answer (a
            # read interrupted by Ctrl-C): up to its 300 s timeout. Give it CLOSE_WAIT.
            config = getattr(conn, "_config", None)
            if isinstance(config, dict):
                config["sync_request_timeout"] = min(
                    float(config.get("sync_request_timeout") or CLOSE_WAIT), CLOSE_WAIT)
            return close(*a, **k)

        conn.close = close_bounded
        return conn
    except ConnectionRefusedError:
        raise ConnectionError(
            f"no mefstream server answered on {where} within {args.timeout:g} s; start one "
            f"with 'python start.py' or pass --host/--port (and --timeout to wait longer)"
        ) from None
    except PermissionError as exc:
        raise ConnectionError(f"{where} refused the connection: {message_of(exc)} "
                              f"(command line: --tls-cert, --tls-key, --tls-ca)") from None
    except (OverflowError, UnicodeError) as exc:   # a host name the resolver cannot take
        raise UsageError("--host", f"{args.host!r} cannot be connected to "
                                   f"({message_of(exc)})") from None
    except socket.gaierror as exc:   # no such host name (or no resolver)
        raise UsageError("--host", f"{args.host!r} is not a host name this machine can "
                                   f"resolve ({exc.strerror or exc}); give the server's "
                                   f"name or address") from None


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """PATH and --password, for the commands that read one session."""
    parser.add_argument("path", metavar="PATH",
                        help="session, relative to the server's data root (e.g. demo.mefd)")
    parser.add_argument("--password", default=os.environ.get("MEFSTREAM_PASSWORD"),
                        help="level-2 (data) password of an encrypted session (or set "
                             "MEFSTREAM_PASSWORD, which other users cannot see in ps)")


def open_session(conn, args: argparse.Namespace):
    """Open ``args.path`` on the server; returns ``(stream, info dict)``."""
    with argument("PATH"):
        try:
            try:
                stream = conn.root.open_file(args.path, args.password)
            except errors.WrongPasswordError as exc:   # the fix is --password, not PATH
                raise UsageError("--password", message_of(exc)) from None
        except AttributeError as exc:  # a session, live stream or replay at the root
            if isinstance(exc, errors.StreamError):
                raise
            raise errors.StreamError(
                f"the server on {args.host} serves one stream at its connection root "
                f"(start.py PATH.mefd, --live or --replay), not sessions by path; 'ls' "
                f"names it") from None
    return stream, dict(stream.get_info())


def parse_channels(text: str | None) -> list[str] | None:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; None or empty -> None (the default channels)."""
    if text is None:
        return None
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    return names or None


def select_channels(stream, info: dict, text: str | None) -> dict:
    """Make ``--channels`` the stream's active channels; returns the new info.

    Raises
    ------
    UsageError
        A name the session does not have, a name twice, or channels of different rates.
    """
    names = parse_channels(text)
    if names is None:
        return info
    known = tuple(info["all_channels"])
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError("--channels", f"{', '.join(map(repr, unknown))} not in "
                         f"{info['path']}; its channels: {', '.join(known)}")
    with argument("--channels"):
        stream.set_active_channels(tuple(names))
    return dict(stream.get_info())


def sample_index(text: str, option: str, info: dict) -> int:
    """Parse a ``--start``/``--stop`` value into a grid sample index (may lie outside)."""
    with argument(option):
        uutc = parse_time(text, int(info["start_uutc"]))
    return int(round((uutc - int(info["start_uutc"])) * float(info["fs"]) / 1e6))


def sample_range(args: argparse.Namespace, info: dict) -> tuple[int, int]:
    """``[first, stop)`` sample indices from ``--start``/``--stop`` (default: everything).

    A stop past the end is cut to the end; a range with no recording in it is refused.
    """
    n = int(info["n_samples"])
    first = 0 if args.start is None else sample_index(args.start, "--start", info)
    stop = n if args.stop is None else sample_index(args.stop, "--stop", info)
    if not 0 <= first < n:
        raise UsageError("--start", f"{args.start!r} is outside the recording "
                         f"({describe_span(info)})")
    stop = min(stop, n)
    if stop <= first:
        raise UsageError("--stop", f"{args.stop!r} is not after --start {args.start or 0!r}")
    return first, stop


def describe_span(info: dict) -> str:
    """``2024-01-01 00:00:00 UTC to 2024-01-01 00:30:00 UTC``."""
    return f"{format_clock(info['start_uutc'])} to {format_clock(info['end_uutc'])}"


def uutc_of(info: dict, index: int) -> int:
    """Time stamp of grid sample ``index`` (rounded to the microsecond)."""
    return int(info["start_uutc"]) + int(round(index * 1e6 / float(info["fs"])))
