"""Where ``export`` writes: .csv, .npz and .mefd files, appended one segment at a time.

Every sink is given the export's shape up front and then the segments in order, so no
more than one segment is ever in memory. A sink that fails or is interrupted removes what
it wrote (``abort``). Every format is written beside its destination (.csv and .npz under a
``.partial`` name, .mefd in a ``.NAME.mefd.partial`` directory) and put in place when
complete, so an existing output (``--overwrite``) is replaced only by a whole export: a
file by ``os.replace``, a session directory by an atomic exchange, then removed.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import warnings
import zipfile

import numpy as np


class Sink:
    """Base of the export formats.

    Parameters
    ----------
    path : str
        The output file (or ``.mefd`` directory).
    names : sequence of str
        Channel names, in row order.
    fs : float
        Sampling rate in Hz.
    start_uutc : int
        Time stamp of the first exported sample.
    n_samples : int
        Samples per channel the export will have.
    units : sequence of str
        Units of each channel.
    precision : int
        Decimal digits kept (MEF3 stores integers times ``10**-precision``).
    """

    def __init__(self, path: str, names, fs: float, start_uutc: int, n_samples: int,
                 units, precision: int) -> None:
        self.path = path
        self.names = [str(n) for n in names]
        self.fs = float(fs)
        self.start_uutc = int(start_uutc)
        self.n_samples = int(n_samples)
        self.units = [str(u) for u in units]
        self.precision = int(precision)
        self.written = 0

    def times(self, count: int) -> np.ndarray:
        """Time stamps (uutc, int64) of the next ``count`` samples."""
        index = np.arange(self.written, self.written + count, dtype=np.float64)
        return self.start_uutc + np.rint(index * (1e6 / self.fs)).astype(np.int64)

    def write(self, chunk: np.ndarray) -> None:
        """Append the next segment (channels x samples, float64)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the output after the last segment."""

    def abort(self) -> None:
        """Remove whatever was written (after an error or an interruption)."""


class CsvSink(Sink):
    """One row per sample: ``time_uutc`` then one column per channel; NaN inside gaps."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._partial = self.path + ".partial"
        self._file = open(self._partial, "w", encoding="ascii", newline="\n")
        try:
            self._file.write(",".join(["time_uutc", *self.names]) + "\n")
        except BaseException:   # (Ctrl-C too) nothing half made is left
            self.abort()
            raise
        self._format = "%d" + ",%.10g" * len(self.names)

    def write(self, chunk: np.ndarray) -> None:
        count = chunk.shape[1]
        # time stamps stay exact as float64 (below 2**53 us, the year 2255)
        rows = np.column_stack((self.times(count).astype(np.float64), chunk.T))
        np.savetxt(self._file, rows, fmt=self._format)
        self.written += count

    def finish(self) -> None:
        self._file.close()
        put_in_place(self._partial, self.path)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._partial)


