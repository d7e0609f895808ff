"""A view's requests: answered at once, or registered to be answered through a callback.

:class:`Requests` asks the source for the samples, builds the answer in the thread that
sends it (straight into the connection's shared-memory area when it goes as it is), hands
answers that were not ready to the view's callback thread, tracks the direction a client
moves in to hint the source, counts each callback request against its connection's limit
until it is answered, lets the client withdraw the ones it no longer waits for, and
withdraws every pending request on close.
"""
from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from ..errors import InvalidTypeError, ReaderError
from ..mef3.metadata import RateGroup
from .delivery import CallbackDeliverer, async_callback
from .options import ServiceOptions
from .source import Source
from .waiting import Tickets

__all__ = ["Requests"]


class Requests:
    """The requests of one view.

    Parameters
    ----------
    source : Source
        What the view serves.
    options : ServiceOptions
        Server-wide settings (read-ahead depth, read timeout, callback timeout).
    name : str
        Name of the view's callback thread (and of the view in log messages).
    """

    def __init__(self, source: Source, options: ServiceOptions, name: str) -> None:
        self._source = source
        self._options = options
        self._lock = threading.Lock()
        self._last_range: tuple[float, int, int] | None = None
        self._direction = 1
        self._tickets = Tickets(options.waiting, options.counters)
        self.deliverer = CallbackDeliverer(name, options.callback_timeout,
                                           counters=options.counters)
        source.run_with(self.deliverer.call_soon)   # a live view answers in that thread

    def serve(self, encoder, names, group: RateGroup, start: int, stop: int, callback,
              rows: int | None, pad: tuple[int, int] = (0, 0)):
        """Answer grid samples ``[start, stop)`` of ``names`` (runs in the serving thread).

        Parameters
        ----------
        encoder : SegmentEncoder
            The connection's encoder.
        names, group, start, stop
            What to answer; ``stop`` may lie past the head of a growing source.
        callback : callable or None
            The client's callback.
        rows : int or None
            Answer only this row (a row request).
        pad : (int, int)
            NaN columns added before and after (a time window reaching outside).

        Returns
        -------
        tuple or False
            The wire value, or False when it will come through the callback (or, with
            no callback, a growing source does not have it yet).
        """
        if callback is not None and not callable(callback):
            raise InvalidTypeError(f"_callback must be a function taking one argument, or None; "
                                   f"a value of type {type(callback).__name__} is not.")
        source = self._source
        if source.growing and stop > group.n_samples and callback is None:
            return False  # CREPE's "not ready": nothing is registered
        gathered = source.gather(names, group, start, stop)
        ready = gathered.done()
        if not ready:  # reads ahead queue behind this request's reads (lower priority)
            self._read_ahead(names, group, start, stop)
        # an answer sent as it is is assembled in the connection's shared-memory area
        reserve = encoder.reserve if rows is None and pad == (0, 0) \
            and source.dtype == np.float64 else None

        def encode(blocks, ticket=None) -> tuple:  # serving or the view's delivery thread
            try:
                data = blocks.assemble(reserve)
                if ticket is not None:
                    ticket.hold(data.nbytes)
                if pad != (0, 0):
                    data = np.pad(data.astype(np.float64, copy=False), ((0, 0), pad),
                                  constant_values=np.nan)
                return encoder(data[rows] if rows is not None else data)
            finally:
                encoder.discard()

        if callback is None or ready:
            try:
                value = encode(gathered.result(timeout=self._options.read_timeout))
            except FutureTimeout:
                raise ReaderError(f"no data after {self._options.read_timeout:g} s for samples "
                                  f"[{start}, {stop}); the reader processes are overloaded "
                                  f"or stuck. Try again or ask for less.") from None
            if ready:  # start reading ahead once the answer is built, not while building it
                self._read_ahead(names, group, start, stop)
            return value
        self._register(callback, gathered, encode)
        return False

    def _register(self, callback, gathered: Future, encode) -> None:
        """Answer ``gathered`` through ``callback`` once done, in the delivery thread.

        Raises
        ------
        WaitingLimitError
            The callback's connection has as many requests waiting as it may (the
            request is withdrawn from the source).
        """
        growing = self._source.growing
        try:   # a file's read goes on for the cache; a live view's request is withdrawn
            ticket = self._tickets.register(callback, gathered.cancel if growing else None)
        except BaseException:
            if growing:
                gathered.cancel()
            raise
        deliverer = self.deliverer
        deliverer.start()      # not in the producer's thread at the first answer
        cb = async_callback(callback)

        def answered(f: Future) -> None:
            if f.cancelled():  # withdrawn, the view or the stream closed
                ticket.finish()
            else:
                deliverer.put(cb, f, functools.partial(encode, ticket=ticket), ticket)

        gathered.add_done_callback(answered)

    def withdraw(self, callback) -> int:
        """Withdraw this view's requests registered with ``callback`` (never called back).

        Returns
        -------
        int
            How many were withdrawn.
        """
        return self._tickets.withdraw(callback)

    @property
    def waiting(self) -> int:
        """Callback requests of this view not answered yet."""
        return self._tickets.count

    def _read_ahead(self, names, group: RateGroup, start: int, stop: int) -> None:
        """Tell the source where a client that moves through it goes next.

        Only a request that continues the previous one (or the first) counts, so random
        access costs no reading.
        """
        depth = self._options.prefetch
        if depth <= 0:
            return
        with self._lock:
            last = self._last_range
            self._last_range = (group.fs, start, stop)
            if last is not None and (last[0] != group.fs
                                     or start != last[2] and stop != last[1]):
                return  # a jump (or another grid): not a stream
            if last is not None:
                self._direction = 1 if start >= last[2] else -1
            direction = self._direction
        self._source.read_ahead(names, group, start, stop, direction, depth)

    def forget_position(self) -> None:
        """The channels changed: the position is kept, so that the next request reads
        ahead only if it continues the last one (a viewer or loader that picks channels
        and jumps with every request reads nothing ahead)."""

    def close(self) -> None:
        """Withdraw pending requests and stop delivering callbacks (idempotent)."""
        self._tickets.close()
        self.deliverer.close()
