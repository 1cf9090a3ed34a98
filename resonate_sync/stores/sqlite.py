"""The embedded store: durable promises in one SQLite file.

Safe for many threads and for several processes on one file: the database is
in WAL mode (readers never block the writer), every write transaction starts
with ``BEGIN IMMEDIATE`` under a busy timeout, and writes of many threads share
one transaction (see ``_commit.py``). ``PRAGMA user_version`` records the
schema version so a later release can migrate.

Durability: ``synchronous=NORMAL`` by default, which in WAL mode survives a
crash or kill of the process at any point; a power loss may roll back the last
commits. Pass ``synchronous="FULL"`` to fsync every commit
(sqlite.org/pragma.html#pragma_synchronous).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Any, Callable, List, Mapping, Optional, TypeVar, cast

import sqlite_utils

from .. import _cron
from .. import promise as rules
from ..exceptions import (
    InvalidRequestError,
    LockNotFoundError,
    StoreError,
)
from ..promise import EMPTY, DurablePromise, State, Value
from . import _schedule_table as schedule_table
from . import _promise_table as table
from ._commit import GroupCommit
from ._fork import ForkGate, pause_across_fork
from .base import (
    CompletionShorthands,
    Lock,
    Schedule,
    SchedulePage,
    SearchPage,
    Written,
    validate_value,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

#: The schema version this release writes (``PRAGMA user_version``).
SCHEMA_VERSION = table.SCHEMA_VERSION

_T = TypeVar("_T")

logger = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class SQLiteStore(CompletionShorthands):
    """Durable promises in a SQLite file, through sqlite-utils.

    :param path: the database file; created with its schema when missing.
    :param clock: returns now in epoch milliseconds (injected by tests).
    :param busy_timeout: seconds to wait for another process's write lock.
    :param synchronous: ``"NORMAL"`` (default) or ``"FULL"``.

    Thread-safe. Usable after ``os.fork()``: the child opens its own
    connections and never touches the parent's.
    """

    def __init__(
        self,
        path: "str | os.PathLike[str]" = "resonate.db",
        *,
        clock: Callable[[], int] = _now_ms,
        busy_timeout: float = 60.0,
        synchronous: str = "NORMAL",
    ) -> None:
        if str(synchronous).upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise InvalidRequestError(
                f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}"
            )
        self.path = os.fspath(path)
        self.clock = clock
        self._busy_timeout = busy_timeout
        self._synchronous = str(synchronous).upper()
        self._pid = os.getpid()
        self._closed = False
        self._inherited: List[sqlite3.Connection] = []
        self._reopen_lock = threading.Lock()
        self._gate = ForkGate()
        self._open()
        pause_across_fork(self)

    # -- connections ------------------------------------------------------

    def _open(self) -> None:
        self._local = threading.local()
        self._readers: List[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer = self._connect()
        self._commit = GroupCommit(self._writer_connection, self._busy_timeout)
        # A plain read first: a store opening on an up-to-date file must not
        # wait behind another process's write transaction.
        if table.schema_version(self._writer) != table.SCHEMA_VERSION:
            self._commit.run(table.migrate)

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute(
                f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}"
            )
            self._enable_wal(connection)
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.Error as err:
            raise StoreError(
                f"cannot open sqlite database {self.path!r}: {err}"
            ) from err
        return connection

    def _enable_wal(self, connection: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite
        # answers "locked" at once, without its busy handler, while another
        # process is opening the same file: try again for the busy timeout.
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.002
        while True:
            try:
                sqlite_utils.Database(connection).enable_wal()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _writer_connection(self) -> sqlite3.Connection:
        return self._writer

    def _reader(self) -> sqlite3.Connection:
        self._check_fork()
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._readers_lock:
                self._readers.append(connection)
        return connection

    def _check_fork(self) -> None:
        # A SQLite connection must not be used across fork() (sqlite.org/faq
        # "threadsafe", howtocorrupt.html 2.6). The child keeps the parent's
        # objects alive but unused, so that closing them cannot release
        # locks the parent holds, and opens its own.
        if self._pid == os.getpid():
            return
        with self._reopen_lock:  # the child's first threads may race here
            if self._pid == os.getpid():
                return
            self._inherited.extend([self._writer, *self._readers])
            self._open()
            self._pid = os.getpid()

    def _write(self, write: Callable[[sqlite3.Connection], _T]) -> _T:
        self._check_fork()
        return cast(_T, self._commit.run(write))

    def close(self) -> None:
        """Close this process's connections; the store is unusable afterwards.

        Waits (a few seconds at most) for reads and a write transaction in
        progress on other threads: closing a connection under a running
        statement would crash the interpreter. Later calls raise StoreError.
        """
        if self._pid != os.getpid() or self._closed:
            return
        self._closed = True
        self._gate.close(timeout=5)
        paused = self._commit.pause_for_fork(5)
        try:
            for connection in [self._writer, *self._readers]:
                try:
                    connection.close()
                except sqlite3.Error:
                    logger.debug("closing a connection to %s failed", self.path)
        finally:
            if paused:
                self._commit.resume()
            self._gate.open()

    # -- promises ---------------------------------------------------------

    def create(
        self,
        promise_id: str,
        timeout: int,
        *,
        param: Value = EMPTY,
        tags: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        strict: bool = False,
    ) -> Written:
        """Create a pending promise, or answer a duplicate create (see ``base.py``).

        Blocks until committed. Thread-safe.
        :raises PromiseAlreadyExistsError: when the id is taken (409).
        :raises InvalidRequestError: for a malformed id, timeout, param or tags.
        :raises StoreError: when the database failed.
        """
        new = DurablePromise(
            id=rules.validate_id(promise_id),
            state=State.PENDING,
            timeout=rules.validate_timeout(timeout),
            param=validate_value(param, "param"),
            tags=rules.validate_tags(tags),
            idempotency_key_for_create=idempotency_key,
            created_on=self.clock(),
        )
        return self._write(lambda connection: table.create(connection, new, strict))

    def complete(
        self,
        promise_id: str,
        state: State,
        *,
        value: Value = EMPTY,
        idempotency_key: Optional[str] = None,
        strict: bool = False,
    ) -> Written:
        """Complete a promise, or answer a duplicate completion (see ``base.py``).

        Blocks until committed. Thread-safe.
        :raises PromiseNotFoundError: when there is no such promise (404).
        :raises PromiseAlreadyCompletedError: when it is already completed (403).
        :raises InvalidRequestError: for a state that is not a completion.
        :raises StoreError: when the database failed.
        """
        rules.validate_id(promise_id)
        state = State.parse(state)
        value = validate_value(value, "value")
        request = (promise_id, state, value, idempotency_key, bool(strict))
        return self._write(
            lambda connection: table.complete(connection, request, self.clock())
        )

    def complete_later(
        self,
        promise_id: str,
        state: State,
        callback: Callable[[Optional[Written], Optional[BaseException]], None],
        *,
        value: Value = EMPTY,
        idempotency_key: Optional[str] = None,
    ) -> None:
        """Complete a promise without waiting for the commit.

        ``callback(written, error)`` runs once the completion is committed (or
        failed), on whichever thread committed it; it must be short and must
        not raise. Lets a worker go on to its next invocation while the
        completions of many share one commit. Thread-safe.
        :raises InvalidRequestError: at once, for a malformed request.
        """
        rules.validate_id(promise_id)
        state = State.parse(state)
        value = validate_value(value, "value")
        request = (promise_id, state, value, idempotency_key, False)
        self._check_fork()
        self._commit.submit(
            lambda connection: table.complete(connection, request, self.clock()),
            callback,
        )

    def get(self, promise_id: str) -> DurablePromise:
        """Read a promise, timing it out first when its timeout has passed.

        Does not block on writers, except to store a lazy timeout. Thread-safe.
        :raises PromiseNotFoundError: when there is no such promise.
        :raises StoreError: when the database failed.
        """
        rules.validate_id(promise_id)
        found = self._read(lambda connection: table.select(connection, promise_id))
        if found is None:
            raise rules.not_found(promise_id)
        if rules.settle(found, self.clock()) is not found:
            found = self._write(
                lambda connection: table.settle_one(
                    connection, promise_id, self.clock()
                )
            )
        return found

    def search(
        self,
        pattern: Optional[str] = None,
        *,
        state: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> SearchPage:
        """One page of promises whose id matches ``pattern``, newest first.

        ``*`` is the only wildcard and the pattern is anchored. ``state`` is
        pending, resolved or rejected (canceled and timed out included);
        ``tags`` must all match exactly; ``limit`` is 1 to 100 (0 or None: 100).
        With ``cursor``, the query comes from the cursor alone.
        :raises InvalidRequestError: for a bad pattern, state, limit or cursor.
        """
        query = (
            table.decode_cursor(cursor)
            if cursor
            else table.search_query(pattern, state, tags, limit)
        )
        states = rules.states_for_filter(query["state"])
        self._settle_due()
        rows = self._read(lambda connection: table.search(connection, query, states))
        promises = [promise for _, promise in rows]
        next_cursor = None
        if len(rows) == query["limit"]:
            last_sort_id, last = rows[-1]
            next_cursor = table.encode_cursor(
                {**query, "before": [last_sort_id, last.id]}
            )
        return SearchPage(promises, next_cursor)

    # -- locks ------------------------------------------------------------

    def acquire_lock(
        self, resource_id: str, execution_id: str, process_id: str, ttl: int
    ) -> Lock:
        """Acquire (or re-acquire) the lock on ``resource_id`` for ``ttl`` ms.

        The same execution may acquire again, which moves the lock to
        ``process_id`` and renews it. Blocks until committed. Thread-safe.
        :raises LockHeldError: when another execution holds an unexpired lock.
        :raises InvalidRequestError: for empty ids or a negative ttl.
        """
        for name, value in (
            ("resource_id", resource_id),
            ("execution_id", execution_id),
            ("process_id", process_id),
        ):
            if not isinstance(value, str) or not value:
                raise InvalidRequestError(
                    f"{name} must be a non-empty string, not {value!r}"
                )
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            raise InvalidRequestError(
                f"lock ttl must be whole milliseconds >= 0, not {ttl!r}"
            )
        lock = Lock(resource_id, execution_id, process_id, ttl, self.clock() + ttl)
        return self._write(
            lambda connection: table.acquire(connection, lock, self.clock())
        )

    def release_lock(self, resource_id: str, execution_id: str) -> None:
        """Release the lock ``execution_id`` holds on ``resource_id``.

        :raises LockNotFoundError: when that execution holds no such lock.
        """

        def release(connection: sqlite3.Connection) -> None:
            deleted = connection.execute(
                "DELETE FROM locks WHERE resource_id = ? AND execution_id = ?",
                (resource_id, execution_id),
            ).rowcount
            if not deleted:
                raise LockNotFoundError(
                    f"no lock on {resource_id!r} is held by execution {execution_id!r}",
                    resource_id=resource_id,
                )

        self._write(release)

    def heartbeat(self, process_id: str) -> int:
        """Renew every unexpired lock ``process_id`` holds by its ttl.

        :returns: how many locks were renewed.
        """
        now = self.clock()
        return self._write(
            lambda connection: (
                connection.execute(
                    "UPDATE locks SET expires_at = ? + ttl"
                    " WHERE process_id = ? AND expires_at > ?",
                    (now, process_id, now),
                ).rowcount
            )
        )

    # -- schedules --------------------------------------------------------

    def create_schedule(
        self,
        schedule_id: str,
        cron: str,
        promise_id: str,
        promise_timeout: int,
        *,
        description: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        promise_param: Value = EMPTY,
        promise_tags: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
    ) -> Schedule:
        """Create a schedule, or answer a duplicate create with the stored one.

        The same contract as :meth:`RemoteStore.create_schedule`: ``promise_id``
        is a template over ``{{.id}}`` and ``{{.timestamp}}``, ``promise_timeout``
        relative milliseconds, and without a key the schedule id is the key.
        The first run is the first time ``cron`` names after now (UTC). This
        store only keeps schedules: :class:`~resonate_sync.Resonate` fires them.
        Blocks until committed. Thread-safe.
        :raises ScheduleAlreadyExistsError: when the id is taken under another key.
        :raises InvalidRequestError: for a bad cron expression or field.
        :raises StoreError: when the database failed.
        """
        now = self.clock()
        schedule = Schedule(
            id=_non_empty(schedule_id, "schedule id"),
            cron=_cron.validate(cron),
            promise_id=_non_empty(promise_id, "promise id template"),
            promise_timeout=_relative_ms(promise_timeout),
            description=description,
            tags=rules.validate_tags(tags),
            promise_param=validate_value(promise_param, "promise_param"),
            promise_tags=rules.validate_tags(promise_tags),
            idempotency_key=idempotency_key or schedule_id,
            created_on=now,
            next_run_time=_cron.next_after(cron, now),
        )
        sort_id = table.next_sort_id()
        stored: Schedule = self._write(
            lambda connection: schedule_table.insert(connection, schedule, sort_id)
        )
        return stored

    def get_schedule(self, schedule_id: str) -> Schedule:
        """Read a schedule. Does not block on writers. Thread-safe.

        :raises ScheduleNotFoundError: when there is no such schedule.
        :raises StoreError: when the database failed.
        """
        found: Optional[Schedule] = self._read(
            lambda connection: schedule_table.select(connection, schedule_id)
        )
        if found is None:
            raise schedule_table.not_found(schedule_id)
        return found

    def search_schedules(
        self,
        pattern: Optional[str] = None,
        *,
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> SchedulePage:
        """One page of schedules whose id matches ``pattern``, newest first.

        Matching and paging as in :meth:`search`. Unlike a Resonate server's
        search rows, these rows carry every field. Thread-safe.
        :raises InvalidRequestError: for a bad pattern, limit or cursor.
        """
        query = (
            table.decode_cursor(cursor)
            if cursor
            else table.search_query(pattern, None, tags, limit)
        )
        glob = table.glob(query["pattern"])
        rows = self._read(
            lambda connection: schedule_table.search(connection, query, glob)
        )
        next_cursor = None
        if len(rows) == query["limit"]:
            last_sort_id, last = rows[-1]
            next_cursor = table.encode_cursor(
                {**query, "before": [last_sort_id, last.id]}
            )
        return SchedulePage([schedule for _, schedule in rows], next_cursor)

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule; promises it created stay. Blocks until committed.

        :raises ScheduleNotFoundError: when there is no such schedule.
        :raises StoreError: when the database failed.
        """
        self._write(lambda connection: schedule_table.delete(connection, schedule_id))

    def due_schedules(self, now: int) -> List[Schedule]:
        """Every schedule whose next run is at or before ``now``, earliest first.

        Does not block on writers. Thread-safe.
        """
        found: List[Schedule] = self._read(
            lambda connection: schedule_table.due(connection, now)
        )
        return found

    def fire_schedule(
        self, schedule: Schedule, run_time: int, next_run_time: int
    ) -> Optional[Written]:
        """Fire run ``run_time`` of ``schedule``, unless another process did.

        In one transaction: move the schedule's next run time from
        ``schedule.next_run_time`` (as read) to ``next_run_time``, and create
        the run's pending promise, tagged ``resonate:invocation`` and
        ``resonate:schedule``, keyed by its own id. Processes sharing the file
        therefore fire each run once between them. Blocks until committed.
        :returns: the run's promise, or None when the next run time had moved
            (another process fired it) or the schedule is gone.
        :raises PromiseAlreadyExistsError: when the run's promise id is taken
            under another key; the schedule has moved on all the same.
        :raises StoreError: when the database failed; nothing was written.
        """
        run = (run_time, next_run_time, self.clock())
        fired: Optional[Written] = self._write(
            lambda connection: schedule_table.fire(
                connection, schedule, run, lambda c, new: table.create(c, new, False)
            )
        )
        return fired

    # -- helpers ----------------------------------------------------------

    def _read(self, read: Callable[[sqlite3.Connection], Any]) -> Any:
        try:
            with self._gate.inside():
                if self._closed:
                    raise StoreError(f"sqlite store {self.path!r} is closed")
                return read(self._reader())
        except sqlite3.Error as err:
            raise StoreError(f"sqlite read of {self.path!r} failed: {err}") from err

    def _settle_due(self) -> None:
        now = self.clock()
        due = self._read(
            lambda connection: connection.execute(
                "SELECT 1 FROM promises WHERE state = 'PENDING' AND timeout <= ? LIMIT 1",
                (now,),
            ).fetchone()
        )
        if due:
            self._write(lambda connection: table.settle_all(connection, now))

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


# -- writes (run inside a transaction by GroupCommit) ---------------------


def _non_empty(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"{what} must be a non-empty string, not {value!r}")
    return value


def _relative_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError(
            f"promise timeout must be whole milliseconds >= 0, not {value!r}"
        )
    return value
