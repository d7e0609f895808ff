"""A call to a server method within a time limit.

A wait that gives up (``next_or_wait(timeout=...)``) asks the server to withdraw its
request; that call must not hang on a server that went silent, so it is made with RPyC's
asynchronous request and an expiry instead of a plain (synchronous) call.
"""
from __future__ import annotations

from typing import Any

import rpyc
from rpyc.core import consts
from rpyc.core.netref import asyncreq

__all__ = ["timed_call"]


def timed_call(proxy: Any, name: str, args: tuple, timeout: float,
               methods: dict | None = None) -> Any:
    """Call ``proxy.name(*args)`` on the server, waiting at most ``timeout`` seconds.

    Parameters
    ----------
    proxy : rpyc netref
        The server object.
    name : str
        Its method.
    args : tuple
        The arguments.
    timeout : float
        Seconds for the attribute lookup and for the call, each.
    methods : dict, optional
        A cache of bound methods (name -> netref) to read and fill.

    Raises
    ------
    TimeoutError
        No answer within ``timeout`` (RPyC's ``AsyncResultTimeout``).
    AttributeError
        The server has no such method.
    """
    method = None if methods is None else methods.get(name)
    if method is None:
        found = asyncreq(proxy, consts.HANDLE_GETATTR, name)
        found.set_expiry(timeout)
        method = found.value
        if methods is not None:
            methods[name] = method
    result = rpyc.async_(method)(*args)
    result.set_expiry(timeout)
    return result.value
