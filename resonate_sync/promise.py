"""The durable promise record and the rules that move it between states.

Everything here is pure: no I/O, no threads, time passed in. Both the SQLite
store and the test server apply these rules, so the semantics of the Resonate
server (``PROTOCOL.md``, checked against its recorded answers) are written once.

A rule takes the stored promise (or None) and a request, and returns a
:class:`Transition`: the promise to answer with, the HTTP-style status the
server gives, whether the store must write it, and the error to raise, if any.
A lazy timeout is a write even when the request then fails, which is why the
error travels in the transition instead of being raised here.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any, Dict, FrozenSet, Iterable, Mapping, NamedTuple, Optional

from .exceptions import (
    InvalidRequestError,
    PromiseAlreadyCompletedError,
    PromiseAlreadyExistsError,
    PromiseNotFoundError,
    ResonateError,
)

__all__ = [
    "DurablePromise",
    "State",
    "Transition",
    "Value",
    "TIMER_TAG",
    "complete",
    "create",
    "pattern_matches",
    "settle",
    "states_for_filter",
]

#: Tag that makes a promise a timer: at its timeout it resolves instead.
TIMER_TAG = "resonate:timeout"


class State(str, enum.Enum):
    """The five states of a durable promise, spelled as the server spells them."""

    PENDING = "PENDING"
    RESOLVED = "RESOLVED"
    REJECTED = "REJECTED"
    REJECTED_CANCELED = "REJECTED_CANCELED"
    REJECTED_TIMEDOUT = "REJECTED_TIMEDOUT"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> "State":
        """Read a state the way the server does, ignoring case.

        :raises InvalidRequestError: when ``text`` names no state.
        """
        try:
            return cls(str(text).upper())
        except ValueError:
            raise InvalidRequestError(f"unknown promise state {text!r}") from None


#: The states a completion may ask for.
COMPLETION_STATES = frozenset({State.RESOLVED, State.REJECTED, State.REJECTED_CANCELED})

_ALREADY_CODES = {
    State.RESOLVED: (40301, "resolved"),
    State.REJECTED: (40302, "rejected"),
    State.REJECTED_CANCELED: (40303, "canceled"),
    State.REJECTED_TIMEDOUT: (40304, "timed out"),
}


@dataclasses.dataclass(frozen=True)
class Value:
    """A promise's param or value: string headers and base64 data, both optional."""

    headers: Optional[Mapping[str, str]] = None
    data: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        """The server's JSON shape: absent and empty parts are left out."""
        body: Dict[str, Any] = {}
        if self.headers:
            body["headers"] = dict(self.headers)
        if self.data:
            body["data"] = self.data
        return body

    @classmethod
    def from_json(cls, body: Optional[Mapping[str, Any]]) -> "Value":
        """Read the server's JSON shape; None, ``{}`` and nulls are empty."""
        if not body:
            return EMPTY
        return cls(body.get("headers") or None, body.get("data") or None)


EMPTY = Value()


@dataclasses.dataclass(frozen=True)
class DurablePromise:
    """A durable promise as the store keeps it.

    Times are Unix epoch milliseconds; ``timeout`` is absolute.
    """

    id: str
    state: State
    timeout: int
    param: Value = EMPTY
    value: Value = EMPTY
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    idempotency_key_for_create: Optional[str] = None
    idempotency_key_for_complete: Optional[str] = None
    created_on: int = 0
    completed_on: Optional[int] = None

    @property
    def pending(self) -> bool:
        """True while the promise is not completed."""
        return self.state is State.PENDING

    @property
    def timer(self) -> bool:
        """True for a timer promise, which resolves at its timeout."""
        return self.tags.get(TIMER_TAG) == "true"

    def to_json(self) -> Dict[str, Any]:
        """The record in the server's JSON shape (absent keys left out)."""
        body: Dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "param": self.param.to_json(),
            "value": self.value.to_json(),
            "timeout": self.timeout,
        }
        if self.idempotency_key_for_create is not None:
            body["idempotencyKeyForCreate"] = self.idempotency_key_for_create
        if self.idempotency_key_for_complete is not None:
            body["idempotencyKeyForComplete"] = self.idempotency_key_for_complete
        if self.tags:
            body["tags"] = dict(self.tags)
        body["createdOn"] = self.created_on
        if self.completed_on is not None:
            body["completedOn"] = self.completed_on
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "DurablePromise":
        """Read a record in the server's JSON shape, tolerating absent keys."""
        return cls(
            id=body["id"],
            state=State.parse(body["state"]),
            timeout=int(body.get("timeout") or 0),
            param=Value.from_json(body.get("param")),
            value=Value.from_json(body.get("value")),
            tags=dict(body.get("tags") or {}),
            idempotency_key_for_create=body.get("idempotencyKeyForCreate"),
            idempotency_key_for_complete=body.get("idempotencyKeyForComplete"),
            created_on=int(body.get("createdOn") or 0),
            completed_on=body.get("completedOn"),
        )


class Transition(NamedTuple):
    """What a rule decided: answer, status, whether to write, and any error."""

    promise: Optional[DurablePromise]
    status: int
    changed: bool = False
    error: Optional[ResonateError] = None


def settle(promise: DurablePromise, now: int) -> DurablePromise:
    """Apply a lazy timeout: a pending promise past its timeout completes.

    A regular promise becomes REJECTED_TIMEDOUT, a timer RESOLVED, both with
    ``completed_on`` equal to the timeout and an empty value, as the server does.
    :returns: the promise, unchanged when nothing was due.
    """
    if promise.state is not State.PENDING or now < promise.timeout:
        return promise
    state = State.RESOLVED if promise.timer else State.REJECTED_TIMEDOUT
    return dataclasses.replace(
        promise, state=state, value=EMPTY, completed_on=promise.timeout
    )


