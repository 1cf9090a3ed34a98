"""Options of an invocation, and their defaults.

A field left as None inherits: from the defaults given to ``register``, then
from the defaults below. So ``Options(tags={...})`` changes the tags alone.

===================  =================================================
``timeout``          24 hours, relative; the promise stores it absolute
``retry_policy``     ``Exponential()``: 0.1 s doubling to 30 s, 10 attempts
``tags``             none (the runtime adds its own ``resonate:`` tags)
``idempotency_key``  the invocation id itself
``non_retryable``    none: every exception is retried by the policy
``durable``          True; False runs a child with retries but no promise
===================  =================================================
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Tuple, Type, cast

from .exceptions import InvalidRequestError
from .promise import validate_tags
from .retry import Exponential, RetryPolicy, _Policy

__all__ = ["DEFAULT_TIMEOUT", "Options"]

#: Seconds an invocation may take when no timeout is given.
DEFAULT_TIMEOUT = 24 * 60 * 60.0


@dataclasses.dataclass(frozen=True)
class Options:
    """How one invocation runs. Immutable; fields left None inherit.

    :param timeout: seconds from now until the promise times out.
    :param retry_policy: when to try again after the function raises.
    :param tags: string tags stored on the promise.
    :param idempotency_key: the create key; defaults to the invocation id.
    :param non_retryable: exception types that reject the promise at once.
    :param durable: False runs a child with retries but writes no promise.
    """

    timeout: Optional[float] = None
    retry_policy: Optional[RetryPolicy] = None
    tags: Optional[Mapping[str, str]] = None
    idempotency_key: Optional[str] = None
    non_retryable: Optional[Tuple[Type[BaseException], ...]] = None
    durable: Optional[bool] = None

    def __post_init__(self) -> None:
        _check_timeout(self.timeout)
        if self.retry_policy is not None and not isinstance(self.retry_policy, _Policy):
            raise InvalidRequestError(
                f"retry_policy must be a retry policy, not {self.retry_policy!r}"
            )
        if self.tags is not None:
            object.__setattr__(self, "tags", validate_tags(self.tags))
        if self.non_retryable is not None:
            object.__setattr__(self, "non_retryable", _check_types(self.non_retryable))
        _check_key(self.idempotency_key)
        if self.durable is not None and not isinstance(self.durable, bool):
            raise InvalidRequestError(
                f"durable must be True or False, not {self.durable!r}"
            )

    def merged(self, over: Optional["Options"]) -> "Options":
        """These options with every field that ``over`` sets replaced."""
        if over is None:
            return self
        changes = {
            field.name: getattr(over, field.name)
            for field in dataclasses.fields(over)
            if getattr(over, field.name) is not None
        }
        return dataclasses.replace(self, **changes)

    def resolved(self) -> "Options":
        """These options with every unset field given its default."""
        return dataclasses.replace(
            self,
            timeout=DEFAULT_TIMEOUT if self.timeout is None else self.timeout,
            retry_policy=self.retry_policy or Exponential(),
            tags=self.tags or {},
            non_retryable=self.non_retryable or (),
            durable=True if self.durable is None else self.durable,
        )


def _check_timeout(timeout: Any) -> None:
    if timeout is None:
        return
    bad_type = isinstance(timeout, bool) or not isinstance(timeout, (int, float))
    if bad_type or not timeout > 0 or math.isinf(timeout):
        raise InvalidRequestError(
            f"timeout must be a finite number of seconds > 0, not {timeout!r}"
        )


def _check_types(types: Any) -> Tuple[Type[BaseException], ...]:
    if isinstance(types, type):
        types = (types,)
    types = tuple(types)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise InvalidRequestError(
                f"non_retryable must hold exception types, not {item!r}"
            )
    return cast(Tuple[Type[BaseException], ...], types)


def _check_key(key: Any) -> None:
    if key is not None and (not isinstance(key, str) or not key):
        raise InvalidRequestError(
            f"idempotency_key must be a non-empty string, not {key!r}"
        )
