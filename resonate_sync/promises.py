"""``resonate.promises``: durable promises by id, with Python values.

Values go in and out as JSON (see :mod:`resonate_sync.encoding`); times are
seconds here and epoch milliseconds in the store.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

from . import encoding
from .exceptions import InvalidRequestError
from .options import DEFAULT_TIMEOUT
from .promise import EMPTY, DurablePromise, State, Value
from .stores.base import PromiseStore

__all__ = ["Promises"]


class Promises:
    """Create, read, complete and search durable promises. Thread-safe.

    Every call blocks until the store has answered.
    """

    def __init__(
        self,
        store: PromiseStore,
        clock: Callable[[], float],
        on_complete: Optional[Callable[[DurablePromise], None]] = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_complete = on_complete

    def get(self, promise_id: str) -> DurablePromise:
        """Read a promise (timing it out first if its timeout has passed).

        :raises PromiseNotFoundError: when there is no such promise.
        """
        return self._store.get(promise_id)

    def create(
        self,
        promise_id: str,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        param: Any = None,
        tags: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        strict: bool = False,
    ) -> DurablePromise:
        """Create a pending promise that times out ``timeout`` seconds from now.

        :param param: a JSON value stored as the promise's param.
        :raises PromiseAlreadyExistsError: when the id is taken by another create.
        :raises EncodingError: when ``param`` is not JSON.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise InvalidRequestError(f"timeout must be seconds > 0, not {timeout!r}")
        if not timeout > 0:
            raise InvalidRequestError(f"timeout must be seconds > 0, not {timeout!r}")
        data = EMPTY if param is None else encoding.encode_value(param, "param")
        deadline = int((self._clock() + timeout) * 1000)
        written = self._store.create(
            promise_id,
            deadline,
            param=data,
            tags=tags,
            idempotency_key=idempotency_key,
            strict=strict,
        )
        return written.promise

    def resolve(
        self, promise_id: str, value: Any = None, **keys: Any
    ) -> DurablePromise:
        """Resolve a promise with a JSON value.

        Takes ``idempotency_key`` and ``strict`` like the store.
        :raises PromiseAlreadyCompletedError: when it is already completed.
        :raises PromiseNotFoundError: when there is no such promise.
        """
        return self._complete(promise_id, State.RESOLVED, _value(value), keys)

    def reject(self, promise_id: str, error: Any = None, **keys: Any) -> DurablePromise:
        """Reject a promise with an exception (raised again by waiters) or a JSON value.

        :raises PromiseAlreadyCompletedError: when it is already completed.
        """
        if isinstance(error, BaseException):
            data = encoding.encode_error(error)
        else:
            data = _value(error)
        return self._complete(promise_id, State.REJECTED, data, keys)

    def cancel(self, promise_id: str, value: Any = None, **keys: Any) -> DurablePromise:
        """Cancel a promise; its waiters raise :class:`PromiseCanceledError`.

        :raises PromiseAlreadyCompletedError: when it is already completed.
        """
        return self._complete(promise_id, State.REJECTED_CANCELED, _value(value), keys)

    def search(
        self,
        pattern: str = "*",
        *,
        state: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
    ) -> Iterator[DurablePromise]:
        """Every promise whose id matches ``pattern``, newest first, paged lazily.

        ``*`` is the only wildcard and the pattern is anchored. ``state`` is
        pending, resolved or rejected; ``limit`` is the page size (1 to 100).
        """
        page = self._store.search(pattern, state=state, tags=tags, limit=limit)
        while True:
            yield from page.promises
            if page.cursor is None:
                return
            page = self._store.search(cursor=page.cursor)

    def value(self, promise: DurablePromise) -> Any:
        """The JSON value a promise was resolved (or rejected) with, decoded."""
        return encoding.decode_value(promise.value, f"value of {promise.id!r}")

    def _complete(
        self, promise_id: str, state: State, value: Value, keys: Mapping[str, Any]
    ) -> DurablePromise:
        promise = self._store.complete(promise_id, state, value=value, **keys).promise
        if self._on_complete is not None:
            self._on_complete(promise)  # wakes this process's waiters at once
        return promise


def _value(value: Any) -> Value:
    return EMPTY if value is None else encoding.encode_value(value)
