"""``start.py`` with callback time stamps, for the callback-latency row of the benchmarks.

    python -m benchmarks.stamped_server --port P --data-root D [start.py options]

Identical to ``python start.py`` except that every value a view delivers through a client
callback is wrapped as ``("stamped", t_ready, value)``, where ``t_ready`` is
``time.monotonic()`` taken the moment the request's data was complete in the server (when
its future's done-callback hands it to the view's delivery thread). The client subtracts
that from ``time.monotonic()`` at the start of its callback: both read the same
system-wide CLOCK_MONOTONIC, so the difference is the delivery latency (delivery-thread
wake-up, assembling the answer from its blocks, encoding, sending, the client's serving
thread receiving and dispatching).

The wrapping patches ``software.stream.delivery.CallbackDeliverer.put`` (an internal hook).
When that hook is missing, the server starts unpatched and prints ``STAMPING UNAVAILABLE`` to stderr;
the benchmark then reports only its indirect measurement.
"""
from __future__ import annotations

import sys
import time


def _patch() -> bool:
    try:
        from software.stream.delivery import CallbackDeliverer as deliverer
        original = deliverer.put
    except (ImportError, AttributeError):
        return False

    def put(self, callback, future, encode, *args, **kwargs):
        t_ready = time.monotonic()

        def stamped_encode(data, _encode=encode, _t=t_ready):
            return ("stamped", _t, _encode(data))

        return original(self, callback, future, stamped_encode, *args, **kwargs)

    deliverer.put = put
    return True


def main() -> int:
    if not _patch():
        print("STAMPING UNAVAILABLE: software.stream.delivery.CallbackDeliverer.put not found",
              file=sys.stderr, flush=True)
    import start
    return start.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