def _keys_match(stored: Optional[str], requested: Optional[str]) -> bool:
    # A missing key never matches, not even another missing key.
    return stored is not None and stored == requested


def validate_id(promise_id: Any) -> str:
    """Check a promise id: a non-empty string.

    :raises InvalidRequestError: naming the value otherwise.
    """
    if not isinstance(promise_id, str) or not promise_id:
        raise InvalidRequestError(
            f"promise id must be a non-empty string, not {promise_id!r}"
        )
    return promise_id


def validate_tags(tags: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """Check tags: string keys and string values.

    :raises InvalidRequestError: naming the first bad entry.
    """
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidRequestError(f"tags must be a mapping, not {tags!r}")
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidRequestError(
                f"tag {key!r}: {value!r} must map a string to a string"
            )
    return dict(tags)


def validate_timeout(timeout: Any) -> int:
    """Check an absolute timeout in epoch milliseconds: a whole number >= 0.

    :raises InvalidRequestError: naming the value otherwise.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidRequestError(
            f"timeout must be whole epoch milliseconds >= 0, not {timeout!r}"
        )
    return timeout


def create(
    stored: Optional[DurablePromise],
    new: DurablePromise,
    strict: bool,
    now: int,
) -> Transition:
    """Decide a create of ``new`` over the ``stored`` promise with the same id.

    A duplicate create ignores the request's param, tags and timeout.
    """
    if stored is None:
        return Transition(new, 201, changed=True)

    settled = settle(stored, now)
    changed = settled is not stored
    key = new.idempotency_key_for_create
    duplicate = _keys_match(settled.idempotency_key_for_create, key)
    if duplicate and (settled.pending or not strict):
        return Transition(settled, 200, changed)

    error = PromiseAlreadyExistsError(
        f"promise {settled.id!r} already exists", promise_id=settled.id
    )
    return Transition(settled, 409, changed, error)


def complete(
    stored: Optional[DurablePromise],
    promise_id: str,
    state: State,
    value: Value,
    idempotency_key: Optional[str],
    strict: bool,
    now: int,
) -> Transition:
    """Decide a completion of ``stored`` into ``state`` with ``value``."""
    if state not in COMPLETION_STATES:
        error = InvalidRequestError(
            f"a promise cannot be completed as {state.value!r}",
        )
        return Transition(stored, 400, False, error)
    if stored is None:
        return Transition(None, 404, False, not_found(promise_id))

    settled = settle(stored, now)
    changed = settled is not stored
    if settled.pending:
        done = dataclasses.replace(
            settled,
            state=state,
            value=value,
            idempotency_key_for_complete=idempotency_key,
            completed_on=now,
        )
        return Transition(done, 201, changed=True)

    if _already_answers(settled, state, idempotency_key, strict):
        return Transition(settled, 200, changed)
    return Transition(settled, 403, changed, already_completed(settled))


def _already_answers(
    settled: DurablePromise,
    state: State,
    key: Optional[str],
    strict: bool,
) -> bool:
    # The recorded server answers any non-strict completion of a timed-out
    # promise with the timed-out promise. A timed-out timer is RESOLVED with
    # no completion key, so it refuses every completion (40301).
    if settled.state is State.REJECTED_TIMEDOUT and not strict:
        return True
    same_key = _keys_match(settled.idempotency_key_for_complete, key)
    return same_key and (not strict or settled.state is state)


def not_found(promise_id: str) -> PromiseNotFoundError:
    """The error for a promise id the store does not have."""
    return PromiseNotFoundError(
        f"promise {promise_id!r} not found", promise_id=promise_id
    )


def already_completed(promise: DurablePromise) -> PromiseAlreadyCompletedError:
    """The error for a completion refused because ``promise`` is completed."""
    code, word = _ALREADY_CODES[promise.state]
    return PromiseAlreadyCompletedError(
        f"promise {promise.id!r} is already {word}",
        code=code,
        promise_id=promise.id,
        state=promise.state,
    )


def states_for_filter(state: Optional[str]) -> Optional[FrozenSet[State]]:
    """The states a search's ``state`` filter admits, or None for all.

    ``rejected`` admits canceled and timed-out promises too.
    :raises InvalidRequestError: for anything but pending, resolved, rejected.
    """
    if state is None:
        return None
    word = str(state).lower()
    if word == "pending":
        return frozenset({State.PENDING})
    if word == "resolved":
        return frozenset({State.RESOLVED})
    if word == "rejected":
        return frozenset(
            {State.REJECTED, State.REJECTED_CANCELED, State.REJECTED_TIMEDOUT}
        )
    raise InvalidRequestError(
        f"search state must be pending, resolved or rejected, not {state!r}"
    )


def pattern_regex(pattern: str) -> "re.Pattern[str]":
    """The anchored regular expression for a search pattern: only ``*`` is special."""
    parts: Iterable[str] = (re.escape(part) for part in pattern.split("*"))
    return re.compile("^" + ".*".join(parts) + "$", re.DOTALL)


def pattern_matches(pattern: str, promise_id: str) -> bool:
    """True when ``promise_id`` matches the anchored ``*`` pattern."""
    return pattern_regex(pattern).match(promise_id) is not None
