"""The RPyC services: a root service that opens files, and one StreamService per file.

Each connection gets its own :class:`StreamService` view of a file (active channels,
segment size, prefetch direction, pending callbacks) over the shared
:class:`~software.recording.Recording`. Exposed methods return only brine types.

Threads: exposed methods run in the connection's serving thread; callbacks are delivered
by the view's own delivery thread, so a slow or hung client never blocks the readers or
another client.
"""
from __future__ import annotations

import functools
import logging
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np
import rpyc

from .errors import (InvalidRangeError, InvalidTypeError, MixedRateError, ReaderError,
                     ServiceClosedError, StreamError, UnknownChannelError)
from .metadata import RateGroup, grid_length, grid_offset
from .recording import Recording
from .registry import SessionRegistry
from .validation import (as_index, as_name_list, as_positive_float, as_uutc,
                         check_request_size)
from .shared_memory import SegmentEncoder
from .wire import encode_error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceOptions:
    """Per-server settings every view uses.

    Attributes
    ----------
    segment_seconds : float
        Default segment size of a new view.
    prefetch : int
        Requests of the same size read ahead in the direction the client moves.
    max_request_bytes : int
        Largest answer one call may produce (float64 samples).
    read_timeout : float
        Seconds a call without callback waits for its data before failing.
    callback_timeout : float
        Seconds after which a client callback that has not returned is noted (logged once
        per view, counted).
    """

    segment_seconds: float = 60.0
    prefetch: int = 3
    max_request_bytes: int = 256 * 2**20
    read_timeout: float = 120.0
    callback_timeout: float = 30.0


