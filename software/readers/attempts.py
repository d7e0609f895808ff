"""How one reader task reaches the readers, lands its samples and survives their deaths.

The part of :class:`~software.readers.pool.ReaderPool` after a task leaves the queue
(a mixin: it works on the pool's state)::

    _attempt --> landing region reserved --> ReaderProcesses.submit --> done:
        samples: consume(view of the landing area) --> result
        BrokenProcessPool --> _rebuild (once per breakage: new executor, new landing area,
            _judge in a thread: which reader died on its own, running which task; charge
            that task's session) --> _after_crash in a retry thread: resubmit; count the
            attempt only if this task crashed its reader, fail after ``max_attempts``

Runs in the executor's management thread (``done``), retry threads and the thread that
handed the task over.
"""
from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

from ..errors import ReaderError, ServiceClosedError
from .landing import LandingArea
from .leftovers import sweep_leftovers
from .worker import LANDED, _inspect_task

__all__ = ["Attempts"]

logger = logging.getLogger("software.readers.pool")   # one logger for the pool's story


class Attempts:
    """Mixin of :class:`~software.readers.pool.ReaderPool`: attempts, crashes, rebuilds."""

    def _landing_slot(self, fn, args: tuple) -> tuple:
        """``(area, offset, shape)`` for a read that fits the landing area, else Nones."""
        if fn not in LANDED:
            return None, None, None
        area = self._landing
        shape = (len(args[2]), args[4] - args[3])
        nbytes = LANDED[fn][1].itemsize * shape[0] * shape[1]
        offset = area.reserve(nbytes) if area is not None else None
        with self._lock:
            if offset is None:
                self.reads_piped += 1
                return None, None, None
            self.reads_landed += 1
        return area, offset, shape

    def _attempt(self, result: Future, fn, args: tuple, attempt: int, consume=None) -> None:
        """Hand one attempt of a task to the readers; ``attempt`` counts its crashes + 1."""
        refused = self.quarantine.refused(args[0], reopening=fn is _inspect_task)
        if refused is not None:   # quarantined while it waited, or by its own crashes
            result.set_exception(refused)
            return
        area, offset, shape = self._landing_slot(fn, args)
        task, task_args = (fn, args) if area is None else \
            (LANDED[fn][0], args + (area.path, offset))
        try:
            try:
                inner, generation, task_id = self._submit_raw(task, *task_args,
                                                              label=args[0])
            except BrokenProcessPool:
                # broke between our last rebuild and this submit
                self._rebuild(self._procs.generation)
                inner, generation, task_id = self._submit_raw(task, *task_args,
                                                              label=args[0])
        except (ServiceClosedError, BrokenProcessPool, RuntimeError) as exc:
            if area is not None:
                area.release(offset)
            if isinstance(exc, ServiceClosedError):
                result.set_exception(exc)
            else:  # in a retry thread nobody else would see it: the caller must hear of it
                result.set_exception(ReaderError(
                    f"could not hand {fn.__name__} to the reader processes ({exc}); try "
                    f"again."))
            return

        def done(fut: Future) -> None:  # runs in the executor's management thread
            try:
                finish(fut)
            finally:
                if area is not None:
                    area.release(offset)

        def finish(fut: Future) -> None:
            if fut.cancelled():  # close() cancels what the readers have not started
                result.set_exception(ServiceClosedError(
                    "the reader pool was closed before this read ran; the server is "
                    "shutting down"))
                return
            exc = fut.exception()
            if exc is None:
                try:
                    value = fut.result()
                    landed = value is None  # else the reader could not map the area
                    if landed:
                        value = area.view(offset, shape, LANDED[fn][1])
                    if consume is not None:
                        value = consume(value)
                    elif landed:  # the region is reused once we return: the caller's copy
                        value = value.copy()
                except BaseException as exc2:  # noqa: BLE001 - the caller hears of it
                    result.set_exception(exc2)
                    return
                result.set_result(value)
                return
            if isinstance(exc, BrokenProcessPool) and self._closed:
                result.set_exception(ServiceClosedError(
                    "the reader pool was closed during this read; the server is shutting "
                    "down"))
                return
            if not isinstance(exc, BrokenProcessPool):
                result.set_exception(exc)
                return
            verdict = self._rebuild(generation)
            # which reader died of what is known once the executor has ended them all:
            # wait for that outside the executor's thread (it is the one ending them)
            threading.Thread(target=self._after_crash,
                             args=(result, fn, args, attempt, consume, verdict, task_id),
                             name="reader-retry", daemon=True).start()

        inner.add_done_callback(done)

    def _after_crash(self, result: Future, fn, args: tuple, attempt: int, consume,
                     verdict: Future, task_id: int) -> None:
        """Runs in a retry thread: resubmit a task its broken executor failed; count the
        crash only when its own reader died running it."""
        caused = task_id in verdict.result()
        if caused and attempt >= self.max_attempts:
            result.set_exception(ReaderError(
                f"a reader process crashed {attempt} times running {fn.__name__}"
                f"{_describe(args)}; the session is probably damaged (check it with "
                f"MefReader). The server keeps running; reads of other sessions are not "
                f"affected."))
            return
        with self._lock:
            self.tasks_retried += 1
        logger.warning("retrying %s%s after a reader process died (%s)", fn.__name__,
                       _describe(args), f"attempt {attempt + 1}: it crashed its reader"
                       if caused else "not counted: another task's reader died")
        self._attempt(result, fn, args, attempt + 1 if caused else attempt, consume)

    def _rebuild(self, generation: int) -> Future:
        """Renew the broken executor ``generation`` (once); returns the future of the
        crashed tasks of that generation (``{task id: session}``)."""
        with self._lock:
            verdict = self._verdicts.get(generation)
            if verdict is not None or self._closed:
                return verdict or _nothing()
            old = self._procs.renew(generation)
            if old is None:
                return _nothing()   # renewed already under another verdict
            verdict = self._verdicts[generation] = Future()
            for stale in [g for g in self._verdicts if g < generation - 16]:
                del self._verdicts[stale]
            # readers of the broken pool may still write until they are terminated: the
            # new pool lands its reads in a new area
            old_landing = self._landing
            self._landing = LandingArea.create(self._landing_bytes)
            self.restarts += 1
        logger.error("a reader process died; reader pool rebuilt (restart #%d)", self.restarts)
        if old_landing is not None:
            old_landing.retire()
        old.shutdown(wait=False, cancel_futures=True)
        threading.Thread(target=self._judge, args=(generation, verdict),
                         name=f"reader-crash-{generation}", daemon=True).start()
        return verdict

    def _judge(self, generation: int, verdict: Future) -> None:
        """Runs in its own thread once per breakage: find the task that crashed a reader,
        charge its session, sweep what the dead readers left."""
        crashed: dict = {}
        try:
            crashed = self._procs.crashed(generation)
            for session in crashed.values():
                if session is not None:
                    self.quarantine.charge(str(session))
            with self._lock:
                self.crashes_pinned += len(crashed)
            sweep_leftovers(shared_memory=False)   # shadows of readers killed opening
        except Exception:  # noqa: BLE001 - a background step: retries must still go on
            logger.exception("could not tell which task crashed reader pool generation %d",
                             generation)
        finally:
            verdict.set_result(crashed)


@functools.lru_cache(maxsize=1)
def _nothing() -> Future:
    """A done future of "no task crashed" (a breakage judged elsewhere, or closed)."""
    done: Future = Future()
    done.set_result({})
    return done


def _describe(args: tuple) -> str:
    """Arguments of a task for a log line, without the password."""
    shown = [repr(a) for a in args]
    if len(shown) > 1:
        shown[1] = "<password>"
    return "(" + ", ".join(shown) + ")"
