"""Record a live stream into a crash-safe MEF3 session as it arrives.

A :class:`Recorder` follows a stream from its head with a
:class:`~software.client.iterators.StreamSegmentIterator` (``records=True``: each chunk
with the stream's markers on its samples), gathers about ``flush_seconds`` of samples, and
appends them to an :class:`~software.mef3.append.AppendingSession` with their markers as
MEF3 records (Note; EDFA with a duration), each append atomic on disk: a crash keeps the
samples and markers of the appends done, and no torn record. ``python -m software record
--port P OUT.mefd`` runs one.

Threads: the follow loop runs in the recorder's own thread ("recorder-<name>").
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import rpyc

from ..client.iterators import StreamSegmentIterator
from ..errors import InvalidArgumentError
from ..mef3.append import AppendingSession

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)


class _InProcess:
    """An in-process StreamService under the names a client calls (``exposed_`` off)."""

    def __init__(self, svc: rpyc.Service) -> None:
        self.get_info = svc.exposed_get_info
        self.get_stream_segment = svc.exposed_get_stream_segment
        self.withdraw = svc.exposed_withdraw    # a timed-out wait gives its request back
        self.get_records_by_index = svc.exposed_get_records_by_index
        self.get_stream_segment_marked = svc.exposed_get_stream_segment_marked


def _target(stream):
    """What the iterator reads: a connection, a service proxy, or an in-process view."""
    if isinstance(stream, rpyc.Service):
        return _InProcess(stream)
    return stream


class Recorder:
    """Follow a live stream from its head and write it to a MEF3 session.

    Parameters
    ----------
    stream_or_connection : rpyc.Connection, service proxy or StreamService
        The live stream: a connection whose root is the stream, a proxy of it, or a
        StreamService used in-process.
    out_path : str or os.PathLike
        Session to create (``.mefd``; must not exist unless ``overwrite``).
    seconds : float, optional
        Stop after this much wall-clock time; None records until :meth:`close`.
    precision : int, optional
        Decimal digits kept.
    flush_seconds : float, optional
        Samples gathered per atomic append: a crash loses at most this much plus the
        samples in flight.
    overwrite : bool, optional
        Replace an existing session at ``out_path``.

    Raises
    ------
    ValueError
        The stream is not growing, or a bad argument.
    """

    def __init__(self, stream_or_connection, out_path, seconds: float | None = None,
                 precision: int = 2, flush_seconds: float = 1.0, *,
                 overwrite: bool = False) -> None:
        if seconds is not None and not float(seconds) > 0:
            raise InvalidArgumentError(f"seconds must be positive or None; {seconds!r} is invalid")
        if not float(flush_seconds) > 0:
            raise InvalidArgumentError(f"flush_seconds must be positive; {flush_seconds!r} is "
                                       f"invalid")
        self._target = _target(stream_or_connection)
        svc = getattr(self._target, "root", self._target)
        info = dict(svc.get_info())
        if not info.get("growing", False):
            raise InvalidArgumentError(f"{info.get('path')!r} is not a live stream "
                                       f"(growing=False); record a stream served with --live "
                                       f"or --replay")
        self.fs = float(info["fs"])
        self.channels = tuple(str(c) for c in info["channels"])
        self.head = int(info["n_samples"])       # where recording starts (grid index)
        self._flush = max(1, int(round(float(flush_seconds) * self.fs)))
        chunk = max(1, int(round(0.1 * self.fs)))
        self._chunk = min(chunk, int(info.get("segment_samples", chunk)))
        self._seconds = None if seconds is None else float(seconds)
        self.session = AppendingSession(out_path, self.channels, self.fs,
                                        int(info["start_uutc"]) + int(round(
                                            self.head * 1e6 / self.fs)),
                                        precision=precision, overwrite=overwrite)
        self.path = self.session.path
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        #: Markers of the stream written as records (Note, EDFA with a duration).
        self.n_markers = 0
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> Recorder:
        """Start following the stream in the recorder's thread (idempotent)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                name = self.path.rsplit("/", 1)[-1]
                self._thread = threading.Thread(target=self._run, name=f"recorder-{name}",
                                                daemon=True)
                self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the recording to end (``seconds`` elapsed, or closed); True if it did."""
        return self._done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop, write what was gathered, close the session (idempotent).

        Parameters
        ----------
        timeout : float
            Seconds to wait for the recorder's thread to finish its last append.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None:
            self.session.close()
            self._done.set()

    @property
    def closed(self) -> bool:
        """Whether the recording has ended and the session is closed."""
        return self._done.is_set()

    @property
    def n_samples(self) -> int:
        """Samples per channel written so far."""
        return self.session.n_samples

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("recording" if self._thread else "idle")
        return (f"<Recorder {self.path!r} {len(self.channels)} ch @ {self.fs} Hz from "
                f"{self.head}, {self.n_samples} samples written, {state}>")

    # ---- the follow loop ------------------------------------------------------------

    def _run(self) -> None:
        iterator = StreamSegmentIterator(self._chunk, start=self.head, records=True)
        deadline = None if self._seconds is None else time.monotonic() + self._seconds
        pieces: list[np.ndarray] = []
        marks: list = []                 # the markers of the pieces, written with them
        gathered = 0
        try:
            while not self._stop.is_set():
                wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if wait <= 0:
                    break
                got = iterator.next_or_wait(self._target, timeout=wait)
                if got is False:
                    continue
                data, records = got
                pieces.append(np.asarray(data))
                marks += records
                gathered += pieces[-1].shape[1]
                if gathered >= self._flush:
                    self.session.append(np.concatenate(pieces, axis=1),
                                        records=self._records(marks))
                    pieces, marks, gathered = [], [], 0
            if pieces:
                self.session.append(np.concatenate(pieces, axis=1),
                                    records=self._records(marks))
        except BaseException as exc:  # noqa: BLE001 - kept for the caller, logged
            self.error = exc
            logger.exception("recorder %s stopped", self.path)
        finally:
            self.session.close()
            self._done.set()

    def _records(self, marks: list) -> list[tuple]:
        """The stream's markers as session records, timed on the session's own grid."""
        self.n_markers += len(marks)
        return [(self.session.uutc(r.index - self.head), r.type, r.text, r.duration, None,
                 tuple(r.fields.items())) for r in marks]
