"""Sharing what was read: the block cache, one open session, the registry of sessions."""
