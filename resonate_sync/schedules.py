"""``resonate.schedules``: invocations of a registered function on a cron schedule.

A schedule stores an invocation (function name, arguments, retry policy) and
a cron expression: 5 fields, or 6 with leading seconds, in UTC. Each run
creates a pending promise ``"<schedule id>.<run time in epoch ms>"`` tagged
``resonate:invocation``, which any process that registered the function and
called :meth:`Resonate.start` runs, like any invocation it recovers.

Who creates the run's promise depends on the store:

- On a Resonate server, the server fires its own schedules; the runtime only
  creates and reads them.
- On SQLite, :class:`FiringLoop`, started by :meth:`Resonate.start`, fires
  them. Processes sharing one file fire each run once between them: a run
  is fired only by moving the schedule's next run time by compare-and-set,
  in the transaction that creates the promise, and the promise id of a run
  is fixed, so even a second create would be a harmless duplicate.

Missed runs: when no process fired a schedule for a while (nothing was
running, or the machine slept), only the latest missed run is fired, once;
the earlier ones are skipped. A run fires at most ``interval`` seconds late.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

from . import _cron, encoding
from ._registry import Registered
from ._tags import INVOCATION_TAG
from .exceptions import InvalidRequestError, ResonateError, ScheduleAlreadyExistsError
from .options import DEFAULT_TIMEOUT, Options
from .promise import Value
from .retry import RetryPolicy
from .stores.base import Schedule, ScheduleStore

__all__ = [
    "FiringLoop",
    "Schedules",
    "invocation_param",
    "promise_id_template",
    "schedule_invocation",
]

logger = logging.getLogger(__name__)

#: The fields a schedule's invocation is made of; a create that finds another
#: schedule under the same id with different ones is refused.
_COMPARED = ("cron", "promise_id", "promise_timeout", "promise_param", "promise_tags")


def promise_id_template(schedule_id: str) -> str:
    """The promise id template of a schedule: ``"<id>.{{.timestamp}}"``."""
    return schedule_id + ".{{.timestamp}}"


def invocation_param(
    function: str,
    args: Sequence[Any] = (),
    kwargs: Optional[Mapping[str, Any]] = None,
    retry_policy: Optional[RetryPolicy] = None,
) -> Value:
    """The param of an invocation's promise: ``{func, args, kwargs, version,
    retryPolicy}`` as JSON, the shape the runtime writes and recovery reads.

    Without a retry policy, a recovered run uses the function's registered one.
    :raises EncodingError: when an argument is not JSON.
    """
    policy = None if retry_policy is None else retry_policy.to_json()
    return encoding.encode_invocation(function, args, kwargs, policy)


class Schedules:
    """Create, read, search and delete schedules. Thread-safe.

    Every call blocks until the store has answered.

    :param store: a store that keeps schedules (both stores do).
    :param firing: fires due schedules of a SQLite store; None for a server.
    """

    def __init__(self, store: Any, firing: Optional["FiringLoop"] = None) -> None:
        self._store: ScheduleStore = store
        self._firing = firing

    def create(
        self,
        schedule_id: str,
        cron: str,
        function: str,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tags: Optional[Mapping[str, str]] = None,
        retry_policy: Optional[RetryPolicy] = None,
        description: Optional[str] = None,
    ) -> Schedule:
        """Schedule invocations of the function registered as ``function``.

        The function need not be registered in this process, only in those
        that run it. Creating the same schedule again returns the stored one,
        so a program may create its schedules each time it starts.

        :param timeout: seconds each run's invocation may take.
        :param tags: tags of each run's promise.
        :param retry_policy: None leaves it to the function's registration.
        :returns: the schedule as stored.
        :raises ScheduleAlreadyExistsError: when ``schedule_id`` holds a
            schedule of another cron expression or invocation; delete it to
            change it.
        :raises InvalidRequestError: for a bad cron expression, timeout or tag.
        :raises EncodingError: when an argument is not JSON.
        """
        checked = Options(timeout=timeout, tags=tags)
        wanted: Dict[str, Any] = {
            "cron": _cron.validate(cron),
            "promise_id": promise_id_template(schedule_id),
            "promise_timeout": int(timeout * 1000),
            "promise_param": invocation_param(function, args, kwargs, retry_policy),
            "promise_tags": {**(checked.tags or {}), INVOCATION_TAG: "true"},
        }
        stored = self._store.create_schedule(
            schedule_id, description=description, **wanted
        )
        _check_same(stored, wanted)
        return stored

    def get(self, schedule_id: str) -> Schedule:
        """Read a schedule.

        :raises ScheduleNotFoundError: when there is no such schedule.
        """
        return self._store.get_schedule(schedule_id)

    def search(
        self,
        pattern: str = "*",
        *,
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
    ) -> Iterator[Schedule]:
        """Every schedule whose id matches ``pattern``, newest first, paged lazily.

        ``*`` is the only wildcard and the pattern is anchored; ``limit`` is
        the page size (1 to 100). A Resonate server's rows leave
        ``promise_id``, ``promise_timeout`` and ``promise_param`` empty;
        :meth:`get` reads them.
        """
        page = self._store.search_schedules(pattern, tags=tags, limit=limit)
        while True:
            yield from page.schedules
            if page.cursor is None:
                return
            page = self._store.search_schedules(cursor=page.cursor)

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule; the promises it created stay.

        :raises ScheduleNotFoundError: when there is no such schedule.
        """
        self._store.delete_schedule(schedule_id)

    def fire_due(self) -> int:
        """Fire every due schedule of a SQLite store now, once; see :class:`FiringLoop`.

        A Resonate server fires its own schedules: there this returns 0.
        :returns: how many runs were fired.
        """
        return 0 if self._firing is None else self._firing.fire_due()


