"""Settings of the mefstream launchers (values only; software/ takes them as arguments).

Every value can be overridden by an environment variable named ``MEFSTREAM_<NAME>``, e.g.
``MEFSTREAM_CACHE_MB=4096`` or ``MEFSTREAM_RPCPORTS='{"MEF": 18900}'``.
"""
import json
import os

import software.errors  # noqa: F401 - the error classes plain clients rebuild (see RPYC_CONFIG)

_PREFIX = "MEFSTREAM_"


def _env(name, default, kind):
    raw = os.environ.get(_PREFIX + name)
    if raw is None:
        return default
    try:
        return json.loads(raw) if kind is dict else kind(raw)
    except ValueError as exc:
        raise SystemExit(f"environment variable {_PREFIX}{name}={raw!r} is not a valid "
                         f"{kind.__name__}: {exc}") from None


#: Service name -> TCP port. The root service is RPCPORTS["MEF"].
RPCPORTS = _env("RPCPORTS", {"MEF": 18861}, dict)
#: Interface to bind; anything but loopback should use TLS.
HOST = _env("HOST", "127.0.0.1", str)
#: Reader processes decoding MEF3 (pymef holds the GIL: processes, not threads).
READER_WORKERS = _env("READER_WORKERS", 2, int)
#: Requests of the same size (at least 60 s) read ahead of a client streaming through a file.
PREFETCH = _env("PREFETCH", 1, int)
#: Budget of the shared block cache, in MiB.
CACHE_MB = _env("CACHE_MB", 1024, float)
#: Default segment size of get_segment, in seconds.
SEGMENT_SECONDS = _env("SEGMENT_SECONDS", 60.0, float)
#: Length of one cache block, in seconds.
BLOCK_SECONDS = _env("BLOCK_SECONDS", 10.0, float)
#: Largest answer of one call, in MiB.
MAX_REQUEST_MB = _env("MAX_REQUEST_MB", 256, float)
#: Nice value added to the reader processes (> 0: reading ahead yields the CPU to clients).
READER_NICE = _env("READER_NICE", 0, int)
#: Seconds after which a client callback that has not returned is logged and counted.
CALLBACK_TIMEOUT = _env("CALLBACK_TIMEOUT", 30.0, float)
#: Seconds a call without callback waits for its data before failing.
READ_TIMEOUT = _env("READ_TIMEOUT", 120.0, float)
#: Seconds a session stays cached after its last client closed it (0: close at once).
KEEP_WARM_SECONDS = _env("KEEP_WARM_SECONDS", 300.0, float)
#: Callback requests one connection may have waiting for their answer.
MAX_WAITING = _env("MAX_WAITING", 10_000, int)
#: Directory clients may open sessions under (relative paths resolve against it).
DATA_ROOT = _env("DATA_ROOT", ".", str)
#: Name of the demo session written under DATA_ROOT when it holds no session.
DEMO_NAME = _env("DEMO_NAME", "demo.mefd", str)
#: RPyC registry to announce the server to ("host[:port]"; empty: none).
REGISTRY = _env("REGISTRY", "", str)
#: Name the server announces to the registry.
SERVICE_NAME = _env("SERVICE_NAME", "MEF", str)
#: RPyC settings for CREPE-style ``rpyc.connect(host, port, config=RPYC_CONFIG)`` clients.
#: A fresh dict: rpyc's own DEFAULT_CONFIG is never modified. RPyC never imports a module
#: a server names; it rebuilds an error's class only from modules already loaded: the
#: built-in ones and mefstream's (``software.errors``, loaded by importing this file).
#: Anything else arrives as RPyC's GenericException carrying the remote class name.
RPYC_CONFIG = {
    "allow_public_attrs": False,
    "allow_pickle": False,
    "import_custom_exceptions": False,
    "instantiate_custom_exceptions": True,
    "sync_request_timeout": 300,
}
RPYC_CONFIG.update(_env("RPYC_CONFIG", {}, dict))
