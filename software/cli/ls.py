"""List the sessions under the server's data root, and its live streams.

With --long, each session is opened to show its channels, rate, duration and start.
"""
from __future__ import annotations

import argparse
import math

from .. import errors
from .common import UsageError, connect, message_of
from .times import format_clock, format_duration

HELP = "list the sessions under the server's data root (and its live streams)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``ls``."""
    parser.add_argument("--registry", default=None, metavar="HOST[:PORT]",
                        help="list the services registered at this RPyC registry instead")
    parser.add_argument("-l", "--long", action="store_true",
                        help="open each session: channels, rate, duration, start")


def optional_call(root, name: str):
    """Call ``root.<name>()``; None when the server does not offer that method."""
    try:
        method = getattr(root, name)
    except AttributeError:  # an older server: RPyC refuses names it does not expose
        return None
    return method()


def describe(root, path: str) -> str:
    """One line about a session (opened and closed again)."""
    try:
        stream = root.open_file(path)
        try:
            info = dict(stream.get_info())
        finally:
            root.close_file(path)
    except errors.WrongPasswordError:
        return "encrypted (give --password to info)"
    except errors.StreamError as exc:
        return f"cannot open: {message_of(exc)}"
    seconds = int(info["n_samples"]) / float(info["fs"])
    rates = {fs for _, fs in info["rates"]}
    rate = f"{float(info['fs']):g} Hz" + (" (+ other rates)" if len(rates) > 1 else "")
    return (f"{len(info['all_channels']):3d} ch  {rate:<9}  {format_duration(seconds):>16}"
            f"  from {format_clock(info['start_uutc'])}")


def list_registry(registry: str, timeout: float = 5.0) -> int:
    """Print ``NAME  host:port`` for every server registered at ``registry``."""
    from ..discovery import list_services
    from ..discovery.address import format_address

    try:
        services = list_services(registry, timeout=timeout)
    except (errors.InvalidArgumentError, errors.InvalidTypeError) as exc:
        raise UsageError("--registry", message_of(exc).replace("registry=", "")) from None
    for name, servers in sorted(services.items()):
        for server in servers:
            print(f"{name}  {format_address(server)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Print one session per line (``(open)``: some client has it open), then the live
    streams (``NAME  (live)``)."""
    if args.registry:
        if not (math.isfinite(args.timeout) and 0 <= args.timeout <= 3600):
            raise UsageError("--timeout", f"{args.timeout:g} must be a number of seconds "
                                          f"from 0 to 3600")
        return list_registry(args.registry, max(args.timeout, 0.05))
    conn = connect(args)
    try:
        root = conn.root
        sessions = optional_call(root, "list_sessions")
        if sessions is None and optional_call(root, "get_info") is not None:
            info = dict(root.get_info())   # one stream served at the root
            kind = "live stream" if info.get("growing") else "session"
            print(f"{info['path']}  (the {kind} served at the root)")
            return 0
        if sessions is None:
            raise errors.StreamError(
                f"the server on {args.host} does not list its sessions (no list_sessions(): "
                f"an older mefstream, or one serving a single file); use "
                f"'info PATH' with a path you know")
        paths = [str(p) for p in sessions]
        opened = {str(p) for p in optional_call(root, "list_server_sessions") or ()}
        width = max((len(p) for p in paths), default=0)
        for path in paths:
            mark = "  (open)" if path in opened else ""
            line = f"{path:<{width}}  {describe(root, path)}" if args.long else path
            print(line + mark)
        for name in optional_call(root, "list_live_streams") or ():
            print(f"{name!s:<{width}}  (live)")
    finally:
        conn.close()
    return 0
