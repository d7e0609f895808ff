"""The stream a command reads: a session opened by PATH, or the stream served at the root.

A server started as ``start.py PATH.mefd``, ``--live NAME`` or ``PATH.mefd --replay``
serves one stream at its connection root and opens nothing by path; ``ls`` names that
stream, and ``info``, ``plot`` and ``export`` read it when given that name.
"""
from __future__ import annotations

import argparse
import os

from .common import UsageError, open_session


def serves_one_stream(root) -> bool:
    """Whether ``root`` is a stream itself (it has no ``open_file``)."""
    proxy = getattr(root, "proxy", root)
    try:
        getattr(proxy, "open_file")   # RPyC refuses a name the root does not expose
    except AttributeError:
        return True
    return False


def open_target(conn, args: argparse.Namespace):
    """The stream ``args.path`` names on the server, and its ``get_info()`` as a dict.

    Raises
    ------
    UsageError
        PATH is not the name of the stream a one-stream server serves (the message says
        the name), or not a session (as :func:`~software.cli.common.open_session`).
    """
    root = conn.root
    if not serves_one_stream(root):
        return open_session(conn, args)
    info = dict(root.get_info())
    name = str(info["path"])
    given = str(args.path).rstrip("/" + os.sep)
    if given not in (name, os.path.basename(name.rstrip("/" + os.sep))):
        kind = "live stream" if info.get("growing") else "session"
        raise UsageError("PATH", f"{args.path!r}: the server on {args.host} serves one "
                                 f"{kind} at its connection root, {name!r} (as 'ls' shows "
                                 f"it); give that name")
    return root, info
