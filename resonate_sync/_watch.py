"""Waiting for promises that complete somewhere else, without spinning.

In one process a completion wakes its waiters directly (:meth:`Watcher.notify`).
A promise completed by another process or machine is seen by polling: one
thread reads each watched promise, first after 50 ms, then backing off by half
again each time to at most ``max_interval`` (1 s by default), so a waiter
learns of a completion within about a second and an idle wait costs one read
a second.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .exceptions import PromiseNotFoundError, ResonateError
from .promise import DurablePromise

__all__ = ["Watcher"]

logger = logging.getLogger(__name__)

#: Called with each pending promise read; returns True to stop watching it.
OnPending = Callable[[DurablePromise], bool]
#: Called once with the completed promise, or the error that ends the wait.
OnComplete = Callable[[Union[DurablePromise, ResonateError]], None]

_FIRST_INTERVAL = 0.05
_GROWTH = 1.5


class _Watch:
    __slots__ = ("on_complete", "on_pending", "interval")

    def __init__(
        self, on_complete: OnComplete, on_pending: Optional[OnPending]
    ) -> None:
        self.on_complete = on_complete
        self.on_pending = on_pending
        self.interval = _FIRST_INTERVAL


class Watcher:
    """Polls the store for watched promises on one daemon thread. Thread-safe.

    :param store: where to read promises.
    :param stopping: set on shutdown; the thread then ends.
    :param max_interval: the longest time between two reads of one promise.
    """

    def __init__(
        self, store: Any, stopping: threading.Event, max_interval: float = 1.0
    ) -> None:
        self._store = store
        self._stopping = stopping
        self._max_interval = max_interval
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._condition = threading.Condition()
        self._watches: Dict[str, List[_Watch]] = {}
        self._due: List[Tuple[float, int, str]] = []
        self._order = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def watch(
        self,
        promise_id: str,
        on_complete: OnComplete,
        on_pending: Optional[OnPending] = None,
    ) -> None:
        """Call ``on_complete(promise)`` once ``promise_id`` is completed.

        If the promise disappears, ``on_complete`` gets the
        :class:`PromiseNotFoundError` instead.
        ``on_pending(promise)`` runs on each read that finds it pending; when it
        returns True, the watch ends without ``on_complete``. Never blocks.
        """
        if self._pid != os.getpid():
            self._reset()
        with self._condition:
            watches = self._watches.setdefault(promise_id, [])
            if not watches:  # else it is read already: one read serves them all
                self._schedule(promise_id, _FIRST_INTERVAL)
            watches.append(_Watch(on_complete, on_pending))
            self._start()
            self._condition.notify()

    def notify(self, promise: DurablePromise) -> None:
        """A promise completed in this process: wake its watchers at once."""
        if promise.pending:
            return
        with self._condition:
            watches = self._watches.pop(promise.id, [])
        for watch in watches:
            _call(watch.on_complete, promise, promise.id)

    def fail_all(self, error_for: Callable[[str], ResonateError]) -> None:
        """End every watch with ``error_for(promise_id)``, as on a shutdown."""
        with self._condition:
            ended, self._watches = self._watches, {}
        for promise_id, watches in ended.items():
            for watch in watches:
                _call(watch.on_complete, error_for(promise_id), promise_id)

    def _schedule(self, promise_id: str, delay: float) -> None:
        entry = (time.monotonic() + delay, next(self._order), promise_id)
        heapq.heappush(self._due, entry)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="resonate-watcher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            promise_id = self._next_due()
            if promise_id is not None:
                self._poll(promise_id)

    def _next_due(self) -> Optional[str]:
        with self._condition:
            while not self._due or self._due[0][0] > time.monotonic():
                if self._stopping.is_set():
                    return None
                timeout = self._due[0][0] - time.monotonic() if self._due else 1.0
                self._condition.wait(max(0.0, min(timeout, 1.0)))
            _, _, promise_id = heapq.heappop(self._due)
            return promise_id if promise_id in self._watches else None

    def _poll(self, promise_id: str) -> None:
        try:
            promise = self._store.get(promise_id)
        except PromiseNotFoundError as err:
            logger.warning("watched promise %r no longer exists", promise_id)
            return self._fail(promise_id, err)
        except ResonateError as err:
            logger.warning("reading watched promise %r failed: %s", promise_id, err)
            return self._again(promise_id)
        if not promise.pending:
            return self.notify(promise)
        self._pending(promise)

    def _pending(self, promise: DurablePromise) -> None:
        with self._condition:
            watches = list(self._watches.get(promise.id, []))
        ended = [
            watch
            for watch in watches
            if watch.on_pending and _ask(watch.on_pending, promise)
        ]
        with self._condition:
            remaining = [w for w in self._watches.get(promise.id, []) if w not in ended]
            if remaining:
                self._watches[promise.id] = remaining
            else:
                self._watches.pop(promise.id, None)
        if remaining:
            self._again(promise.id)

    def _again(self, promise_id: str) -> None:
        with self._condition:
            watches = self._watches.get(promise_id)
            if not watches:
                return
            interval = min(watches[0].interval * _GROWTH, self._max_interval)
            for watch in watches:
                watch.interval = interval
            self._schedule(promise_id, interval)

    def _fail(self, promise_id: str, error: ResonateError) -> None:
        with self._condition:
            watches = self._watches.pop(promise_id, [])
        for watch in watches:
            _call(watch.on_complete, error, promise_id)


def _call(
    function: OnComplete, outcome: Union[DurablePromise, ResonateError], promise_id: str
) -> None:
    try:
        function(outcome)
    except Exception:
        logger.exception("a completion callback for %r failed", promise_id)


def _ask(function: OnPending, promise: DurablePromise) -> bool:
    try:
        return bool(function(promise))
    except Exception:
        logger.exception("a pending callback for %r failed", promise.id)
        return False
