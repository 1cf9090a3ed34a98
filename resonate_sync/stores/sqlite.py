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

import base64
import binascii
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import sqlite_utils

from .. import _cron
from .. import promise as rules
from ..exceptions import (
    InvalidRequestError,
    LockHeldError,
    LockNotFoundError,
    StoreError,
)
from ..promise import EMPTY, DurablePromise, State, Value
from . import _schedule_table as schedule_table
from ._commit import GroupCommit
from .base import Lock, Schedule, SchedulePage, SearchPage, Written, validate_value

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

#: 1: promises and locks; 2: schedules.
SCHEMA_VERSION = 2

_COLUMNS = (
    "id, state, timeout, param_headers, param_data, value_headers, value_data,"
    " tags, idempotency_key_for_create, idempotency_key_for_complete,"
    " created_on, completed_on"
)
_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS promises (
    id TEXT PRIMARY KEY NOT NULL,
    sort_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    timeout INTEGER NOT NULL,
    param_headers TEXT,
    param_data TEXT,
    value_headers TEXT,
    value_data TEXT,
    tags TEXT,
    idempotency_key_for_create TEXT,
    idempotency_key_for_complete TEXT,
    created_on INTEGER NOT NULL,
    completed_on INTEGER
) WITHOUT ROWID
"""
_CREATE_LOCKS = """
CREATE TABLE IF NOT EXISTS locks (
    resource_id TEXT PRIMARY KEY NOT NULL,
    execution_id TEXT NOT NULL,
    process_id TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID
"""
_SELECT = f"SELECT sort_id, {_COLUMNS} FROM promises"
_INSERT = (
    f"INSERT INTO promises (sort_id, {_COLUMNS})"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_OR_IGNORE = _INSERT.replace("INSERT", "INSERT OR IGNORE", 1)
_COMPLETE_PENDING = (
    "UPDATE promises SET state = ?, value_headers = ?, value_data = ?,"
    " idempotency_key_for_complete = ?, completed_on = ?"
    " WHERE id = ? AND state = 'PENDING' AND timeout > ?"
    f" RETURNING sort_id, {_COLUMNS}"
)
_UPDATE = (
    "UPDATE promises SET state = ?, value_headers = ?, value_data = ?,"
    " idempotency_key_for_complete = ?, completed_on = ? WHERE id = ?"
)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _SortIds:
    """Keys that order promises by creation: wall-clock microseconds, made
    strictly increasing within a process. Two processes may tie in one
    microsecond; the id breaks the tie, so paging never skips a promise."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1)
            return self._last


_next_sort_id = _SortIds()


#: Seconds a fork waits for this store's reads and writes in progress to end.
_FORK_WAIT = 1.0


class _ForkGate:
    """Lets a fork wait until no thread of the store is inside a read.

    SQLite's own mutexes do not survive ``fork()``: a child forked while a
    parent thread was inside SQLite (opening a connection, say) can hang on
    its first call there. Thread-safe.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._inside = 0
        self._forking = False

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Hold off a fork while the block runs; wait while one is under way."""
        with self._condition:
            self._condition.wait_for(lambda: not self._forking)
            self._inside += 1
        try:
            yield
        finally:
            with self._condition:
                self._inside -= 1
                self._condition.notify_all()

    def close(self, timeout: float) -> None:
        """Start no read, and wait up to ``timeout`` seconds for those running."""
        with self._condition:
            self._forking = True
            self._condition.wait_for(lambda: self._inside == 0, timeout)

    def open(self) -> None:
        """Let reads start again (in the parent, after the fork)."""
        with self._condition:
            self._forking = False
            self._condition.notify_all()


def _pause_across_fork(store: "SQLiteStore") -> None:
    # A fork waits for the reads and the write transaction in progress (see
    # GroupCommit.pause_for_fork); weak, so the hook does not keep the store
    # alive.
    reference = weakref.ref(store)
    paused: List[Tuple["SQLiteStore", GroupCommit, bool]] = []

    def before() -> None:
        alive = reference()
        if alive is not None:
            alive._gate.close(_FORK_WAIT)
            commit = alive._commit
            paused.append((alive, commit, commit.pause_for_fork(_FORK_WAIT)))

    def after_in_parent() -> None:
        while paused:
            alive, commit, held = paused.pop()
            if held:
                commit.resume()
            alive._gate.open()

    def after_in_child() -> None:
        while paused:
            alive, commit, held = paused.pop()
            if held:
                commit.resume()
            # Parent threads may have held these: the child starts afresh.
            alive._gate = _ForkGate()
            alive._reopen_lock = threading.Lock()

    os.register_at_fork(
        before=before, after_in_parent=after_in_parent, after_in_child=after_in_child
    )


class SQLiteStore:
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
        self._gate = _ForkGate()
        self._open()
        _pause_across_fork(self)

    # -- connections ------------------------------------------------------

    def _open(self) -> None:
        self._local = threading.local()
        self._readers: List[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer = self._connect()
        self._commit = GroupCommit(self._writer_connection, self._busy_timeout)
        # A plain read first: a store opening on an up-to-date file must not
        # wait behind another process's write transaction.
        if _schema_version(self._writer) != SCHEMA_VERSION:
            self._commit.run(_migrate)

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            self._enable_wal(connection)
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.Error as err:
            raise StoreError(f"cannot open sqlite database {self.path!r}: {err}") from err
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

    def _write(self, write: Callable[[sqlite3.Connection], Any]) -> Any:
        self._check_fork()
        return self._commit.run(write)

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
        return self._write(lambda connection: _create(connection, new, strict))

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
        return self._write(lambda connection: _complete(connection, request, self.clock()))

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
            lambda connection: _complete(connection, request, self.clock()), callback
        )

    def resolve(self, promise_id: str, value: Value = EMPTY, **kwargs: Any) -> Written:
        """Shorthand for ``complete(promise_id, State.RESOLVED, value=value)``."""
        return self.complete(promise_id, State.RESOLVED, value=value, **kwargs)

    def reject(self, promise_id: str, value: Value = EMPTY, **kwargs: Any) -> Written:
        """Shorthand for ``complete(promise_id, State.REJECTED, value=value)``."""
        return self.complete(promise_id, State.REJECTED, value=value, **kwargs)

    def cancel(self, promise_id: str, value: Value = EMPTY, **kwargs: Any) -> Written:
        """Shorthand for ``complete(promise_id, State.REJECTED_CANCELED, ...)``."""
        return self.complete(promise_id, State.REJECTED_CANCELED, value=value, **kwargs)

    def get(self, promise_id: str) -> DurablePromise:
        """Read a promise, timing it out first when its timeout has passed.

        Does not block on writers, except to store a lazy timeout. Thread-safe.
        :raises PromiseNotFoundError: when there is no such promise.
        :raises StoreError: when the database failed.
        """
        rules.validate_id(promise_id)
        found = self._read(lambda connection: _select(connection, promise_id))
        if found is None:
            raise rules.not_found(promise_id)
        if rules.settle(found, self.clock()) is not found:
            found = self._write(lambda connection: _settle_one(connection, promise_id, self.clock()))
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
        query = _decode_cursor(cursor) if cursor else _query(pattern, state, tags, limit)
        states = rules.states_for_filter(query["state"])
        self._settle_due()
        rows = self._read(lambda connection: _search(connection, query, states))
        promises = [promise for _, promise in rows]
        next_cursor = None
        if len(rows) == query["limit"]:
            last_sort_id, last = rows[-1]
            next_cursor = _encode_cursor({**query, "before": [last_sort_id, last.id]})
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
        for name, value in (("resource_id", resource_id), ("execution_id", execution_id),
                            ("process_id", process_id)):
            if not isinstance(value, str) or not value:
                raise InvalidRequestError(f"{name} must be a non-empty string, not {value!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            raise InvalidRequestError(f"lock ttl must be whole milliseconds >= 0, not {ttl!r}")
        lock = Lock(resource_id, execution_id, process_id, ttl, self.clock() + ttl)
        return self._write(lambda connection: _acquire(connection, lock, self.clock()))

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
            lambda connection: connection.execute(
                "UPDATE locks SET expires_at = ? + ttl"
                " WHERE process_id = ? AND expires_at > ?",
                (now, process_id, now),
            ).rowcount
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
        sort_id = _next_sort_id()
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
        query = _decode_cursor(cursor) if cursor else _query(pattern, None, tags, limit)
        glob = _glob(query["pattern"])
        rows = self._read(
            lambda connection: schedule_table.search(connection, query, glob)
        )
        next_cursor = None
        if len(rows) == query["limit"]:
            last_sort_id, last = rows[-1]
            next_cursor = _encode_cursor({**query, "before": [last_sort_id, last.id]})
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
                connection, schedule, run, lambda c, new: _create(c, new, False)
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
            self._write(lambda connection: _settle_all(connection, now))

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


# -- writes (run inside a transaction by GroupCommit) ---------------------


def _schema_version(connection: sqlite3.Connection) -> int:
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as err:
        raise StoreError(f"cannot read the sqlite schema version: {err}") from err


def _migrate(connection: sqlite3.Connection) -> None:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this release"
            f" ({SCHEMA_VERSION})"
        )
    if version == SCHEMA_VERSION:
        return
    # Keyed by id WITHOUT ROWID: a create writes one b-tree, not a table and
    # an id index; each page a commit touches costs about 10us in WAL mode.
    # sqlite-utils cannot declare WITHOUT ROWID, so this one DDL is plain SQL.
    connection.execute(_CREATE_TABLE)
    # Pending promises are what timeouts and recovery look for: a partial
    # index keeps that cost proportional to the pending set, not the store.
    connection.execute(
        "CREATE INDEX IF NOT EXISTS promises_pending_timeout"
        " ON promises (timeout) WHERE state = 'PENDING'"
    )
    connection.execute(_CREATE_LOCKS)
    # Version 1 files get the schedules table on first open by this release;
    # every statement above is IF NOT EXISTS, so re-running them is harmless.
    connection.execute(schedule_table.CREATE_SCHEDULES)
    connection.execute(schedule_table.CREATE_DUE_INDEX)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    logger.info("created promise schema version %d", SCHEMA_VERSION)


def _create(connection: sqlite3.Connection, new: DurablePromise, strict: bool) -> Written:
    # The common case, a new id, is one statement; anything else reads the
    # stored promise and lets the rules decide.
    cursor = connection.execute(_INSERT_OR_IGNORE, _row_values(new))
    if cursor.rowcount == 1:
        logger.debug("promise %r created", new.id)
        return Written(new, True)
    stored = _select(connection, new.id)
    transition = rules.create(stored, new, strict, new.created_on)
    return _apply(connection, transition, stored)


def _complete(connection: sqlite3.Connection, request: Tuple, now: int) -> Written:
    # The common case, completing a pending promise before its timeout, is
    # one statement; anything else reads the promise and lets the rules decide.
    # A state that is no completion (PENDING, REJECTED_TIMEDOUT) must reach
    # the rules, which refuse it: the fast path would store it.
    promise_id, state, value, key, strict = request
    if state in rules.COMPLETION_STATES:
        row = connection.execute(
            _COMPLETE_PENDING,
            (state.value, _dump(value.headers), value.data, key, now, promise_id, now),
        ).fetchone()
        if row is not None:
            logger.debug("promise %r is %s", promise_id, state.value)
            return Written(_promise(row), True)
    stored = _select(connection, promise_id)
    transition = rules.complete(stored, promise_id, state, value, key, strict, now)
    return _apply(connection, transition, stored)


def _acquire(connection: sqlite3.Connection, lock: Lock, now: int) -> Lock:
    held = connection.execute(
        "SELECT execution_id, expires_at FROM locks WHERE resource_id = ?",
        (lock.resource_id,),
    ).fetchone()
    if held is not None and held[0] != lock.execution_id and held[1] > now:
        raise LockHeldError(
            f"lock on {lock.resource_id!r} is held by execution {held[0]!r}",
            resource_id=lock.resource_id,
        )
    connection.execute(
        "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?)", tuple(lock)
    )
    return lock


def _settle_one(connection: sqlite3.Connection, promise_id: str, now: int) -> DurablePromise:
    stored = _select(connection, promise_id)
    if stored is None:
        raise rules.not_found(promise_id)
    settled = rules.settle(stored, now)
    if settled is not stored:
        _update(connection, settled)
    return settled


def _settle_all(connection: sqlite3.Connection, now: int) -> None:
    rows = connection.execute(
        f"{_SELECT} WHERE state = 'PENDING' AND timeout <= ?", (now,)
    ).fetchall()
    for row in rows:
        _update(connection, rules.settle(_promise(row), now))


def _apply(
    connection: sqlite3.Connection,
    transition: rules.Transition,
    stored: Optional[DurablePromise],
) -> Written:
    if transition.changed and transition.promise is not None:
        if stored is None:
            connection.execute(_INSERT, _row_values(transition.promise))
        else:
            _update(connection, transition.promise)
    if transition.error is not None:
        raise transition.error
    assert transition.promise is not None
    return Written(transition.promise, transition.status == 201)


def _update(connection: sqlite3.Connection, promise: DurablePromise) -> None:
    logger.debug("promise %r is %s", promise.id, promise.state.value)
    connection.execute(
        _UPDATE,
        (
            promise.state.value,
            _dump(promise.value.headers),
            promise.value.data,
            promise.idempotency_key_for_complete,
            promise.completed_on,
            promise.id,
        ),
    )


# -- reads ----------------------------------------------------------------


def _select(connection: sqlite3.Connection, promise_id: str) -> Optional[DurablePromise]:
    row = connection.execute(f"{_SELECT} WHERE id = ?", (promise_id,)).fetchone()
    return None if row is None else _promise(row)


def _search(connection: sqlite3.Connection, query: Dict[str, Any], states: Any) -> List:
    sql = [f"{_SELECT} WHERE id GLOB ?"]
    params: List[Any] = [_glob(query["pattern"])]
    if states is not None:
        sql.append(f"AND state IN ({','.join('?' * len(states))})")
        params.extend(sorted(state.value for state in states))
    for key, value in sorted(query["tags"].items()):
        sql.append(
            "AND EXISTS (SELECT 1 FROM json_each(promises.tags)"
            " WHERE json_each.key = ? AND json_each.value = ?)"
        )
        params.extend([key, value])
    if query.get("before") is not None:
        sql.append("AND (sort_id, id) < (?, ?)")
        params.extend(query["before"])
    sql.append("ORDER BY sort_id DESC, id DESC LIMIT ?")
    params.append(query["limit"])
    rows = connection.execute(" ".join(sql), params).fetchall()
    return [(row[0], _promise(row)) for row in rows]


def _glob(pattern: str) -> str:
    # GLOB is case-sensitive like our rule; escape its other wildcards so
    # that only '*' is special (sqlite.org/lang_expr.html#glob).
    return pattern.replace("[", "[[]").replace("?", "[?]")


def _promise(row: Tuple) -> DurablePromise:
    (_, promise_id, state, timeout, param_headers, param_data, value_headers,
     value_data, tags, key_create, key_complete, created_on, completed_on) = row
    return DurablePromise(
        id=promise_id,
        state=State(state),
        timeout=timeout,
        param=Value(_load(param_headers), param_data) if param_headers or param_data else EMPTY,
        value=Value(_load(value_headers), value_data) if value_headers or value_data else EMPTY,
        tags=_load(tags) or {},
        idempotency_key_for_create=key_create,
        idempotency_key_for_complete=key_complete,
        created_on=created_on,
        completed_on=completed_on,
    )


def _row_values(promise: DurablePromise) -> Tuple:
    return (
        _next_sort_id(),
        promise.id, promise.state.value, promise.timeout,
        _dump(promise.param.headers), promise.param.data or None,
        _dump(promise.value.headers), promise.value.data or None,
        _dump(promise.tags), promise.idempotency_key_for_create,
        promise.idempotency_key_for_complete, promise.created_on,
        promise.completed_on,
    )


def _dump(mapping: Optional[Mapping[str, str]]) -> Optional[str]:
    return json.dumps(dict(mapping), ensure_ascii=False) if mapping else None


def _load(text: Optional[str]) -> Any:
    return json.loads(text) if text else None


# -- search queries and cursors -------------------------------------------


def _query(
    pattern: Optional[str], state: Optional[str], tags: Optional[Mapping[str, str]],
    limit: Optional[int],
) -> Dict[str, Any]:
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequestError(f"search pattern must be a non-empty string, not {pattern!r}")
    rules.states_for_filter(state)
    if limit is None or limit == 0:
        limit = 100
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= 100:
        raise InvalidRequestError(f"search limit must be 0 to 100, not {limit!r}")
    return {"pattern": pattern, "state": state, "tags": rules.validate_tags(tags),
            "limit": limit, "before": None}


def _encode_cursor(query: Dict[str, Any]) -> str:
    text = json.dumps(query, ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


def _decode_cursor(cursor: str) -> Dict[str, Any]:
    try:
        query = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        checked = _query(query["pattern"], query["state"], query["tags"], query["limit"])
        before = query["before"]
        sort_id, last_id = before
        if not isinstance(sort_id, int) or not isinstance(last_id, str):
            raise ValueError(before)
    except (binascii.Error, UnicodeError, ValueError, KeyError, TypeError,
            AttributeError, InvalidRequestError) as err:
        raise InvalidRequestError(f"search cursor {cursor!r} is not valid") from err
    return {**checked, "before": before}


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
