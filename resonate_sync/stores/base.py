"""The contract every promise store keeps.

A store holds durable promises and applies the rules of ``PROTOCOL.md``.
Times are Unix epoch milliseconds and a promise's ``timeout`` is absolute.
Every method is thread-safe and blocks until the store has answered; a write
has been committed when it returns.

Errors: protocol refusals raise the leaves of
:class:`~resonate_sync.exceptions.ResonateError` named below; a store that
cannot do its work (disk, database, network) raises
:class:`~resonate_sync.exceptions.StoreError` and has changed nothing it
reported.
"""

from __future__ import annotations

import binascii
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Protocol

from ..exceptions import InvalidRequestError
from ..promise import EMPTY, DurablePromise, State, Value

__all__ = [
    "Lock",
    "PromiseStore",
    "Schedule",
    "SchedulePage",
    "ScheduleStore",
    "SearchPage",
    "Written",
    "validate_value",
]


class Written(NamedTuple):
    """The answer to a create or complete.

    :ivar promise: the promise as stored after the call.
    :ivar created: True when this call changed it (the server's 201), False
        when it answered with what was already stored (200).
    """

    promise: DurablePromise
    created: bool


class Lock(NamedTuple):
    """A lock on a resource, held by one execution of one process.

    A lock expires ``ttl`` milliseconds after it was acquired or last
    heartbeated; ``expires_at`` is epoch milliseconds.
    """

    resource_id: str
    execution_id: str
    process_id: str
    ttl: int
    expires_at: int


class SearchPage(NamedTuple):
    """One page of a search, newest first, and the cursor to the next page."""

    promises: List[DurablePromise]
    cursor: Optional[str]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A schedule that creates a promise each time its cron expression fires.

    ``promise_id`` is a template over ``{{.id}}`` and ``{{.timestamp}}`` (the
    run's epoch milliseconds); ``promise_timeout`` is relative milliseconds;
    the times are epoch milliseconds. Rows of a Resonate server's schedule
    search carry fewer fields: the server leaves ``promise_id`` empty,
    ``promise_timeout`` 0 and ``promise_param`` empty there.
    """

    id: str
    cron: str
    promise_id: str
    promise_timeout: int
    description: Optional[str] = None
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    promise_param: Value = EMPTY
    promise_tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    idempotency_key: Optional[str] = None
    created_on: int = 0
    next_run_time: Optional[int] = None
    last_run_time: Optional[int] = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Schedule":
        """Read the server's JSON shape, tolerating absent keys."""
        return cls(
            id=body["id"],
            cron=body.get("cron", ""),
            promise_id=body.get("promiseId", ""),
            promise_timeout=int(body.get("promiseTimeout") or 0),
            description=body.get("desc"),
            tags=dict(body.get("tags") or {}),
            promise_param=Value.from_json(body.get("promiseParam")),
            promise_tags=dict(body.get("promiseTags") or {}),
            idempotency_key=body.get("idempotencyKey"),
            created_on=int(body.get("createdOn") or 0),
            next_run_time=body.get("nextRunTime"),
            last_run_time=body.get("lastRunTime"),
        )

    def to_json(self) -> Dict[str, Any]:
        """The server's JSON shape; fields that are not set are left out."""
        body: Dict[str, Any] = {"id": self.id, "cron": self.cron}
        if self.description is not None:
            body["desc"] = self.description
        body.update(
            tags=dict(self.tags),
            promiseId=self.promise_id,
            promiseTimeout=self.promise_timeout,
            promiseParam=self.promise_param.to_json(),
            promiseTags=dict(self.promise_tags),
            createdOn=self.created_on,
        )
        for key, value in (
            ("idempotencyKey", self.idempotency_key),
            ("nextRunTime", self.next_run_time),
            ("lastRunTime", self.last_run_time),
        ):
            if value is not None:
                body[key] = value
        return body


class SchedulePage(NamedTuple):
    """One page of a schedule search, newest first, and the next cursor."""

    schedules: List[Schedule]
    cursor: Optional[str]


class CompletionShorthands:
    """``resolve``, ``reject`` and ``cancel`` for a store that has ``complete``."""

    complete: Callable[..., Written]  # the store's own

    def resolve(self, promise_id: str, value: Value = EMPTY, **kwargs: Any) -> Written:
        """Shorthand for ``complete(promise_id, State.RESOLVED, value=value)``."""
        return self.complete(promise_id, State.RESOLVED, value=value, **kwargs)

    def reject(self, promise_id: str, value: Value = EMPTY, **kwargs: Any) -> Written:
        """Shorthand for ``complete(promise_id, State.REJECTED, value=value)``."""
        return self.complete(promise_id, State.REJECTED, value=value, **kwargs)

    def cancel(self, promise_id: str, value: Value = EMPTY, **kwargs: Any) -> Written:
        """Shorthand for ``complete(promise_id, State.REJECTED_CANCELED, ...)``."""
        return self.complete(promise_id, State.REJECTED_CANCELED, value=value, **kwargs)


class PromiseStore(Protocol):
    """What the runtime needs from a store."""

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
        """Create a pending promise, or answer a duplicate create.

        :raises PromiseAlreadyExistsError: when the id is taken (409).
        :raises InvalidRequestError: for a malformed request (400).
        """

    def complete(
        self,
        promise_id: str,
        state: State,
        *,
        value: Value = EMPTY,
        idempotency_key: Optional[str] = None,
        strict: bool = False,
    ) -> Written:
        """Resolve, reject or cancel a promise, or answer a duplicate completion.

        :raises PromiseNotFoundError: when there is no such promise (404).
        :raises PromiseAlreadyCompletedError: when it is already completed (403).
        """

    def get(self, promise_id: str) -> DurablePromise:
        """Read a promise, timing it out first if its timeout has passed.

        :raises PromiseNotFoundError: when there is no such promise.
        """

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

        With ``cursor``, the query comes from the cursor alone.
        """

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""


class ScheduleStore(Protocol):
    """What :mod:`resonate_sync.schedules` needs from a store that keeps schedules.

    Both stores keep them; on a Resonate server the server fires them, in
    SQLite the runtime's firing loop does.
    """

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

        Without a key, the schedule id is the idempotency key.
        :raises ScheduleAlreadyExistsError: when the id is taken (409).
        :raises InvalidRequestError: for a bad cron expression or field (400).
        """

    def get_schedule(self, schedule_id: str) -> Schedule:
        """Read a schedule.

        :raises ScheduleNotFoundError: when there is no such schedule.
        """

    def search_schedules(
        self,
        pattern: Optional[str] = None,
        *,
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> SchedulePage:
        """One page of schedules whose id matches ``pattern``, newest first."""

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule; promises it created stay.

        :raises ScheduleNotFoundError: when there is no such schedule.
        """


def validate_value(value: Any, what: str) -> Value:
    """Check a param or value: string headers, standard base64 data.

    :raises InvalidRequestError: naming ``what`` and the bad part.
    """
    if value is None:
        return EMPTY
    if not isinstance(value, Value):
        raise InvalidRequestError(f"{what} must be a Value, not {value!r}")
    for key, item in (value.headers or {}).items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidRequestError(
                f"{what} header {key!r}: {item!r} must map a string to a string"
            )
    if value.data is not None:
        _check_base64(value.data, what)
    return value


def _check_base64(data: Any, what: str) -> None:
    try:
        binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, TypeError, ValueError) as err:
        raise InvalidRequestError(
            f"{what} data {str(data)[:80]!r} is not standard base64"
        ) from err