def schedule_invocation(
    schedules: Schedules,
    schedule_id: str,
    cron: str,
    registered: Registered,
    invocation: "tuple[Sequence[Any], Mapping[str, Any]]",
    options: Optional[Options],
) -> Schedule:
    """What :meth:`Resonate.schedule` does, once it has found the registration.

    :raises InvalidRequestError: for an option a schedule cannot take.
    """
    if options is not None:
        for name in ("idempotency_key", "non_retryable", "durable"):
            if getattr(options, name) is not None:
                raise InvalidRequestError(
                    f"a schedule cannot take the option {name}: each run has its own "
                    f"promise; set it with register() instead"
                )
    resolved = registered.defaults.merged(options)
    args, kwargs = invocation
    return schedules.create(
        schedule_id,
        cron,
        registered.name,
        args,
        kwargs,
        timeout=resolved.timeout,  # type: ignore[arg-type]
        tags=resolved.tags,
        retry_policy=resolved.retry_policy,
    )


def _check_same(stored: Schedule, wanted: Dict[str, Any]) -> None:
    for name in _COMPARED:
        have, want = getattr(stored, name), wanted[name]
        if isinstance(want, Value):
            have, want = have.to_json(), want.to_json()
        if have != want:
            raise ScheduleAlreadyExistsError(
                f"schedule {stored.id!r} already exists with {name} {have!r}, not "
                f"{want!r}; delete it to change it",
                schedule_id=stored.id,
            )


class FiringLoop:
    """Fires the due schedules of a SQLite store from a daemon thread.

    Every ``interval`` seconds it reads the schedules whose next run time has
    come (by ``clock``) and fires each: the latest run at or before now, with
    the next run moved past now, by compare-and-set (see the module
    docstring). After a pass that fired, it calls ``wake`` (the runtime's
    recovery), so the runs start at once rather than at the next recovery.

    :param store: a :class:`~resonate_sync.stores.sqlite.SQLiteStore`; any
        store without ``fire_schedule`` (a Resonate server fires its own)
        makes :meth:`start` and :meth:`fire_due` do nothing.
    :param clock: returns now in epoch milliseconds (tests inject it).
    :param wake: called after a pass fired at least one run.
    :param interval: seconds between passes.

    Thread-safe.
    """

    def __init__(
        self,
        store: Any,
        clock: Callable[[], int],
        wake: Callable[[], Any],
        interval: float = 1.0,
    ) -> None:
        self._store: Any = store if hasattr(store, "fire_schedule") else None
        self._clock = clock
        self._wake = wake
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread, unless it runs or the store fires its own.

        Returns at once.
        """
        with self._lock:
            if self._store is None or self._stopping.is_set():
                return
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._fire_forever, name="resonate-schedules", daemon=True
            )
            self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop firing; with ``wait``, block until the thread has ended."""
        self._stopping.set()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def fire_due(self) -> int:
        """Fire every due schedule once. Blocks while it writes.

        :returns: how many runs were fired.
        :raises StoreError: when the due schedules could not be read.
        """
        if self._store is None:
            return 0
        now = self._clock()
        due = self._store.due_schedules(now)
        fired = sum(self._fire(schedule, now) for schedule in due)
        if fired:
            self._wake()
        return fired

    def _fire(self, schedule: Schedule, now: int) -> int:
        try:
            latest = _cron.latest_at_or_before(schedule.cron, now)
            run_time = max(latest, schedule.next_run_time or latest)
            written = self._store.fire_schedule(
                schedule, run_time, _cron.next_after(schedule.cron, now)
            )
        except ResonateError as err:
            logger.warning("schedule %r did not fire at %d: %s", schedule.id, now, err)
            return 0
        if written is None:
            return 0  # another process fired it first
        if run_time != schedule.next_run_time:
            logger.info(
                "schedule %r fired its latest missed run %d, skipping from %s",
                schedule.id,
                run_time,
                schedule.next_run_time,
            )
        return 1

    def _fire_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                self.fire_due()
            except Exception:
                logger.exception(
                    "firing schedules failed; trying again in %.1fs", self._interval
                )
            self._stopping.wait(self._interval)