class _Deliverer:
    """A view's callback delivery thread: one queue, one thread, started on first use.

    Callbacks go out with ``rpyc.async_``: the thread never waits for the client to run
    them. Each one sent is outstanding until the client's reply arrives. A watchdog timer
    (at most one per view, armed for the oldest outstanding callback and re-armed when it
    fires, so a streaming view starts one thread per ``callback_timeout``, never one per
    callback) notes those that have not returned within ``callback_timeout`` seconds: a
    WARNING the first time for the view, then only the ``hung`` counter.

    A client that stops reading its socket (its callback hangs in its only serving thread)
    makes the send itself block once the socket buffers are full (from a few hundred kB
    to tens of MB, as the kernel tunes them). Only this view's thread waits, until the
    client reads again, disconnects or the server closes; the watchdog still notes it,
    and the answers queued meanwhile stay in memory.

    Parameters
    ----------
    name : str
        Thread name, also the view's name in log messages (the path, never a password).
    callback_timeout : float
        Seconds after which a callback that has not returned is noted.
    """

    def __init__(self, name: str, callback_timeout: float = 30.0) -> None:
        self._name = name
        self._timeout = float(callback_timeout)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()  # guards _outstanding and _watch
        self._outstanding: deque[list] = deque()  # [sent_at, returned], oldest first
        self._watch: threading.Timer | None = None
        self._sending: list | None = None  # the entry whose send is under way
        self._client = ""
        self.delivered = 0
        self.failed = 0
        self.client_errors = 0
        self.hung = 0

    def put(self, callback, future: Future, encode) -> None:
        """Queue a callback of ``future``'s outcome (runs in the thread completing it)."""
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put((callback, future, encode))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._closed:
                return
            callback, future, encode = item
            entry = [0.0, False]
            try:
                exc = future.exception()
                value = encode_error(exc) if exc is not None else encode(future.result())
                if not self._client:
                    self._client = self._peer(callback) or "in-process"
                entry[0] = time.monotonic()
                self._track(entry)
                self._sending = entry
                reply = callback(value)   # blocks only while the client's socket is full
                self.delivered += 1
            except Exception:  # a dead or broken client: note it and go on
                entry[1] = True
                self.failed += 1
                logger.warning("callback delivery failed in %s", self._name, exc_info=True)
                continue
            finally:
                self._sending = None
            if hasattr(reply, "add_callback"):  # an rpyc.async_ call: hear when it returns
                reply.add_callback(functools.partial(self._replied, entry))
            else:  # a local callable (in-process use) has returned already
                entry[1] = True

    def _replied(self, entry: list, reply) -> None:
        """Runs in the connection's serving thread when the client's callback returned."""
        entry[1] = True
        if reply.error:
            self.client_errors += 1
            if self.client_errors == 1:  # once per view: a broken callback raises every time
                logger.warning("a client callback of %s raised; the client keeps receiving "
                               "data (further errors are counted, not logged)", self._name)

    # ---- watchdog -------------------------------------------------------------------

    def _track(self, entry: list) -> None:
        """Note ``entry`` as outstanding; arm the watchdog if none is armed."""
        with self._lock:
            outstanding = self._outstanding
            while outstanding and outstanding[0][1]:  # returned: forget them
                outstanding.popleft()
            outstanding.append(entry)
            self._arm()

    def _arm(self) -> None:
        """Start a timer for the oldest outstanding callback (``_lock`` held)."""
        if self._watch is None and self._outstanding and not self._closed:
            delay = self._outstanding[0][0] + self._timeout - time.monotonic()
            self._watch = threading.Timer(max(delay, 0.0), self._check)
            self._watch.name = f"watchdog-{self._name}"
            self._watch.daemon = True
            self._watch.start()

    def _check(self) -> None:
        """Runs in the watchdog timer's thread: note callbacks past the time limit."""
        try:
            now = time.monotonic()
            late: list[list] = []
            with self._lock:
                self._watch = None
                outstanding = self._outstanding
                while outstanding and (outstanding[0][1]
                                       or now - outstanding[0][0] >= self._timeout):
                    entry = outstanding.popleft()
                    if not entry[1]:
                        late.append(entry)
                first = bool(late) and self.hung == 0
                self.hung += len(late)
                self._arm()
            if not first or self._closed:
                return
            sending = self._sending
            if late[0] is sending:
                what = (f"sending it a callback has been blocked for {now - sending[0]:.1f} s "
                        f"(callback_timeout {self._timeout:g} s): the client has stopped "
                        f"reading its connection")
            else:
                what = (f"the client's callback has been running for {now - late[0][0]:.1f} "
                        f"s (callback_timeout {self._timeout:g} s): it is hung or slow")
                if sending is not None:
                    what += (f"; sending it the next one has been blocked for "
                             f"{now - sending[0]:.1f} s (the client stopped reading)")
            logger.warning("%s (client %s): %s; this view's next callbacks wait behind it, "
                           "other clients are unaffected (further hung callbacks of this view "
                           "are counted, not logged)", self._name, self._client, what)
        except Exception:
            logger.exception("callback watchdog of %s failed", self._name)

    @staticmethod
    def _peer(callback) -> str:
        """``host:port`` of the client behind an ``rpyc.async_`` callback, or ''."""
        try:
            endpoints = callback.proxy.____conn__._config["endpoints"]
            return "%s:%s" % tuple(endpoints[1][:2])
        except Exception:  # noqa: BLE001 - a local callable, or another transport
            return ""

    def close(self) -> None:
        """Drop pending callbacks and stop the thread and the watchdog (idempotent)."""
        self._closed = True
        with self._lock:
            watch, self._watch = self._watch, None
            self._outstanding.clear()
        if watch is not None:
            watch.cancel()
        self._queue.put(None)


def _async(callback):
    """Wrap a client callback so calling it never waits for the client."""
    try:
        return rpyc.async_(callback)
    except TypeError:  # a local callable (in-process use)
        return callback


