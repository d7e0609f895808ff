"""Finding mefstream servers across hosts through an RPyC TCP registry.

::

    data host A: start.py --registry R:18811 --> announce("MEF", port) --+
    data host B: start.py --registry R:18811 --> announce("MEF", port) --+--> RegistryServer
    client:      lookup("MEF", "R:18811") -> [(A, port), (B, port)] <----+    (host R)

Everything here speaks rpyc's own registry protocol (``rpyc.utils.registry``), so rpyc's
``TCPRegistryClient`` and ``rpyc_registry --mode TCP`` interoperate.
"""
from __future__ import annotations

from .address import format_address, parse_address
from .registrar import (
           REREGISTER_INTERVAL,
           Announcement,
           announce,
           list_services,
           lookup,
)
from .registry import DEFAULT_PRUNING_TIMEOUT, REGISTRY_PORT, RegistryServer

__all__ = ["Announcement", "DEFAULT_PRUNING_TIMEOUT", "REGISTRY_PORT", "REREGISTER_INTERVAL",
           "RegistryServer", "announce", "format_address", "list_services", "lookup",
           "parse_address"]
