"""What identifies the files of a session on disk, to tell when they changed.

Pure ``os``: used in the server process (sessions kept warm, quarantined sessions) without
loading pymef.
"""
from __future__ import annotations

import os

__all__ = ["session_identity"]


def session_identity(path: str) -> tuple:
    """What identifies the files of a session: path, inode, size and modification time of
    every file under ``path`` (sorted), so that any rewrite, truncation, append or added
    segment changes it."""
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                found.append((full, None))
                continue
            found.append((full, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)
