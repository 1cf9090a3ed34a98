"""The errors resonate_sync raises.

Every error derives from :class:`ResonateError`. Leaves also derive from the
builtin they resemble, so ``except LookupError`` keeps working. Errors carry
fields (``promise_id``, ``state``, ``code``) and pickle with them.

Promise errors mirror the codes of the Resonate server (``../PROTOCOL.md``):
the HTTP status is ``code // 100``.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Dict, Optional, Type

__all__ = [
    "EncodingError",
    "FunctionMismatchError",
    "InvalidRequestError",
    "LockHeldError",
    "LockNotFoundError",
    "NotRegisteredError",
    "PromiseAlreadyCompletedError",
    "PromiseAlreadyExistsError",
    "PromiseCanceledError",
    "PromiseNotFoundError",
    "PromiseTimedOutError",
    "ResonateError",
    "ScheduleAlreadyExistsError",
    "ScheduleNotFoundError",
    "ShutdownError",
    "StoreError",
    "error_for_code",
]


class ResonateError(Exception):
    """The root of every error resonate_sync raises.

    :param message: what went wrong, lower case, showing the value.
    :param code: the Resonate server's five-digit error code, when there is one.
    """

    default_code: Optional[int] = None

    def __init__(self, message: str, *, code: Optional[int] = None, **fields: Any):
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def status_code(self) -> Optional[int]:
        """The HTTP status that goes with :attr:`code`, or None."""
        return None if self.code is None else self.code // 100

    def __reduce__(self) -> Any:
        # Keyword fields do not survive BaseException's default pickling.
        return (_rebuild, (type(self), self.message, self.code, self.fields))

    def __str__(self) -> str:
        return self.message


def _rebuild(
    cls: Type[ResonateError],
    message: str,
    code: Optional[int],
    fields: Dict[str, Any],
) -> Any:
    error = cls.__new__(cls)
    ResonateError.__init__(error, message, code=code, **fields)
    return error


class InvalidRequestError(ResonateError, ValueError):
    """A request the store refuses as malformed (code 40000)."""

    default_code = 40000


class EncodingError(ResonateError, TypeError):
    """A value that cannot be encoded as JSON, or stored data that cannot be decoded."""


class PromiseNotFoundError(ResonateError, LookupError):
    """No promise has the given id (code 40400).

    :ivar promise_id: the id looked up.
    """

    default_code = 40400


class PromiseAlreadyExistsError(ResonateError):
    """A create conflicts with a stored promise (code 40900).

    :ivar promise_id: the id of the stored promise.
    """

    default_code = 40900


class PromiseAlreadyCompletedError(ResonateError):
    """A completion conflicts with the promise's state (codes 40301 to 40304).

    :ivar promise_id: the id of the promise.
    :ivar state: the state the promise is already in.
    """

    default_code = 40301


class PromiseTimedOutError(ResonateError, TimeoutError):
    """The promise of an invocation timed out before it completed.

    Distinct from a rejection: the function did not fail, it ran out of time.
    :ivar promise_id: the id of the promise.
    """


class PromiseCanceledError(ResonateError, concurrent.futures.CancelledError):
    """The promise of an invocation was canceled.

    :ivar promise_id: the id of the promise.
    """


class StoreError(ResonateError):
    """The store could not do its work: the disk, the database or the network failed.

    A store error never completes a promise: the invocation stays pending and
    is recovered later.
    """


class ShutdownError(ResonateError):
    """Resonate shut down before the invocation ended; its promise stays pending.

    :ivar promise_id: the id of the invocation.
    """


class NotRegisteredError(ResonateError, LookupError):
    """No function is registered under the given name.

    :ivar name: the name looked up.
    """


class FunctionMismatchError(ResonateError, RuntimeError):
    """A replayed call is not the call the stored promise was made for.

    Raised when, on a re-run, a child at some position calls a different
    function than the stored child promise names: the program changed.
    :ivar promise_id: the child's id.
    :ivar stored: the function name in the store.
    :ivar called: the function name of the call now.
    """


class LockHeldError(ResonateError):
    """Another execution holds the lock (code 40305)."""

    default_code = 40305


class ScheduleNotFoundError(ResonateError, LookupError):
    """No schedule has the given id (code 40401)."""

    default_code = 40401


class LockNotFoundError(ResonateError, LookupError):
    """No lock is held for the resource by the execution (code 40402)."""

    default_code = 40402


class ScheduleAlreadyExistsError(ResonateError):
    """A schedule create conflicts with a stored schedule (code 40901)."""

    default_code = 40901


_BY_CODE: Dict[int, Type[ResonateError]] = {
    40000: InvalidRequestError,
    40301: PromiseAlreadyCompletedError,
    40302: PromiseAlreadyCompletedError,
    40303: PromiseAlreadyCompletedError,
    40304: PromiseAlreadyCompletedError,
    40305: LockHeldError,
    40400: PromiseNotFoundError,
    40401: ScheduleNotFoundError,
    40402: LockNotFoundError,
    40900: PromiseAlreadyExistsError,
    40901: ScheduleAlreadyExistsError,
}


def error_for_code(code: int, message: str, **fields: Any) -> ResonateError:
    """Build the error that goes with a Resonate server error code.

    :param code: the five-digit code, as in ``{"error": {"code": ...}}``.
    :param message: the message to carry.
    :returns: an instance of the matching leaf, or :class:`ResonateError`.
    """
    cls = _BY_CODE.get(code, ResonateError)
    return cls(message, code=code, **fields)
