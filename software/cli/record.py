"""Record a live stream to a MEF3 session, from its head, as it arrives.

Stops after --seconds of wall-clock time, or at Ctrl-C / SIGTERM, closing the session
cleanly; a recorder killed at any moment leaves a session that MefReader opens, with every
channel holding the same samples up to at most about a second before the kill.
"""
from __future__ import annotations

import argparse
import signal
import sys

from .. import errors
from .common import UsageError, connect, positive_seconds

HELP = "record a live stream to a MEF3 session (crash-safe)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``record``."""
    parser.add_argument("out", metavar="OUT.mefd", help="session to write")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds of wall-clock time")
    parser.add_argument("--precision", type=int, default=2,
                        help="decimal digits kept (default 2)")
    parser.add_argument("--flush-seconds", type=float, default=1.0,
                        help="seconds of samples per atomic append (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.mefd")


def run(args: argparse.Namespace) -> int:
    """Follow the stream at the connection's root until stopped; print a summary line."""
    from ..live.recorder import Recorder

    if not str(args.out).rstrip("/").endswith(".mefd"):
        raise UsageError("OUT.mefd", f"{args.out!r} must end in '.mefd' (a MEF3 session "
                                     f"is a directory named NAME.mefd)")
    positive_seconds("--seconds", args.seconds,
                     hint=" (leave it out to record until Ctrl-C)")
    if not 0 <= args.precision <= 9:
        raise UsageError("--precision", f"{args.precision} must be in 0..9 (decimal "
                                        f"digits kept)")
    positive_seconds("--flush-seconds", args.flush_seconds, maximum=3600.0)
    conn = connect(args)
    try:
        try:
            conn.root.get_info()
        except errors.NoFileOpenError:
            raise errors.StreamError(
                f"the server on {args.host}:{args.port} serves files, not a live stream: "
                f"record follows a server started with 'python start.py --live NAME "
                f"--channels ... --fs ...' or 'python start.py PATH.mefd --replay'") from None
        recorder = Recorder(conn, args.out, seconds=args.seconds, precision=args.precision,
                            flush_seconds=args.flush_seconds, overwrite=args.overwrite)
        previous = signal.signal(signal.SIGTERM, lambda *_: recorder.close())
        try:
            with recorder:
                while not recorder.wait(0.5):
                    pass
        except KeyboardInterrupt:
            recorder.close()
        finally:
            signal.signal(signal.SIGTERM, previous)
        print(f"recorded {recorder.n_samples} samples x {len(recorder.channels)} channels "
              f"to {recorder.path}", file=sys.stderr)
        if recorder.error:
            raise OSError(f"recording stopped early: {recorder.error}")
        return 0
    finally:
        conn.close()
