"""A PyTorch dataset of fixed-length windows read through the service.

::

    DataLoader(num_workers=N) --pickles/forks--> WindowDataset (address, path, channels,
        window/stride in samples: no connection) --> worker process: __getitem__(i)
            --> session.read_range(): that worker's own connection, opened on first use
    BlockRunSampler: runs of consecutive windows, run order shuffled; batch_size <= run
        keeps each batch (one worker) inside one stretch of the file: cache and read-ahead

torch is imported by this module only; it is not a core requirement
(``pip install -r requirements-torch.txt``).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..discovery.address import parse_address
from ..errors import InvalidArgumentError
from ..validation import as_positive_float
from . import session


class WindowDataset(Dataset):
    """Fixed-length windows of a session, read through a mefstream server.

    Window ``i`` holds samples ``[i * stride, i * stride + window)`` of the channels, as
    the service serves them (bit-equal to ``MefReader``, NaN in gaps, microvolts). Only
    whole windows are included. Works with ``DataLoader(num_workers>0)`` under fork or
    spawn: the dataset holds plain values; each worker process opens its own connection
    on its first window and keeps it (:mod:`software.handoff.session`). No connection
    is ever an attribute of the dataset, so none can be pickled; a forked worker sets the
    parent's aside untouched.

    Parameters
    ----------
    address : str or (str, int)
        The server: ``"host:port"`` or ``(host, port)``.
    path : str
        Session path relative to the server's data root.
    window_seconds : float
        Window length (rounded to whole samples).
    channels : list of str, optional
        Channel names in order (one sampling rate); default: the session's default ones.
    stride_seconds : float, optional
        Distance between window starts; default ``window_seconds`` (no overlap).
    transform : callable, optional
        Applied to each window tensor (e.g. ``lambda x: torch.nan_to_num(x).float()``).
    password : str, optional
        Level-2 password of the session (it travels with the dataset to the workers).
    connect : dict, optional
        Extra :func:`~software.get_connection` arguments, e.g. TLS ``ca_certs``,
        ``keyfile``, ``certfile``.

    Attributes
    ----------
    channels : tuple of str
    fs : float
    window, stride, n_samples : int
        In samples.

    Raises
    ------
    InvalidArgumentError
        The window is longer than the session, or a length is not a positive number.
    """

    def __init__(self, address, path: str, window_seconds: float,
                 channels: list[str] | None = None, stride_seconds: float | None = None,
                 transform: Callable | None = None, *, password: str | None = None,
                 connect: dict | None = None) -> None:
        self.address = parse_address(address)
        self.path = str(path)
        self.password = password
        self.connect = session.connect_key(connect)
        window_seconds = as_positive_float("window_seconds", window_seconds)
        stride_seconds = (window_seconds if stride_seconds is None
                          else as_positive_float("stride_seconds", stride_seconds))
        wanted = None if channels is None else tuple(str(c) for c in channels)
        info = session.session_info(self.address, self.path, wanted, password=password,
                                    connect=self.connect)
        self.channels: tuple[str, ...] = tuple(str(c) for c in info["channels"])
        self.fs = float(info["fs"])
        self.n_samples = int(info["n_samples"])
        self.start_uutc = int(info["start_uutc"])
        self.window = max(1, int(round(window_seconds * self.fs)))
        self.stride = max(1, int(round(stride_seconds * self.fs)))
        if self.window > self.n_samples:
            raise InvalidArgumentError(
                f"window_seconds={window_seconds:g} is longer than {self.path!r} "
                f"({self.n_samples / self.fs:g} s); pass a shorter window.")
        self.transform = transform

    def __len__(self) -> int:
        return (self.n_samples - self.window) // self.stride + 1

    def start_of(self, index: int) -> int:
        """Grid index of the first sample of window ``index``."""
        return int(index) * self.stride

    def __getitem__(self, index: int) -> torch.Tensor:
        """Window ``index`` as a ``(channels, window)`` tensor (float64 unless transformed).

        Runs in the calling process (a DataLoader worker) on its own connection.
        """
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"window index {index} out of range for {n} windows")
        first = index * self.stride
        data = session.read_range(self.address, self.path, self.channels, first,
                                  first + self.window, password=self.password,
                                  connect=self.connect)
        window = torch.from_numpy(data)
        return self.transform(window) if self.transform is not None else window

    def __repr__(self) -> str:
        host, port = self.address
        return (f"<WindowDataset {self.path!r} at {host}:{port}: {len(self)} windows of "
                f"{self.window} samples x {len(self.channels)} channels, stride "
                f"{self.stride}>")


class BlockRunSampler(Sampler[int]):
    """Window indices in runs of consecutive windows, the runs in random order.

    With ``DataLoader(batch_size=B)`` each batch goes to one worker; when ``B`` divides
    ``run_windows`` a batch lies inside one run, so a worker reads consecutive windows
    (the server reads ahead and caches that stretch) instead of jumping across the file.

    Parameters
    ----------
    dataset : WindowDataset
        The dataset (``len`` and ``stride``/``fs`` are used).
    run_seconds : float
        Length of a run of windows, in seconds of recording (default 60: the server's
        read unit); at least one window.
    shuffle : bool
        Shuffle the order of runs each epoch (the windows inside a run stay in order).
    seed : int, optional
        Seed of the shuffle; each epoch (each ``iter``) draws a new order from it.
    drop_last : bool
        Leave out the last, shorter run.
    """

    def __init__(self, dataset: WindowDataset, run_seconds: float = 60.0,
                 shuffle: bool = True, seed: int | None = None,
                 drop_last: bool = False) -> None:
        run_seconds = as_positive_float("run_seconds", run_seconds)
        self.n = len(dataset)
        self.run_windows = max(1, int(math.floor(run_seconds * dataset.fs / dataset.stride)))
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._rng = np.random.default_rng(seed)

    def runs(self) -> list[range]:
        """The runs, in file order."""
        out = [range(a, min(a + self.run_windows, self.n))
               for a in range(0, self.n, self.run_windows)]
        if self.drop_last and out and len(out[-1]) < self.run_windows:
            out.pop()
        return out

    def __iter__(self) -> Iterator[int]:
        runs = self.runs()
        order = self._rng.permutation(len(runs)) if self.shuffle else range(len(runs))
        for r in order:
            yield from runs[int(r)]

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs())