class NpzSink(Sink):
    """``numpy.load`` gives ``data`` (channels x samples), ``channels``, ``fs``,
    ``start_uutc`` and ``units``.

    ``data.npy`` is streamed into the zip (stored, not compressed) as a Fortran-ordered
    array: its bytes are sample after sample, each with every channel, which is the order
    the segments arrive in (``chunk.T``), so nothing is buffered or written twice.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._partial = self.path + ".partial"
        self._zip = zipfile.ZipFile(self._partial, "w", zipfile.ZIP_STORED, allowZip64=True)
        try:
            self._entry = self._zip.open("data.npy", "w", force_zip64=True)
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)),
                      "fortran_order": True, "shape": (len(self.names), self.n_samples)}
            np.lib.format.write_array_header_2_0(self._entry, header)
        except BaseException:   # (Ctrl-C too) nothing half made is left
            self.abort()
            raise

    def write(self, chunk: np.ndarray) -> None:
        self._entry.write(np.ascontiguousarray(chunk.T, dtype=np.float64).tobytes())
        self.written += chunk.shape[1]

    def finish(self) -> None:
        self._entry.close()
        for name, value in (("channels", np.array(self.names)), ("fs", np.float64(self.fs)),
                            ("start_uutc", np.int64(self.start_uutc)),
                            ("units", np.array(self.units))):
            with self._zip.open(f"{name}.npy", "w") as entry:
                np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)
        self._zip.close()
        put_in_place(self._partial, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._entry.close()
        with contextlib.suppress(Exception):
            self._zip.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._partial)


class MefSink(Sink):
    """A MEF3 session written with mef_tools' MefWriter, one ``write_data`` per channel
    and segment; NaN runs become gaps (none is stored as a value, ``max_nans_written=0``).

    Written as ``.NAME.mefd.partial/NAME.mefd`` beside the destination (same session
    name, same file system) and moved into place by :meth:`finish`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from ..mef3.writer import MefWriter  # pymef + pandas: only when writing MEF3
        target = os.path.abspath(self.path)
        parent, name = os.path.split(target)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            # checked here: a MefWriter that fails in __init__ prints a traceback from __del__
            raise OSError(errno.ENOTDIR if os.path.exists(parent) else errno.ENOENT,
                          f"{parent!r} is not a writable directory")
        self._partial_root = os.path.join(parent, f".{name}.partial")
        shutil.rmtree(self._partial_root, ignore_errors=True)   # of a killed export
        os.mkdir(self._partial_root)
        self._partial = os.path.join(self._partial_root, name)
        self._started: set[str] = set()
        self._closed = True
        try:
            # an absolute path: pymef warns on stdout about every relative one
            self._writer = MefWriter(self._partial, overwrite=False)
            self._closed = False
            self._writer.max_nans_written = 0
        except BaseException:   # (Ctrl-C too) nothing half made is left
            self.abort()
            raise

    def write(self, chunk: np.ndarray) -> None:
        from ..mef3.writer import rounding_to_integers

        limit = (2**31 - 1) / 10.0 ** self.precision
        peak = np.nanmax(np.abs(chunk)) if np.isfinite(chunk).any() else 0.0
        if peak > limit:
            raise OverflowError(f"a sample of {peak:g} does not fit MEF3's 32-bit integers at "
                                f"precision {self.precision} (largest {limit:g}); export "
                                f"with a lower --precision")
        t0 = int(self.times(1)[0])
        with warnings.catch_warnings(), rounding_to_integers():
            warnings.simplefilter("ignore")
            for row, name in enumerate(self.names):
                data = chunk[row]
                if name not in self._started:
                    if not np.isfinite(data).any():
                        continue  # mef_tools cannot start a channel with no sample
                    self._writer.data_units = self.units[row]
                    first = True
                else:
                    first = False
                ok = self._writer.write_data(np.ascontiguousarray(data, np.float64), name, t0,
                                             self.fs, precision=self.precision,
                                             reload_metadata=first)
                if not ok:
                    raise OSError(f"mef_tools refused to write channel {name!r} at {t0}")
                self._started.add(name)
        self.written += chunk.shape[1]

    def finish(self) -> None:
        self._close()
        put_in_place(self._partial, self.path)
        shutil.rmtree(self._partial_root, ignore_errors=True)   # (the old session, if any)

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.session.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
        shutil.rmtree(self._partial_root, ignore_errors=True)


def put_in_place(done: str, path: str) -> None:
    """Make the finished export ``done`` appear at ``path``, replacing what is there only
    now: a file by ``os.replace``; a directory (or a file over a directory, or the other
    way) by an atomic exchange, the old one then removed from where ``done`` was."""
    if not os.path.lexists(path) or (os.path.isfile(done) and not os.path.isdir(path)):
        os.replace(done, path)
        return
    from ..mef3.append import exchange  # Linux renameat2; loads pymef: only for this case
    exchange(done, path)
    if os.path.isdir(done) and not os.path.islink(done):
        shutil.rmtree(done)
    else:
        os.remove(done)


#: Output extension -> sink class.
SINKS = {".csv": CsvSink, ".npz": NpzSink, ".mefd": MefSink}
