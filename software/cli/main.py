"""``python -m software COMMAND``: the command table, parsing, and exit codes.

Exit codes: 0 ok (also when the reader of a pipe stopped early: ``stats | head -2``); 2
usage error or bad input (the message names the argument); 1 server or I/O error (no
server, refused connection, cannot write). Every error prints one line, never a
traceback; a fix is named as the command line takes it (``--password``, not
``password=...``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import sys

from .. import errors
from .common import INPUT_ERRORS, UsageError, add_connection_arguments, for_cli, message_of

PROG = "python -m software"

#: Command name -> module defining ``HELP``, ``configure(parser)`` and ``run(args)``
#: (relative to this package, or absolute). Adding a command is one line here.
COMMANDS = {
    "ls": ".ls",
    "info": ".info",
    "stats": ".stats",
    "export": ".export",
    "plot": ".plot",
    "record": ".record",
}
#: Commands that parse their own arguments (no server connection): name -> module with
#: ``HELP`` and ``main(argv) -> int``.
STANDALONE = {
    "registry": ".registry",
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (each command's module is imported)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Look at the sessions a mefstream server serves: list them, "
        "describe one, export a stretch of it, or draw it.",
        epilog=f"'{PROG} COMMAND --help' describes a command. Times are UTC clock times "
        "(2024-01-01T00:05:00) or seconds from the start of the recording (300, 300s).")
    add_connection_arguments(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, home in COMMANDS.items():
        module = importlib.import_module(home, __package__)
        sub = commands.add_parser(name, help=module.HELP,
                                  description=(module.__doc__ or "").replace("``", ""))
        module.configure(sub)
        add_connection_arguments(sub, defaults=False)
        sub.set_defaults(run=module.run)
    for name, home in STANDALONE.items():  # listed here, parsed by their own main()
        module = importlib.import_module(home, __package__)
        commands.add_parser(name, help=module.HELP, add_help=False)
    return parser


def _fail(command: str | None, text: str, code: int) -> int:
    where = f"{PROG} {command}" if command else PROG
    line = " ".join(for_cli(text).split())   # one line, whatever the message held
    print(f"{where}: error: {line}", file=sys.stderr)
    return code


def _stdout_gone() -> bool:
    """Whether nobody reads our stdout any more (a pipe whose reader exited)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):   # no poll, or stdout is not a file
        return False


def _quiet_stdout() -> None:
    """The reader of our stdout is gone (``| head``): drop what is left, say nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):   # stdout is not a real file (captured)
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after the program name (default ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in STANDALONE:
        return importlib.import_module(STANDALONE[argv[0]], __package__).main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)       # exits with 2 on a usage error
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()               # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError as exc:
        if not _stdout_gone():           # the server's socket, not our reader
            return _fail(args.command, message_of(exc), 1)
        _quiet_stdout()
        return 0
    except UsageError as exc:
        return _fail(args.command, str(exc), 2)
    except INPUT_ERRORS as exc:          # refused by the service, argument unknown
        return _fail(args.command, message_of(exc), 2)
    except (errors.StreamError, OSError, EOFError) as exc:
        return _fail(args.command, message_of(exc), 1)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, details logged
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        return _fail(args.command, f"internal error ({type(exc).__name__}: "
                                   f"{message_of(exc)}); please report it with the command "
                                   f"line that caused it", 1)
