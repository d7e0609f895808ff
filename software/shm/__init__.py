"""Shared memory in tmpfs: one arena implementation and the connection areas' layout."""
