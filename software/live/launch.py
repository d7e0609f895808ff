"""Command-line options of live streams for ``start.py``, and what they build.

``start.py`` adds :func:`add_arguments` to its parser, checks them with :func:`check`, and
passes :func:`server_live` to ``MefStreamServer(live=...)``::

    python start.py --live NAME --channels a,b,c --fs 30000 [--dtype float32]
                    [--history-seconds 60]
    python start.py PATH.mefd --replay [--speed X] [--loop] [--history-seconds H]
"""
from __future__ import annotations

import argparse
import os

from ..errors import StreamError
from .replay import Replay, check_speed
from .ring import DTYPES
from .source import LiveStream

__all__ = ["add_arguments", "build", "check", "server_live"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the live-stream options to ``parser``."""
    group = parser.add_argument_group("live streams")
    group.add_argument("--live", metavar="NAME", default=None,
                       help="serve a live stream called NAME at the root (pushed by a "
                            "producer); needs --channels and --fs")
    group.add_argument("--channels", default=None, help="channel names of --live, a,b,c")
    group.add_argument("--fs", type=float, default=None, help="sampling rate of --live, Hz")
    group.add_argument("--dtype", default="float64", choices=DTYPES,
                       help="sample type of --live (default float64)")
    group.add_argument("--history-seconds", type=float, default=60.0,
                       help="seconds of samples a live stream keeps (default 60)")
    group.add_argument("--replay", action="store_true",
                       help="serve SESSION as a live stream, pushed at --speed x real time")
    group.add_argument("--speed", type=float, default=1.0, help="replay speed (default 1)")
    group.add_argument("--loop", action="store_true",
                       help="replay from the start again at the end")


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Exit through ``parser.error`` on options that do not go together."""
    if args.live is not None and args.replay:
        parser.error("--live and --replay exclude each other")
    if args.live is not None:
        if not args.channels or args.fs is None:
            parser.error("--live NAME needs --channels a,b,c and --fs HZ")
        names = [c.strip() for c in args.channels.split(",")]
        if not all(names) or len(set(names)) != len(names):
            parser.error(f"--channels {args.channels!r}: give distinct, non-empty names")
        if not args.fs > 0:
            parser.error(f"--fs must be > 0; {args.fs} is invalid")
    if args.replay and not getattr(args, "session", None):
        parser.error("--replay needs the session to replay: start.py PATH.mefd --replay")
    if not args.history_seconds > 0:
        parser.error(f"--history-seconds must be > 0; {args.history_seconds} is invalid")
    try:
        check_speed("--speed", args.speed)
    except StreamError as exc:
        parser.error(str(exc))


def wanted(args: argparse.Namespace) -> bool:
    """Whether the options ask for a live stream at the root."""
    return args.live is not None or bool(args.replay)


def build(args: argparse.Namespace, registry=None) -> tuple[LiveStream, Replay | None]:
    """The live stream the options describe, and the replay pushing it (started).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options (:func:`check` passed).
    registry : SessionRegistry, optional
        The server's open sessions; needed for ``--replay`` (the replay reads through it).

    Returns
    -------
    (LiveStream, Replay or None)
    """
    if args.live is not None:
        names = [c.strip() for c in args.channels.split(",")]
        return LiveStream(args.live, names, args.fs, args.dtype, args.history_seconds), None
    recording = registry.acquire(os.path.abspath(args.session),
                                 getattr(args, "password", None))
    try:
        replay = Replay(recording, speed=args.speed, loop=args.loop,
                        history_seconds=args.history_seconds, release=registry.release)
    except BaseException:
        registry.release(recording)
        raise
    return replay.stream, replay.start()


def server_live(args: argparse.Namespace):
    """What to pass as ``MefStreamServer(live=...)``: None, or a builder of the stream."""
    if not wanted(args):
        return None
    return lambda registry: build(args, registry)[0]
