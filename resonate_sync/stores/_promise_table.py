"""The promises and locks tables of the SQLite store: schema, rows and queries.

Every function that writes takes the connection of a transaction that
``GroupCommit`` runs; the store decides nothing here that ``promise.py``
does not decide first.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sqlite3
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .. import promise as rules
from ..exceptions import InvalidRequestError, LockHeldError, StoreError
from ..promise import EMPTY, DurablePromise, State, Value
from . import _schedule_table as schedule_table
from ._paging import page
from .base import Lock, Written

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
    f"INSERT INTO promises (sort_id, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
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


class SortIds:
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


next_sort_id = SortIds()


#: Seconds a fork waits for this store's reads and writes in progress to end.
def schema_version(connection: sqlite3.Connection) -> int:
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as err:
        raise StoreError(f"cannot read the sqlite schema version: {err}") from err


def migrate(connection: sqlite3.Connection) -> None:
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


def create(
    connection: sqlite3.Connection, new: DurablePromise, strict: bool
) -> Written:
    # The common case, a new id, is one statement; anything else reads the
    # stored promise and lets the rules decide.
    cursor = connection.execute(_INSERT_OR_IGNORE, row_values(new))
    if cursor.rowcount == 1:
        logger.debug("promise %r created", new.id)
        return Written(new, True)
    stored = select(connection, new.id)
    transition = rules.create(stored, new, strict, new.created_on)
    return apply(connection, transition, stored)


def complete(
    connection: sqlite3.Connection,
    request: Tuple[str, State, Value, Optional[str], bool],
    now: int,
) -> Written:
    # The common case, completing a pending promise before its timeout, is
    # one statement; anything else reads the promise and lets the rules decide.
    # A state that is no completion (PENDING, REJECTED_TIMEDOUT) must reach
    # the rules, which refuse it: the fast path would store it.
    promise_id, state, value, key, strict = request
    if state in rules.COMPLETION_STATES:
        row = connection.execute(
            _COMPLETE_PENDING,
            (state.value, dump(value.headers), value.data, key, now, promise_id, now),
        ).fetchone()
        if row is not None:
            logger.debug("promise %r is %s", promise_id, state.value)
            return Written(promise(row), True)
    stored = select(connection, promise_id)
    transition = rules.complete(stored, promise_id, state, value, key, strict, now)
    return apply(connection, transition, stored)


def acquire(connection: sqlite3.Connection, lock: Lock, now: int) -> Lock:
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


def settle_one(
    connection: sqlite3.Connection, promise_id: str, now: int
) -> DurablePromise:
    stored = select(connection, promise_id)
    if stored is None:
        raise rules.not_found(promise_id)
    settled = rules.settle(stored, now)
    if settled is not stored:
        update(connection, settled)
    return settled


def settle_all(connection: sqlite3.Connection, now: int) -> None:
    rows = connection.execute(
        f"{_SELECT} WHERE state = 'PENDING' AND timeout <= ?", (now,)
    ).fetchall()
    for row in rows:
        update(connection, rules.settle(promise(row), now))


def apply(
    connection: sqlite3.Connection,
    transition: rules.Transition,
    stored: Optional[DurablePromise],
) -> Written:
    if transition.changed and transition.promise is not None:
        if stored is None:
            connection.execute(_INSERT, row_values(transition.promise))
        else:
            update(connection, transition.promise)
    if transition.error is not None:
        raise transition.error
    assert transition.promise is not None
    return Written(transition.promise, transition.status == 201)


def update(connection: sqlite3.Connection, promise: DurablePromise) -> None:
    logger.debug("promise %r is %s", promise.id, promise.state.value)
    connection.execute(
        _UPDATE,
        (
            promise.state.value,
            dump(promise.value.headers),
            promise.value.data,
            promise.idempotency_key_for_complete,
            promise.completed_on,
            promise.id,
        ),
    )


# -- reads ----------------------------------------------------------------


def select(connection: sqlite3.Connection, promise_id: str) -> Optional[DurablePromise]:
    row = connection.execute(f"{_SELECT} WHERE id = ?", (promise_id,)).fetchone()
    return None if row is None else promise(row)


def search(
    connection: sqlite3.Connection, query: Dict[str, Any], states: Any
) -> List[Tuple[int, DurablePromise]]:
    where: List[str] = []
    where_params: List[Any] = []
    if states is not None:
        where.append(f"AND state IN ({','.join('?' * len(states))})")
        where_params.extend(sorted(state.value for state in states))
    rows = page(
        connection,
        _SELECT,
        "promises",
        glob(query["pattern"]),
        query,
        where,
        where_params,
    )
    return [(row[0], promise(row)) for row in rows]


def glob(pattern: str) -> str:
    # GLOB is case-sensitive like our rule; escape its other wildcards so
    # that only '*' is special (sqlite.org/lang_expr.html#glob).
    return pattern.replace("[", "[[]").replace("?", "[?]")


def promise(row: Tuple[Any, ...]) -> DurablePromise:
    (
        _,
        promise_id,
        state,
        timeout,
        param_headers,
        param_data,
        value_headers,
        value_data,
        tags,
        key_create,
        key_complete,
        created_on,
        completed_on,
    ) = row
    return DurablePromise(
        id=promise_id,
        state=State(state),
        timeout=timeout,
        param=Value(load(param_headers), param_data)
        if param_headers or param_data
        else EMPTY,
        value=Value(load(value_headers), value_data)
        if value_headers or value_data
        else EMPTY,
        tags=load(tags) or {},
        idempotency_key_for_create=key_create,
        idempotency_key_for_complete=key_complete,
        created_on=created_on,
        completed_on=completed_on,
    )


def row_values(promise: DurablePromise) -> Tuple[Any, ...]:
    return (
        next_sort_id(),
        promise.id,
        promise.state.value,
        promise.timeout,
        dump(promise.param.headers),
        promise.param.data or None,
        dump(promise.value.headers),
        promise.value.data or None,
        dump(promise.tags),
        promise.idempotency_key_for_create,
        promise.idempotency_key_for_complete,
        promise.created_on,
        promise.completed_on,
    )


def dump(mapping: Optional[Mapping[str, str]]) -> Optional[str]:
    return json.dumps(dict(mapping), ensure_ascii=False) if mapping else None


def load(text: Optional[str]) -> Any:
    return json.loads(text) if text else None


# -- search queries and cursors -------------------------------------------


def search_query(
    pattern: Optional[str],
    state: Optional[str],
    tags: Optional[Mapping[str, str]],
    limit: Optional[int],
) -> Dict[str, Any]:
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequestError(
            f"search pattern must be a non-empty string, not {pattern!r}"
        )
    rules.states_for_filter(state)
    if limit is None or limit == 0:
        limit = 100
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= 100:
        raise InvalidRequestError(f"search limit must be 0 to 100, not {limit!r}")
    return {
        "pattern": pattern,
        "state": state,
        "tags": rules.validate_tags(tags),
        "limit": limit,
        "before": None,
    }


def encode_cursor(query: Dict[str, Any]) -> str:
    text = json.dumps(query, ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


def decode_cursor(cursor: str) -> Dict[str, Any]:
    try:
        query = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        checked = search_query(
            query["pattern"], query["state"], query["tags"], query["limit"]
        )
        before = query["before"]
        sort_id, last_id = before
        if not isinstance(sort_id, int) or not isinstance(last_id, str):
            raise ValueError(before)
    except (
        binascii.Error,
        UnicodeError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        InvalidRequestError,
    ) as err:
        raise InvalidRequestError(f"search cursor {cursor!r} is not valid") from err
    return {**checked, "before": before}
