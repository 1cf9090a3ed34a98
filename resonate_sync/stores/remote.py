"""The remote store: durable promises on a Resonate server, over its REST API.

Talks to the Resonate server v0.8.2 as ``PROTOCOL.md`` describes it. Every
create and complete carries an idempotency key, so that a retry after a lost
answer is deduplicated by the server instead of failing; transient failures
(connection refused or reset, timeouts, 5xx, 429) are retried with
exponential backoff.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import requests

from ..promise import EMPTY, DurablePromise, State, Value
from ._http import (
    Answer,
    Timeout,
    Transport,
    idempotency_key as make_key,
    key_header,
    quote_id,
    refusal,
    search_params,
)
from .base import (
    CompletionShorthands,
    Schedule,
    SchedulePage,
    SearchPage,
    Written,
    validate_value,
)

__all__ = ["Lock", "RemoteStore", "Schedule", "SchedulePage"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Lock:
    """A lock as the server holds it; ``expires_at`` is epoch milliseconds."""

    resource_id: str
    execution_id: str
    process_id: str
    ttl: int
    expires_at: int


class RemoteStore(CompletionShorthands):
    """Durable promises, locks and schedules on a Resonate server.

    :param url: the server's base URL, e.g. ``http://127.0.0.1:8001``.
    :param auth: ``(user, password)`` for HTTP basic authentication.
    :param token: a bearer token.
    :param timeout: ``(connect, read)`` seconds, or one number for both.
    :param retries: attempts after the first for a transient failure.
    :param backoff: seconds before the first retry; doubles on each retry.
    :param session: a ``requests.Session`` to use; the caller then closes it.
    :param sleep: waits between attempts (tests inject it).

    Without an ``idempotency_key``, :meth:`create` and :meth:`complete` use the
    promise id as the key, percent-encoded (``urllib.parse.quote(id, safe="")``,
    which leaves a plain ASCII id as it is) because a header carries ASCII
    only. A repeated call therefore answers with the stored promise
    (``created`` False), whatever state the repeat asked for; read
    ``promise.state`` to see what was stored. A key you give must be
    printable ASCII.

    Thread-safe; every call blocks until the server answered or the retries
    ran out. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: Optional[Tuple[str, str]] = None,
        token: Optional[str] = None,
        timeout: Timeout = (5, 30),
        retries: int = 5,
        backoff: float = 0.2,
        session: Optional[requests.Session] = None,
        sleep: Optional[Callable[[float], None]] = None,
    ) -> None:
        options: Dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self._transport = Transport(
            url,
            auth=auth,
            token=token,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            session=session,
            **options,
        )
        self.url = self._transport.url

    def close(self) -> None:
        """Close the pooled connections; the store is unusable afterwards."""
        self._transport.close()

    def __enter__(self) -> "RemoteStore":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

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

        After a retry, a 409 is answered from the stored promise when it
        carries this call's key: the conflict was this call's own first attempt.
        :raises PromiseAlreadyExistsError: when the id is taken (409).
        :raises InvalidRequestError: for a malformed request (400).
        :raises StoreError: when the server could not be reached.
        """
        key = make_key(idempotency_key, promise_id)
        body: Dict[str, Any] = {
            "id": promise_id,
            "timeout": timeout,
            "param": validate_value(param, "param").to_json(),
        }
        if tags:
            body["tags"] = dict(tags)
        answer = self._transport.request(
            "POST", "/promises", body=body, headers=key_header(key, strict)
        )
        if answer.status == 409 and answer.attempts > 1:
            stored = self.get(promise_id)
            if stored.idempotency_key_for_create == key:
                return Written(stored, False)
        return self._written(answer, promise_id)

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

        After a retry, a 403 is answered from the stored promise when it was
        completed with this call's key and state.
        :raises PromiseNotFoundError: when there is no such promise (404).
        :raises PromiseAlreadyCompletedError: when it is already completed (403).
        :raises InvalidRequestError: for a state that is not a completion.
        :raises StoreError: when the server could not be reached.
        """
        key, state = make_key(idempotency_key, promise_id), State.parse(state)
        body = {"state": state.value, "value": validate_value(value, "value").to_json()}
        answer = self._transport.request(
            "PATCH",
            f"/promises/{quote_id(promise_id)}",
            body=body,
            headers=key_header(key, strict),
        )
        if answer.status == 403 and answer.attempts > 1:
            stored = self.get(promise_id)
            if stored.idempotency_key_for_complete == key and stored.state is state:
                return Written(stored, False)
        return self._written(answer, promise_id)

    def get(self, promise_id: str) -> DurablePromise:
        """Read a promise; the server times it out first if its timeout passed.

        :raises PromiseNotFoundError: when there is no such promise.
        :raises StoreError: when the server could not be reached.
        """
        answer = self._transport.request("GET", f"/promises/{quote_id(promise_id)}")
        return DurablePromise.from_json(self._body(answer, promise_id))

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
        :raises InvalidRequestError: for a bad pattern, state, limit or cursor.
        :raises StoreError: when the server could not be reached.
        """
        params = search_params(pattern, tags, limit, cursor)
        if state is not None and cursor is None:
            params.append(("state", str(state)))
        answer = self._transport.request("GET", "/promises", params=params)
        body = self._body(answer, f"search {pattern!r}", subject="")
        promises = [DurablePromise.from_json(item) for item in body["promises"]]
        return SearchPage(promises, body.get("cursor"))

    # -- locks ------------------------------------------------------------

    def acquire_lock(
        self, resource_id: str, execution_id: str, process_id: str, ttl: int
    ) -> Lock:
        """Acquire (or re-acquire) the lock on ``resource_id`` for ``ttl`` ms.

        :raises LockHeldError: when another execution holds it (403).
        :raises StoreError: when the server could not be reached.
        """
        body = {
            "resourceId": resource_id,
            "executionId": execution_id,
            "processId": process_id,
            "ttl": ttl,
        }
        answer = self._transport.request("POST", "/locks/acquire", body=body)
        held = self._body(answer, resource_id, subject="lock", field="resource_id")
        return Lock(
            held["resourceId"],
            held["executionId"],
            held["processId"],
            int(held.get("ttl") or 0),
            int(held.get("expiresAt") or 0),
        )

    def release_lock(self, resource_id: str, execution_id: str) -> None:
        """Release the lock ``execution_id`` holds on ``resource_id``.

        A 404 after a retry counts as released: the first attempt released it.
        :raises LockNotFoundError: when that execution holds no such lock.
        :raises StoreError: when the server could not be reached.
        """
        body = {"resourceId": resource_id, "executionId": execution_id}
        answer = self._transport.request("POST", "/locks/release", body=body)
        if not (answer.status == 404 and answer.attempts > 1):
            self._body(answer, resource_id, subject="lock", field="resource_id")

    def heartbeat(self, process_id: str) -> int:
        """Extend every lock ``process_id`` holds by its ttl.

        :returns: how many locks were extended.
        :raises StoreError: when the server could not be reached.
        """
        answer = self._transport.request(
            "POST", "/locks/heartbeat", body={"processId": process_id}
        )
        body = self._body(answer, process_id, subject="process", field="process_id")
        return int(body.get("locksAffected") or 0)

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

        ``promise_id`` is a template over ``{{.id}}`` and ``{{.timestamp}}``;
        ``promise_timeout`` is relative milliseconds. Without a key, the
        schedule id is the idempotency key.
        :raises ScheduleAlreadyExistsError: when the id is taken (409).
        :raises InvalidRequestError: for a bad cron expression or field (400).
        :raises StoreError: when the server could not be reached.
        """
        body: Dict[str, Any] = {
            "id": schedule_id,
            "cron": cron,
            "promiseId": promise_id,
            "promiseTimeout": promise_timeout,
            "tags": dict(tags or {}),
            "promiseParam": validate_value(promise_param, "promise_param").to_json(),
            "promiseTags": dict(promise_tags or {}),
        }
        if description is not None:
            body["desc"] = description
        headers = {"idempotency-key": make_key(idempotency_key, schedule_id)}
        answer = self._transport.request(
            "POST", "/schedules", body=body, headers=headers
        )
        return Schedule.from_json(self._schedule_body(answer, schedule_id))

    def get_schedule(self, schedule_id: str) -> Schedule:
        """Read a schedule.

        :raises ScheduleNotFoundError: when there is no such schedule.
        :raises StoreError: when the server could not be reached.
        """
        answer = self._transport.request("GET", f"/schedules/{quote_id(schedule_id)}")
        return Schedule.from_json(self._schedule_body(answer, schedule_id))

    def search_schedules(
        self,
        pattern: Optional[str] = None,
        *,
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> SchedulePage:
        """One page of schedules whose id matches ``pattern``, newest first.

        :raises InvalidRequestError: for a bad pattern, limit or cursor.
        :raises StoreError: when the server could not be reached.
        """
        params = search_params(pattern, tags, limit, cursor)
        answer = self._transport.request("GET", "/schedules", params=params)
        body = self._body(answer, f"search {pattern!r}", subject="")
        rows = [Schedule.from_json(item) for item in body["schedules"]]
        return SchedulePage(rows, body.get("cursor"))

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule; promises it created stay.

        A 404 after a retry counts as deleted: the first attempt deleted it.
        :raises ScheduleNotFoundError: when there is no such schedule.
        :raises StoreError: when the server could not be reached.
        """
        answer = self._transport.request(
            "DELETE", f"/schedules/{quote_id(schedule_id)}"
        )
        if not (answer.status == 404 and answer.attempts > 1):
            self._schedule_body(answer, schedule_id)

    # -- answers ----------------------------------------------------------

    def _written(self, answer: Answer, promise_id: str) -> Written:
        body = self._body(answer, promise_id)
        return Written(DurablePromise.from_json(body), answer.status == 201)

    def _schedule_body(self, answer: Answer, schedule_id: str) -> Any:
        return self._body(answer, schedule_id, subject="schedule", field="schedule_id")

    @staticmethod
    def _body(
        answer: Answer, name: str, subject: str = "promise", field: str = "promise_id"
    ) -> Any:
        if answer.ok:
            return answer.body
        what = f"{subject} {name!r}" if subject else name
        raise refusal(answer, what, **({field: name} if subject else {}))
