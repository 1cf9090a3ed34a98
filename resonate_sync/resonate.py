"""The public face: :class:`Resonate` registers functions and invokes them durably.

Layers, imports pointing down only::

    resonate.py  (Resonate: registry, executor, recovery)  promises.py
         |                    \\
    _runtime.py  context.py  handle.py   (engine; Context; InvocationHandle)
         |
    stores/  (base.py contract, sqlite.py, remote.py)
         |
    promise.py  encoding.py  retry.py  options.py  exceptions.py   (pure)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Optional, TypeVar, Union, overload

from ._runtime import Runtime
from .exceptions import InvalidRequestError
from .handle import InvocationHandle
from .options import Options
from .promises import Promises
from .schedules import FiringLoop, Schedules, schedule_invocation
from .stores.base import PromiseStore, Schedule
from .stores.sqlite import SQLiteStore

__all__ = ["Resonate"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: The database file ``Resonate()`` uses in the working directory.
DEFAULT_DATABASE = "resonate.db"


class Resonate:
    """Registers functions and runs them as durable invocations.

    With no ``store`` and no ``url``, ``RESONATE_URL`` in the environment
    selects a Resonate server; otherwise promises live in ``resonate.db`` in
    the working directory. Thread-safe; usable as a context manager, which
    shuts down (draining the pool) on exit.

    :param store: where promises live (a :class:`SQLiteStore` or
        :class:`RemoteStore`).
    :param url: a Resonate server's address, short for ``RemoteStore(url)``.
    :param max_workers: threads that run invocations.
    :param recovery_interval: seconds between searches for pending
        invocations once :meth:`start` is called.
    :param schedule_interval: seconds between passes of the loop that fires
        schedules kept in SQLite, once :meth:`start` is called.
    :param lease_ttl: seconds this process keeps its invocations without a
        heartbeat; after that, other processes may take them over.
    :param clock: returns now in seconds since the epoch (tests inject it).
    :param sleep: waits between retries and durable sleeps (tests inject it).
    """

    def __init__(
        self,
        store: Optional[PromiseStore] = None,
        *,
        url: Optional[str] = None,
        max_workers: Optional[int] = None,
        recovery_interval: float = 5.0,
        schedule_interval: float = 1.0,
        lease_ttl: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Optional[Callable[[float], Any]] = None,
    ) -> None:
        if store is not None and url is not None:
            raise InvalidRequestError("give a store or a url, not both")
        self._owns_store = store is None
        self.store: PromiseStore = store if store is not None else _default_store(url)
        self._runtime = Runtime(
            self.store,
            max_workers=max_workers,
            clock=clock,
            sleep=sleep,
            lease_ttl=lease_ttl,
        )
        self.promises = Promises(self.store, clock, on_complete=self._runtime.notify)
        self._recovery_interval = recovery_interval
        self._recovery: Optional[threading.Thread] = None
        self._started_in: Optional[int] = None  # the pid that called start()
        self._firing = FiringLoop(
            self.store, lambda: round(clock() * 1000), self.recover, schedule_interval
        )
        self.schedules = Schedules(self.store, self._firing)

    # -- registering ------------------------------------------------------

    @overload
    def register(
        self, function: F, *, name: Optional[str] = None, **defaults: Any
    ) -> F: ...

    @overload
    def register(
        self, function: None = None, *, name: Optional[str] = None, **defaults: Any
    ) -> Callable[[F], F]: ...

    def register(
        self,
        function: Optional[F] = None,
        *,
        name: Optional[str] = None,
        **defaults: Any,
    ) -> Any:
        """Register a function under ``name`` (default: its ``__name__``).

        Use as ``@resonate.register``, ``@resonate.register(name=..., timeout=...)``
        or ``resonate.register(function, ...)``. ``defaults`` are
        :class:`Options` fields the function runs with unless a call overrides
        them. The function takes a :class:`Context` first.

        :returns: the function itself, unchanged.
        :raises InvalidRequestError: for a taken name or an unknown option.
        """
        try:
            options = Options(**defaults)
        except TypeError as err:
            raise InvalidRequestError(
                f"unknown option in {sorted(defaults)}: {err}"
            ) from err

        def add(function: F) -> F:
            self._runtime.registry.add(function, name, options)
            return function

        return add if function is None else add(function)

    # -- invoking ---------------------------------------------------------

    def invoke_local(
        self,
        function: Union[str, Callable[..., Any]],
        invocation_id: str,
        *args: Any,
        options: Optional[Options] = None,
        **kwargs: Any,
    ) -> InvocationHandle[Any]:
        """Invoke a registered function durably under ``invocation_id``.

        Blocks until the promise is committed; the function then runs on the
        pool. The same id again returns the running invocation's handle, or a
        handle done with the stored outcome once it has completed.

        :param function: a registered name or function.
        :param options: overrides the registered defaults, field by field.
        :returns: the invocation's handle.
        :raises NotRegisteredError: when the function is not registered.
        :raises EncodingError: when an argument is not JSON; nothing is written.
        :raises StoreError: when the store failed.
        """
        self._start_if_forked()
        call = self._runtime.top_level_call(
            function, invocation_id, args, kwargs, options
        )
        return self._runtime.invoke(call)

    def run(
        self,
        function: Union[str, Callable[..., Any]],
        invocation_id: str,
        *args: Any,
        options: Optional[Options] = None,
        **kwargs: Any,
    ) -> Any:
        """Invoke durably and wait: ``invoke_local(...).result()``.

        Blocks until the invocation ends; raises what it raised. Since the
        caller waits anyway, the function runs in the calling thread rather
        than on the pool, which spares two thread hand-offs; everything else
        (the promise, retries, the stored outcome) is as with ``invoke_local``.
        """
        self._start_if_forked()
        call = self._runtime.top_level_call(
            function, invocation_id, args, kwargs, options
        )
        return self._runtime.invoke(call, inline=True).result()

    def schedule(
        self,
        name: str,
        cron: str,
        function: Union[str, Callable[..., Any]],
        *args: Any,
        options: Optional[Options] = None,
        **kwargs: Any,
    ) -> Schedule:
        """Invoke a registered function on a cron schedule, under the schedule ``name``.

        ``cron`` has 5 fields, or 6 with leading seconds, in UTC. Each run is
        an invocation ``"<name>.<run time in epoch ms>"`` that processes which
        registered the function and called :meth:`start` run. Blocks until
        the schedule is stored; calling it again with the same arguments
        returns the stored schedule. See :mod:`resonate_sync.schedules`.

        :param options: ``timeout``, ``tags`` and ``retry_policy`` of each run.
        :returns: the schedule as stored.
        :raises NotRegisteredError: when the function is not registered.
        :raises ScheduleAlreadyExistsError: when ``name`` holds another schedule.
        :raises InvalidRequestError: for a bad cron expression or option.
        """
        registered = self._runtime.registry.lookup(function)
        return schedule_invocation(
            self.schedules, name, cron, registered, (args, kwargs), options
        )

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Recover pending invocations now, and again every ``recovery_interval``.

        Starts a daemon thread; returns at once. Recovery runs each pending
        top-level invocation whose function is registered here and that is
        not already running in this process. On SQLite, a second thread fires
        due schedules every ``schedule_interval`` seconds. The threads do not
        survive ``os.fork()``: a process forked from this one (a ``gunicorn
        --preload`` worker) starts its own when it first invokes.
        """
        self._started_in = os.getpid()
        self._firing.start()
        if self._recovery is not None and self._recovery.is_alive():
            return
        self._recovery = threading.Thread(
            target=self._recover_forever, name="resonate-recovery", daemon=True
        )
        self._recovery.start()

    def _start_if_forked(self) -> None:
        # Not from an at-fork hook: threads started inside os.fork() can
        # deadlock the child on an import lock a parent thread held.
        if self._started_in is not None and self._started_in != os.getpid():
            self.start()

    def recover(self) -> int:
        """Start every pending invocation found in the store, once.

        :returns: how many invocations were started.
        """
        started = self._runtime.recover()
        if started:
            logger.info("recovered %d pending invocations", started)
        return started

    def _recover_forever(self) -> None:
        while not self._runtime.stopping.is_set():
            try:
                self.recover()
            except Exception:
                logger.exception(
                    "recovery failed; trying again in %.1fs", self._recovery_interval
                )
            self._runtime.stopping.wait(self._recovery_interval)

    def shutdown(self, wait: bool = True) -> None:
        """Stop running invocations and release the store.

        ``wait=True`` blocks until every submitted invocation has ended.
        ``wait=False`` returns at once: invocations not yet started fail their
        handles with ``ShutdownError`` and stay pending in the store, to be
        recovered; running ones finish on their threads.
        """
        self._firing.stop(wait)
        self._runtime.shutdown(wait)
        if self._recovery is not None and wait:
            self._recovery.join()
        if self._owns_store and wait:
            self.store.close()

    def __enter__(self) -> "Resonate":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"<Resonate store={self.store!r}>"


def _default_store(url: Optional[str]) -> PromiseStore:
    url = url or os.environ.get("RESONATE_URL") or None
    if url is None:
        return SQLiteStore(DEFAULT_DATABASE)
    from .stores.remote import RemoteStore  # requests is imported only when used

    return RemoteStore(url)
