"""``python -m software registry``: an RPyC TCP registry on a chosen interface.

A command-line front end: it prints its one status line (the port it got) and runs until
Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import errno
import logging
import math
import signal
import sys
import threading

from rpyc.utils.registry import DEFAULT_PRUNING_TIMEOUT, REGISTRY_PORT

from ..discovery.registry import RegistryServer

#: One line for the command list of ``python -m software --help``.
HELP = "run an RPyC registry that servers announce themselves to (loopback by default)"


def build_parser(prog: str = "python -m software registry") -> argparse.ArgumentParser:
    """The argument parser of the ``registry`` command (for a parent CLI's help)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Run an RPyC TCP registry that mefstream servers announce "
        "themselves to (start.py --registry HOST:PORT) and clients look them up in "
        "(get_connection(service=..., registry=...)). Listing is on.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1; use the data network's "
                             "address so that servers on other hosts can reach it)")
    parser.add_argument("--port", type=int, default=REGISTRY_PORT,
                        help=f"TCP port (default {REGISTRY_PORT}, rpyc's; 0: a free one)")
    parser.add_argument("--pruning-timeout", type=float, default=DEFAULT_PRUNING_TIMEOUT,
                        help="seconds after its last registration that a server is "
                             f"forgotten (default {DEFAULT_PRUNING_TIMEOUT})")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def check(args: argparse.Namespace) -> str | None:
    """What is wrong with the parsed arguments (one line naming the option), or None."""
    if not 0 <= args.port < 65536:
        return f"--port: {args.port} must be in 0..65535 (0: a free one)"
    if not (math.isfinite(args.pruning_timeout) and 0 < args.pruning_timeout <= 1e6):
        return (f"--pruning-timeout: {args.pruning_timeout:g} must be a number of seconds "
                f"> 0 and at most 1e6")
    if not args.host or "\0" in args.host:
        return f"--host: {args.host!r} is not an interface to bind"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the registry until SIGINT/SIGTERM.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after ``registry`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 after a clean stop; 2 for bad arguments (argparse exits with 2 itself for
        unknown options); 1 when the address cannot be bound.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = check(args)
    if problem is not None:
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        registry = RegistryServer(args.host, args.port, pruning_timeout=args.pruning_timeout)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = f"port {args.port} is in use (another registry?); pass another --port"
        else:
            reason = f"{exc.strerror or exc}; choose another --host or --port"
        print(f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {reason}",
              file=sys.stderr)
        return 1
    except (OverflowError, UnicodeError, ValueError) as exc:   # not a host name at all
        print(f"{parser.prog}: error: --host: {args.host!r} is not an interface to bind "
              f"({exc})", file=sys.stderr)
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    with registry:
        print(f"RPyC registry listening on {registry.host}:{registry.port} (Ctrl-C stops)",
              flush=True)
        # a wait with a timeout: a signal the kernel hands to another thread only runs
        # its handler when this thread next runs Python code
        while not stop.wait(0.2):
            pass
    return 0
