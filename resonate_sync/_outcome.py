"""Outcomes: what a completed promise means to the Python code waiting on it.

A resolved promise gives its value, decoded from JSON; a rejected one raises
the exception stored in it; a canceled one raises
:class:`~resonate_sync.exceptions.PromiseCanceledError` and a timed-out one
:class:`~resonate_sync.exceptions.PromiseTimedOutError`.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any, Tuple

from . import encoding
from .exceptions import (
    EncodingError,
    PromiseCanceledError,
    PromiseTimedOutError,
    StoreError,
)
from .promise import DurablePromise, State, Value

__all__ = ["encode_outcome", "outcome_future", "settle", "settle_volatile"]

logger = logging.getLogger(__name__)


def encode_outcome(
    promise_id: str, function: str, state: State, result: Any
) -> Tuple[State, Value]:
    """The state and value that complete a promise with a function's outcome.

    A value that is not JSON rejects the promise with the EncodingError; a
    PromiseCanceledError (the invocation or its root was canceled) cancels it.
    """
    if state is State.REJECTED:
        if isinstance(result, PromiseCanceledError):
            return State.REJECTED_CANCELED, encoding.encode_error(result)
        return state, encoding.encode_error(result)
    try:
        return state, encoding.encode_value(result, f"value returned by {function!r}")
    except EncodingError as err:
        logger.error("invocation %r returned a value that is not JSON", promise_id)
        return State.REJECTED, encoding.encode_error(err)


def outcome_future(promise: DurablePromise) -> "concurrent.futures.Future[Any]":
    """A future already settled with a completed promise's outcome."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    settle(future, promise)
    return future


def settle(future: "concurrent.futures.Future[Any]", promise: DurablePromise) -> None:
    """Settle ``future`` with a completed promise's outcome (once; later calls are ignored)."""
    if future.done():
        return
    try:
        value = outcome(promise)
    except BaseException as error:
        future.set_exception(error)
    else:
        future.set_result(value)


def outcome(promise: DurablePromise) -> Any:
    """The value of a completed promise, or raise what it stands for."""
    if promise.state is State.RESOLVED:
        return encoding.decode_value(promise.value, f"value of {promise.id!r}")
    if promise.state is State.REJECTED:
        raise encoding.decode_error(promise.value)
    if promise.state is State.REJECTED_CANCELED:
        raise PromiseCanceledError(
            f"promise {promise.id!r} was canceled", promise_id=promise.id
        )
    if promise.state is State.REJECTED_TIMEDOUT:
        raise PromiseTimedOutError(
            f"promise {promise.id!r} timed out", promise_id=promise.id
        )
    raise StoreError(f"promise {promise.id!r} is still pending")


def settle_volatile(
    future: "concurrent.futures.Future[Any]", state: State, result: Any
) -> None:
    """Settle the future of a child that has no promise with what it computed."""
    if state is State.RESOLVED:
        future.set_result(result)
    else:
        future.set_exception(result)
