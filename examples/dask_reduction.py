"""dask hand-off: per-channel mean and RMS per minute of the whole demo on a LocalCluster
of two worker processes, each reading its chunks through its own connection.

    python examples/dask_reduction.py [--port 18861]
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    from _handoff_demo import reexec_as_module
    reexec_as_module("dask_reduction")

import numpy as np

from examples._handoff_demo import demo_server, parser


def minute_rms(block: np.ndarray) -> np.ndarray:
    """RMS of each channel of one chunk, NaN-aware: (channels, 1)."""
    with np.errstate(invalid="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN minute -> NaN
            return np.sqrt(np.nanmean(np.square(block), axis=1, keepdims=True))


def reduce(x):
    """Lazy (per-channel mean, per-channel RMS per chunk) of a (channels, samples) array."""
    import dask.array as da
    mean = da.nanmean(x, axis=1)
    rms = x.map_blocks(minute_rms, chunks=(x.chunks[0], (1,) * len(x.chunks[1])),
                       dtype=x.dtype)
    return mean, rms


def main(argv=None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    import dask
    from distributed import Client, LocalCluster

    from software.handoff import to_dask_array

    with demo_server(args) as (host, port), \
            LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                         host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        x = to_dask_array((host, port), args.session, chunk_seconds=60)
        print(f"{x.shape[0]} channels x {x.shape[1]} samples in {x.numblocks[1]} chunks "
              f"of 60 s, on {len(client.scheduler_info()['workers'])} workers")
        mean, rms = dask.compute(*reduce(x))
    print("per-channel mean (uV):", np.array2string(mean[:4], precision=3), "...")
    print("RMS per minute, first channel (uV):", np.array2string(rms[0, :8], precision=2),
          "...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
