"""``python -m software COMMAND``: the command table, parsing, and exit codes.

Exit codes: 0 ok; 2 usage error or bad input (the message names the argument); 1 server or
I/O error (no server, refused connection, cannot write). An expected error prints one line,
never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .. import errors
from .common import INPUT_ERRORS, UsageError, add_connection_arguments, message_of

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
    print(f"{where}: error: {text}", file=sys.stderr)
    return code


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
        return int(args.run(args) or 0)
    except UsageError as exc:
        return _fail(args.command, str(exc), 2)
    except INPUT_ERRORS as exc:          # refused by the service, argument unknown
        return _fail(args.command, message_of(exc), 2)
    except (errors.StreamError, OSError, EOFError) as exc:
        return _fail(args.command, message_of(exc), 1)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", 130)
