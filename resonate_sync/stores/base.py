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
from typing import Any, List, Mapping, NamedTuple, Optional, Protocol

from ..exceptions import InvalidRequestError
from ..promise import EMPTY, DurablePromise, State, Value

__all__ = ["Lock", "PromiseStore", "SearchPage", "Written", "validate_value"]


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