class StreamService(rpyc.Service):
    """One connection's view of one opened MEF3 session.

    Parameters
    ----------
    recording : Recording
        The shared session.
    options : ServiceOptions
        Server-wide settings.
    display_path : str
        The path as clients see it (relative to the data root).
    """

    #: How answers are encoded: the connection's encoder (shared memory once negotiated),
    #: set by the root service; this socket-only default serves views used in-process.
    _encoder = SegmentEncoder()

    def __init__(self, recording: Recording, options: ServiceOptions,
                 display_path: str) -> None:
        self._recording = recording
        self._options = options
        self._display_path = display_path
        info = recording.info
        self._group: RateGroup = recording.groups[info.default_fs]
        self._names: tuple[str, ...] = self._group.channels
        self._segment_samples = self._samples_for(options.segment_seconds)
        self._segment_seconds = float(options.segment_seconds)
        self._last_start: int | None = None
        self._last_prefetch: tuple | None = None
        self._direction = 1
        self._lock = threading.Lock()
        self._closed = False
        self._deliverer = _Deliverer(f"callbacks-{display_path}",
                                     options.callback_timeout)

    # ---- settings -------------------------------------------------------------------

    def _samples_for(self, seconds: float) -> int:
        return max(1, int(round(seconds * self._group.fs)))

    def exposed_get_info(self) -> tuple:
        """Describe the session and this view's settings.

        Returns
        -------
        tuple of (str, value) pairs
            ``dict(svc.get_info())`` gives ``path``, ``channels`` (active, in order),
            ``all_channels``, ``fs``, ``rates`` ((name, fs) pairs), ``start_uutc``,
            ``end_uutc``, ``n_samples``, ``units``, ``segment_seconds``,
            ``segment_samples``, ``n_segments``, ``gaps`` ((start_uutc, stop_uutc) pairs),
            ``growing`` (False: a file does not grow).
        """
        self._check_open()
        info = self._recording.info
        group = self._group
        return (
            ("path", self._display_path),
            ("channels", self._names),
            ("all_channels", info.names),
            ("fs", group.fs),
            ("rates", tuple((c.name, c.fs) for c in info.channels)),
            ("start_uutc", group.start_uutc),
            ("end_uutc", group.end_uutc),
            ("n_samples", group.n_samples),
            ("units", tuple(info.channel(n).units for n in self._names)),
            ("segment_seconds", self._segment_seconds),
            ("segment_samples", self._segment_samples),
            ("n_segments", self._n_segments()),
            ("gaps", info.gaps(self._names)),
            ("growing", False),
        )

    def _n_segments(self) -> int:
        return math.ceil(self._group.n_samples / self._segment_samples)

    def exposed_set_active_channels(self, names=None) -> tuple[str, ...]:
        """Choose the channels (and their order) that every later segment returns.

        Parameters
        ----------
        names : list of str, str or None
            Channel names in the wanted order; empty or None selects the default: every
            channel of the file's most common sampling rate, in file order.

        Returns
        -------
        tuple of str
            The active channels.

        Raises
        ------
        UnknownChannelError
            A name is not a channel of the session.
        InvalidArgumentError
            A name is repeated.
        MixedRateError
            The names have different sampling rates.
        """
        self._check_open()
        wanted = as_name_list("names", names)
        info = self._recording.info
        if not wanted:
            group = self._recording.groups[info.default_fs]
            wanted = group.channels
        unknown = [n for n in wanted if n not in info.names]
        if unknown:
            raise UnknownChannelError(
                f"names contains {unknown!r}, not channels of this session; choose from "
                f"{list(info.names)!r}.")
        dupes = sorted({n for n in wanted if wanted.count(n) > 1})
        if dupes:
            raise InvalidRangeError(f"names lists {dupes!r} more than once; give each channel "
                                    f"once.")
        rates = {n: info.channel(n).fs for n in wanted}
        if len(set(rates.values())) > 1:
            by_rate: dict[float, list[str]] = {}
            for n, fs in rates.items():
                by_rate.setdefault(fs, []).append(n)
            detail = "; ".join(f"{fs:g} Hz: {chs}" for fs, chs in sorted(by_rate.items()))
            raise MixedRateError(f"names mixes sampling rates ({detail}); select channels of "
                                 f"one rate per view (open the file again for another rate).")
        fs = rates[wanted[0]]
        seconds = self._segment_seconds
        with self._lock:
            self._group = self._recording.groups[fs]
            self._names = wanted
            self._segment_samples = self._samples_for(seconds)
            self._last_start = None
        return wanted

    def exposed_set_segment_size(self, seconds) -> int:
        """Set the segment length used by :meth:`exposed_get_segment`.

        Parameters
        ----------
        seconds : float
            Segment length in seconds (> 0; rounded to whole samples, at least one).

        Returns
        -------
        int
            Number of segments; the last one may be shorter.
        """
        self._check_open()
        seconds = as_positive_float("seconds", seconds)
        samples = self._samples_for(seconds)
        check_request_size(len(self._names), samples, self._options.max_request_bytes)
        with self._lock:
            self._segment_seconds = seconds
            self._segment_samples = samples
        return self._n_segments()

    # ---- data -----------------------------------------------------------------------

    def exposed_get_segment(self, index, _callback=None):
        """Return the ``index``-th segment of the current size (channels x samples).

        Parameters
        ----------
        index : int
            0 <= index < n_segments.
        _callback : callable, optional
            Called with the segment when it was not ready (see Returns).

        Returns
        -------
        tuple or False
            ``(bytes, dtype, shape)`` for :func:`~software.decode_segment`; with a
            callback and data not cached yet: ``False`` now and the data via the callback.
        """
        self._check_open()
        index = as_index("index", index)
        n_segments = self._n_segments()
        if index >= n_segments:
            raise InvalidRangeError(f"index={index} is past the last segment; valid indices "
                                    f"are 0..{n_segments - 1} for segments of "
                                    f"{self._segment_seconds:g} s.")
        start = index * self._segment_samples
        stop = min(start + self._segment_samples, self._group.n_samples)
        return self._serve(self._names, start, stop, _callback, rows=None)

    def exposed_get_stream_segment(self, _range, _startIndex, _callback=None):
        """Return ``_range`` samples of every active channel from sample ``_startIndex``.

        Parameters
        ----------
        _range : int
            Number of samples (> 0); fewer are returned near the end.
        _startIndex : int
            Grid index from the session start (>= 0).
        _callback : callable, optional
            Called with the data when it was not ready.

        Returns
        -------
        tuple or False
            ``(bytes, dtype, shape)`` with shape (channels, samples); False past the end,
            or (with a callback) when the data will come through the callback.
        """
        self._check_open()
        length = as_index("_range", _range, minimum=1)
        start = as_index("_startIndex", _startIndex)
        names = self._names
        n = self._group.n_samples
        # the limit applies to what is asked, so a call fails or works whatever the file size
        check_request_size(len(names), length, self._options.max_request_bytes)
        if start >= n:
            return False
        return self._serve(names, start, min(start + length, n), _callback, rows=None)

    def exposed_get_row_segment(self, _row, _range, _startIndex, _callback=None):
        """Return ``_range`` samples of one channel from sample ``_startIndex``.

        Parameters
        ----------
        _row : int or str
            Index into the active channels, or a channel name of the same sampling rate.
        _range, _startIndex, _callback
            As in :meth:`exposed_get_stream_segment`.

        Returns
        -------
        tuple or False
            ``(bytes, dtype, shape)`` with shape (samples,), or False as for stream segments.
        """
        self._check_open()
        name = self._row_name(_row)
        length = as_index("_range", _range, minimum=1)
        start = as_index("_startIndex", _startIndex)
        n = self._group.n_samples
        check_request_size(1, length, self._options.max_request_bytes)
        if start >= n:
            return False
        return self._serve((name,), start, min(start + length, n), _callback, rows=0)

    def _row_name(self, row) -> str:
        names = self._names
        if isinstance(row, str):
            row = str(row)
            if row not in names:
                where = ("is not an active channel" if row in self._recording.info.names
                         else "is not a channel of this session")
                raise UnknownChannelError(f"_row={row!r} {where}; active channels: "
                                          f"{list(names)!r}.")
            return row
        index = as_index("_row", row)
        if index >= len(names):
            raise UnknownChannelError(f"_row={index} is out of range: there are {len(names)} "
                                      f"active channels (0..{len(names) - 1}).")
        return names[index]

    def exposed_get_time_segment(self, start_uutc, stop_uutc, _callback=None):
        """Return every active channel in the time window ``[start_uutc, stop_uutc)``.

        Equals ``MefReader.get_data(channels, start_uutc, stop_uutc)`` for windows that
        start on the sample grid; an off-grid start snaps to the nearest grid sample.
        Parts of the window outside the recording are NaN.

        Parameters
        ----------
        start_uutc, stop_uutc : int
            Microseconds since the epoch, ``start_uutc < stop_uutc``.
        _callback : callable, optional
            As for :meth:`exposed_get_stream_segment`.

        Returns
        -------
        tuple or False
            The segment; False when the window lies entirely outside the recording, or
            (with a callback) when the data will come through the callback.
        """
        self._check_open()
        t0 = as_uutc("start_uutc", start_uutc)
        t1 = as_uutc("stop_uutc", stop_uutc)
        if t1 <= t0:
            raise InvalidRangeError(f"stop_uutc={t1} must be after start_uutc={t0}.")
        group = self._group
        first = grid_offset(t0, group.start_uutc, group.fs)
        count = grid_length(t0, t1, group.fs)
        check_request_size(len(self._names), count, self._options.max_request_bytes)
        lo, hi = max(first, 0), min(first + count, group.n_samples)
        if count == 0 or hi <= lo:
            return False
        pad = (lo - first, first + count - hi)
        return self._serve(self._names, lo, hi, _callback, rows=None, pad=pad)

    # ---- machinery ------------------------------------------------------------------

    def _serve(self, names, start, stop, callback, rows, pad=(0, 0)):
        if callback is not None and not callable(callback):
            raise InvalidTypeError(f"_callback must be a function taking one argument, or None; "
                                   f"a value of type {type(callback).__name__} is not.")
        recording, group = self._recording, self._group
        future = recording.request(names, group, start, stop)
        self._prefetch(names, group, start, stop)

        def encode(data: np.ndarray):
            if pad != (0, 0):
                data = np.pad(data, ((0, 0), pad), constant_values=np.nan)
            return self._encoder(data[rows] if rows is not None else data)

        if callback is None or future.done():
            try:
                data = future.result(timeout=self._options.read_timeout)
            except FutureTimeout:
                raise ReaderError(f"no data after {self._options.read_timeout:g} s for samples "
                                  f"[{start}, {stop}); the reader processes are overloaded "
                                  f"or stuck. Try again or ask for less.") from None
            return encode(data)
        deliverer = self._deliverer
        cb = _async(callback)
        future.add_done_callback(lambda f: deliverer.put(cb, f, encode))
        return False

    def _prefetch(self, names, group: RateGroup, start: int, stop: int) -> None:
        depth = self._options.prefetch
        if depth <= 0:
            return
        with self._lock:
            if self._last_start is not None and start != self._last_start:
                self._direction = 1 if start > self._last_start else -1
            self._last_start = start
            direction = self._direction
        length = stop - start
        size = self._recording.block_samples(group)
        spans = []  # cache blocks of each request ahead, nearest first
        for i in range(1, depth + 1):
            lo = max(start + direction * i * length, 0)
            hi = min(start + direction * i * length + length, group.n_samples)
            if hi <= lo:
                break
            spans.append((lo // size, (hi - 1) // size, i))
        plan = (names, group.fs, tuple(spans))
        if plan == self._last_prefetch:  # small steps within the same blocks: done already
            return
        self._last_prefetch = plan
        for first, last, priority in spans:
            self._recording.prefetch(names, group, first * size, (last + 1) * size,
                                     priority=priority)

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceClosedError(f"{self._display_path!r} was closed on this connection; "
                                     f"open it again with open_file().")

    def close(self) -> None:
        """Stop delivering callbacks for this view (idempotent)."""
        self._closed = True
        self._deliverer.close()

    @property
    def closed(self) -> bool:
        """Whether the view was closed."""
        return self._closed

    # ---- CREPE push side --------------------------------------------------------------

    def append_stream_segment_data(self, _new_data) -> None:
        """CREPE's push side; a MEF3 file is read-only, so this always refuses."""
        raise StreamError("a MEF3 file stream is read-only: data arrives from the reader "
                          "processes; use a LiveStream to push samples.")

    def append_stream_row_data(self, _row, _new_data) -> None:
        """CREPE's push side; a MEF3 file is read-only, so this always refuses."""
        self.append_stream_segment_data(_new_data)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<StreamService {self._display_path!r} {state}, {len(self._names)} channels "
                f"at {self._group.fs:g} Hz>")


class RootService(rpyc.Service):
    """The connection root: opens sessions under the data root (one instance per connection).

    Parameters
    ----------
    registry : SessionRegistry
        Shared open sessions.
    options : ServiceOptions
        Settings handed to each view.
    """

    def __init__(self, registry: SessionRegistry, options: ServiceOptions) -> None:
        self._registry = registry
        self._options = options
        self._views: dict[str, tuple[StreamService, Recording]] = {}
        self._lock = threading.Lock()

    _encoder = StreamService._encoder      # replaced per connection by on_connect

    def on_connect(self, conn) -> None:
        """Give this connection its segment encoder (the socket until shared memory)."""
        self._encoder = SegmentEncoder(conn)

    def on_disconnect(self, conn) -> None:
        """Drop this connection's views, pending callbacks and shared memory."""
        with self._lock:
            views = list(self._views.values())
            self._views.clear()
        for view, recording in views:
            view.close()
            self._registry.release(recording)
        self._encoder.close()

    def exposed_open_shared_memory(self, nbytes) -> tuple | bool:
        """Offer this connection a shared-memory area for its answers (same host only).

        Parameters
        ----------
        nbytes : int
            Wanted size in bytes (granted between 1 MiB and 1 GiB).

        Returns
        -------
        tuple or False
            ``(name, capacity)``: the file ``/dev/shm/<name>`` to map and unlink, then
            call :meth:`exposed_attach_shared_memory`; False when none can be offered.
        """
        return self._encoder.offer(nbytes)

    def exposed_attach_shared_memory(self, token) -> bool:
        """Send this connection's answers through the offered area from now on.

        Parameters
        ----------
        token : bytes or False
            The token read from the area's header (proof of mapping it), or False to
            decline the offer (the area is removed).

        Returns
        -------
        bool
            Whether answers now go through the area.
        """
        return self._encoder.attach(token)

    def exposed_open_file(self, path, password=None) -> StreamService:
        """Open a session and return this connection's StreamService for it.

        Parameters
        ----------
        path : str
            Session directory, relative to the data root (or absolute, inside it).
        password : str, optional
            Level-2 (data) password of an encrypted session.

        Returns
        -------
        StreamService
            This connection's view; opening the same path again returns the same view.
        """
        # acquire even when this connection has a view: it checks the password every time
        recording = self._registry.acquire(path, password)  # checks the password's type
        real = recording.path
        with self._lock:
            entry = self._views.get(real)
            if entry is None:
                view = StreamService(recording, self._options, self._registry.display_path(real))
                view._encoder = self._encoder
                self._views[real] = (view, recording)
                return view
        self._registry.release(recording)
        return entry[0]

    def exposed_list_open_files(self) -> tuple[str, ...]:
        """Paths (relative to the data root) of the sessions this connection has open."""
        with self._lock:
            return tuple(sorted(v.exposed_get_info()[0][1] for v, _ in self._views.values()))

    def exposed_close_file(self, path) -> bool:
        """Close this connection's view of ``path``; returns whether it was open."""
        real = self._registry.resolve(path)
        with self._lock:
            entry = self._views.pop(real, None)
        if entry is None:
            return False
        entry[0].close()
        self._registry.release(entry[1])
        return True


class FileRootService(StreamService):
    """CREPE style: one session served at the connection root (``start.py PATH.mefd``).

    Parameters
    ----------
    registry : SessionRegistry
        Shared open sessions.
    options : ServiceOptions
        Settings of the view.
    path : str
        The session served.
    password : str or None
        Its level-2 password.
    """

    def __init__(self, registry: SessionRegistry, options: ServiceOptions, path: str,
                 password: str | None = None) -> None:
        self._registry = registry
        recording = registry.acquire(path, password)
        super().__init__(recording, options, registry.display_path(recording.path))

    on_connect = RootService.on_connect
    exposed_open_shared_memory = RootService.exposed_open_shared_memory
    exposed_attach_shared_memory = RootService.exposed_attach_shared_memory

    def on_disconnect(self, conn) -> None:
        """Drop pending callbacks, shared memory, and give the session back."""
        self.close()
        self._registry.release(self._recording)
        self._encoder.close()
