"""The ``schedules`` table of the SQLite store: its schema, reads and writes.

Each write is a function of a connection, run inside a transaction by
:class:`~resonate_sync.stores._commit.GroupCommit`, as in ``sqlite.py``.
A schedule's ``next_run_time`` is the compare-and-set word of firing: a
process fires a run only by moving it from the value it read to the next run,
and in the same transaction it creates the run's promise.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..exceptions import ScheduleAlreadyExistsError, ScheduleNotFoundError
from ..promise import EMPTY, DurablePromise, State, Value
from ._paging import page
from .base import Schedule, Written

__all__ = [
    "CREATE_SCHEDULES",
    "SCHEDULE_TAG",
    "delete",
    "due",
    "fire",
    "insert",
    "run_promise_id",
    "search",
    "select",
]

logger = logging.getLogger(__name__)

#: Tags every fired promise carries, as on the Resonate server: the schedule
#: that made it, and the invocation tag recovery searches for.
SCHEDULE_TAG = "resonate:schedule"
_INVOCATION_TAG = "resonate:invocation"

CREATE_SCHEDULES = """
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY NOT NULL,
    sort_id INTEGER NOT NULL,
    description TEXT,
    cron TEXT NOT NULL,
    tags TEXT,
    promise_id TEXT NOT NULL,
    promise_timeout INTEGER NOT NULL,
    promise_param_headers TEXT,
    promise_param_data TEXT,
    promise_tags TEXT,
    idempotency_key TEXT,
    created_on INTEGER NOT NULL,
    next_run_time INTEGER NOT NULL,
    last_run_time INTEGER
) WITHOUT ROWID
"""
CREATE_DUE_INDEX = (
    "CREATE INDEX IF NOT EXISTS schedules_next_run ON schedules (next_run_time)"
)
_COLUMNS = (
    "id, description, cron, tags, promise_id, promise_timeout,"
    " promise_param_headers, promise_param_data, promise_tags, idempotency_key,"
    " created_on, next_run_time, last_run_time"
)
_SELECT = f"SELECT sort_id, {_COLUMNS} FROM schedules"
_INSERT = (
    f"INSERT OR IGNORE INTO schedules (sort_id, {_COLUMNS})"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_ADVANCE = (
    "UPDATE schedules SET next_run_time = ?, last_run_time = ?"
    " WHERE id = ? AND next_run_time = ?"
)

CreatePromise = Callable[[sqlite3.Connection, DurablePromise], Written]


# -- writes ---------------------------------------------------------------


def insert(
    connection: sqlite3.Connection, schedule: Schedule, sort_id: int
) -> Schedule:
    """Store a new schedule, or answer a duplicate create with the stored one.

    :raises ScheduleAlreadyExistsError: when the id is taken under another key.
    """
    if connection.execute(_INSERT, _row_values(schedule, sort_id)).rowcount == 1:
        logger.debug("schedule %r created", schedule.id)
        return schedule
    stored = select(connection, schedule.id)
    assert stored is not None  # the insert was ignored for this very row
    key = schedule.idempotency_key
    if stored.idempotency_key is None or stored.idempotency_key != key:
        raise ScheduleAlreadyExistsError(
            f"schedule {schedule.id!r} already exists", schedule_id=schedule.id
        )
    return stored


def delete(connection: sqlite3.Connection, schedule_id: str) -> None:
    """Delete a schedule; the promises it created stay.

    :raises ScheduleNotFoundError: when there is no such schedule.
    """
    deleted = connection.execute(
        "DELETE FROM schedules WHERE id = ?", (schedule_id,)
    ).rowcount
    if not deleted:
        raise not_found(schedule_id)
    logger.debug("schedule %r deleted", schedule_id)


def fire(
    connection: sqlite3.Connection,
    schedule: Schedule,
    run: Tuple[int, int, int],
    create: CreatePromise,
) -> Optional[Written]:
    """Fire run ``run_time`` of ``schedule`` if its next run is still the one read.

    ``run`` is ``(run_time, next_run_time, now)``. Moves the next run time
    from ``schedule.next_run_time`` to ``next_run_time`` and creates the
    run's promise in the same transaction.
    :returns: the run's promise, or None when another process fired it first
        or the schedule was deleted meanwhile.
    """
    run_time, next_run_time, now = run
    moved = connection.execute(
        _ADVANCE, (next_run_time, run_time, schedule.id, schedule.next_run_time)
    ).rowcount
    if not moved:
        return None
    promise_id = run_promise_id(schedule, run_time)
    # The promise id is the key: a second create of the same run, by a
    # process that read the schedule before the first fire, is a duplicate.
    new = DurablePromise(
        id=promise_id,
        state=State.PENDING,
        timeout=run_time + schedule.promise_timeout,
        param=schedule.promise_param,
        tags={
            **schedule.promise_tags,
            SCHEDULE_TAG: schedule.id,
            _INVOCATION_TAG: "true",
        },
        idempotency_key_for_create=promise_id,
        created_on=now,
    )
    logger.debug("schedule %r fires %r", schedule.id, promise_id)
    return create(connection, new)


def run_promise_id(schedule: Schedule, run_time: int) -> str:
    """The promise id of one run: the template with ``{{.id}}`` and ``{{.timestamp}}``
    filled in, as the Resonate server fills them."""
    return schedule.promise_id.replace("{{.id}}", schedule.id).replace(
        "{{.timestamp}}", str(run_time)
    )


# -- reads ----------------------------------------------------------------


def select(connection: sqlite3.Connection, schedule_id: str) -> Optional[Schedule]:
    """The stored schedule, or None."""
    row = connection.execute(f"{_SELECT} WHERE id = ?", (schedule_id,)).fetchone()
    return None if row is None else _schedule(row)


def due(connection: sqlite3.Connection, now: int) -> List[Schedule]:
    """Every schedule whose next run is at or before ``now``, earliest first."""
    rows = connection.execute(
        f"{_SELECT} WHERE next_run_time <= ? ORDER BY next_run_time, id", (now,)
    ).fetchall()
    return [_schedule(row) for row in rows]


def search(
    connection: sqlite3.Connection, query: Dict[str, Any], glob: str
) -> List[Tuple[int, Schedule]]:
    """One page of ``(sort_id, schedule)``, newest first (see ``sqlite.py``)."""
    rows = page(connection, _SELECT, "schedules", glob, query)
    return [(row[0], _schedule(row)) for row in rows]


def not_found(schedule_id: str) -> ScheduleNotFoundError:
    """The error for a schedule id that names no schedule."""
    return ScheduleNotFoundError(
        f"schedule {schedule_id!r} was not found", schedule_id=schedule_id
    )


# -- rows -----------------------------------------------------------------


def _schedule(row: Tuple[Any, ...]) -> Schedule:
    (
        _,
        schedule_id,
        description,
        cron,
        tags,
        promise_id,
        promise_timeout,
        param_headers,
        param_data,
        promise_tags,
        key,
        created_on,
        next_run,
        last_run,
    ) = row
    param = EMPTY
    if param_headers or param_data:
        param = Value(_load(param_headers), param_data)
    return Schedule(
        id=schedule_id,
        cron=cron,
        promise_id=promise_id,
        promise_timeout=promise_timeout,
        description=description,
        tags=_load(tags) or {},
        promise_param=param,
        promise_tags=_load(promise_tags) or {},
        idempotency_key=key,
        created_on=created_on,
        next_run_time=next_run,
        last_run_time=last_run,
    )


def _row_values(schedule: Schedule, sort_id: int) -> Tuple[Any, ...]:
    return (
        sort_id,
        schedule.id,
        schedule.description,
        schedule.cron,
        _dump(schedule.tags),
        schedule.promise_id,
        schedule.promise_timeout,
        _dump(schedule.promise_param.headers),
        schedule.promise_param.data or None,
        _dump(schedule.promise_tags),
        schedule.idempotency_key,
        schedule.created_on,
        schedule.next_run_time,
        schedule.last_run_time,
    )


def _dump(mapping: Optional[Any]) -> Optional[str]:
    return json.dumps(dict(mapping), ensure_ascii=False) if mapping else None


def _load(text: Optional[str]) -> Any:
    return json.loads(text) if text else None
