"""A session as a ``dask.array``, each chunk read through the service by the worker.

::

    to_dask_array(address, path) --> da.from_array(SessionSource, chunks=(all channels,
        chunk_seconds)) --> task: SessionSource[:, a:b] (address, path, channels, a, b)
            --> worker process: session.read_range() on its own cached connection

Pinning. With dask.distributed and one mefstream server per data host, a chunk is best
read by a worker on the host that holds the session: the answer then comes through the
same-host shared memory instead of the network. Give the read tasks ``workers=`` (the
addresses of that host's workers) or ``resources=`` (e.g. start the workers of host A with
``dask worker SCHEDULER --resources "mef-hostA=1"`` and pass ``resources={"mef-hostA":
1}``); the reductions built on top run wherever the scheduler likes. Both become
``dask.annotate`` annotations of the read layer. dask's low-level fusion drops layer
annotations (dask 2026.8: ``dask.array.optimization.optimize`` flattens the graph), so
compute pinned arrays with fusion off: ``dask.config.set({"optimization.fuse.active":
False})`` or ``.compute(optimize_graph=False)``. To pin a whole computation instead,
``client.compute(result, workers=[...])`` needs neither.
"""
from __future__ import annotations

import numpy as np

from ..discovery.address import parse_address
from ..validation import as_positive_float
from . import session


class SessionSource:
    """An array-like over a session's samples for ``dask.array.from_array``.

    Holds only plain values (address, path, channels, sizes), so it pickles into tasks in
    a few hundred bytes; ``source[:, a:b]`` reads through the calling process's cached
    connection (:func:`software.handoff.session.read_range`).
    """

    def __init__(self, address: tuple[str, int], path: str, channels: tuple[str, ...],
                 n_samples: int, dtype: str, password: str | None, connect: tuple) -> None:
        self.address = address
        self.path = path
        self.channels = channels
        self.shape = (len(channels), int(n_samples))
        self.dtype = np.dtype(dtype)
        self.ndim = 2
        self.password = password
        self.connect = connect

    def __dask_tokenize__(self) -> tuple:
        return ("mefstream", self.address, self.path, self.channels, self.shape,
                self.connect)

    def __getitem__(self, key) -> np.ndarray:
        """``source[rows, columns]`` with slices (what dask's getter passes)."""
        if not isinstance(key, tuple):
            key = (key, slice(None))
        rows, cols = (key + (slice(None),))[:2]
        a, b, step = cols.indices(self.shape[1])
        if b <= a:
            return np.empty((len(self.channels), 0), dtype=self.dtype)[rows]
        data = session.read_range(self.address, self.path, self.channels, a, b,
                                  password=self.password, connect=self.connect)
        return data[rows, ::step] if step != 1 else data[rows]

    def __repr__(self) -> str:
        return (f"<SessionSource {self.path!r} at {self.address[0]}:{self.address[1]} "
                f"{self.shape}>")


def to_dask_array(address, path: str, channels: list[str] | None = None,
                  chunk_seconds: float = 60, *, password: str | None = None,
                  connect: dict | None = None, workers=None, resources: dict | None = None,
                  allow_other_workers: bool = False):
    """A dask array ``(channels, samples)`` of a session, read through a mefstream server.

    Values equal ``MefReader``'s whole-recording read (microvolts, NaN in gaps). The
    session's metadata is read once, here; every chunk is a task that reads its range in
    the worker process, through that process's own connection (opened on first use).

    Parameters
    ----------
    address : str or (str, int)
        The server, ``"host:port"`` or ``(host, port)``, as seen from the workers.
    path : str
        Session path relative to the server's data root.
    channels : list of str, optional
        Channel names in order (one sampling rate); default: the session's default ones.
    chunk_seconds : float
        Chunk length along time (rounded to whole samples); every channel is in each chunk.
        60 s matches the server's read unit.
    password : str, optional
        Level-2 password of the session (it travels in the graph).
    connect : dict, optional
        Extra :func:`~software.get_connection` arguments (TLS files, ...).
    workers : str or list of str, optional
        Run the read tasks only on these dask workers (the session's host). Honoured
        when computed with low-level fusion off (see the module docstring).
    resources : dict, optional
        Run the read tasks only on workers with these resources.
    allow_other_workers : bool
        Let the scheduler fall back to other workers when the pinned ones are busy/gone.

    Returns
    -------
    dask.array.Array
        float64 (the service's dtype), chunks ``(n_channels, chunk_samples)``.
    """
    import dask
    import dask.array as da

    where = parse_address(address)
    chunk_seconds = as_positive_float("chunk_seconds", chunk_seconds)
    connect = session.connect_key(connect)
    wanted = None if channels is None else tuple(str(c) for c in channels)
    info = session.session_info(where, str(path), wanted, password=password, connect=connect)
    names = tuple(str(c) for c in info["channels"])
    n = int(info["n_samples"])
    step = max(1, int(round(chunk_seconds * float(info["fs"]))))
    source = SessionSource(where, str(path), names, n, "float64", password, connect)
    annotations = {}
    if workers is not None:
        annotations["workers"] = [workers] if isinstance(workers, str) else list(workers)
        annotations["allow_other_workers"] = bool(allow_other_workers)
    if resources is not None:
        annotations["resources"] = dict(resources)
    with dask.annotate(**annotations):
        return da.from_array(source, chunks=(len(names), min(step, n)), lock=False,
                             asarray=False, fancy=False, meta=np.empty((0, 0)),
                             inline_array=False, name=f"mefstream-{path}-" +
                             dask.base.tokenize(source, step))
