"""Retry policies: immutable values that compute delays and never sleep.

``policy.delay(attempt)`` answers how long to wait after the ``attempt``-th
failed attempt (counting from 1), or None when no attempt is left. The runtime
does the waiting, and never past the promise's timeout.

The default is :class:`Exponential`: 0.1 s, doubling, at most 30 s apart, at
most 10 attempts (about 50 s of waiting in all when every attempt fails).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, Mapping, Optional, Union

from .exceptions import InvalidRequestError

__all__ = [
    "Constant",
    "Exponential",
    "Linear",
    "Never",
    "RetryPolicy",
    "policy_from_json",
]


def _check(name: str, value: Any, minimum: float, kinds: Any = (int, float)) -> None:
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "a whole number" if kinds is int else "a number"
        raise InvalidRequestError(f"{name} must be {kind}, not {value!r}")
    # Infinity is refused with NaN: a policy is stored as JSON, which has neither.
    if not value >= minimum or (isinstance(value, float) and math.isinf(value)):
        raise InvalidRequestError(
            f"{name} must be finite and >= {minimum}, not {value!r}"
        )


@dataclasses.dataclass(frozen=True)
class _Policy:
    max_attempts: Optional[int] = 10

    def __post_init__(self) -> None:
        if self.max_attempts is not None:
            _check("max_attempts", self.max_attempts, 1, int)
        for field in dataclasses.fields(self):
            if field.name != "max_attempts":
                _check(field.name, getattr(self, field.name), 0)

    def delay(self, attempt: int) -> Optional[float]:
        """Seconds to wait after failed attempt number ``attempt``, or None to stop.

        :param attempt: how many attempts have failed so far, from 1.
        """
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        return self._delay(attempt)

    def _delay(self, attempt: int) -> float:
        raise NotImplementedError

    def to_json(self) -> Dict[str, Any]:
        """The policy as JSON, stored with an invocation's promise."""
        return dict(_policy_json(self))


@dataclasses.dataclass(frozen=True)
class Exponential(_Policy):
    """Wait ``initial_delay * factor ** (attempt - 1)``, at most ``max_delay``.

    :param initial_delay: seconds before the second attempt.
    :param factor: growth per attempt.
    :param max_delay: the longest wait between two attempts, in seconds.
    :param max_attempts: attempts in all, None for as many as the timeout allows.
    """

    initial_delay: float = 0.1
    factor: float = 2.0
    max_delay: float = 30.0

    def _delay(self, attempt: int) -> float:
        # Cap the exponent so a huge attempt count cannot overflow a float.
        exponent = min(attempt - 1, 1024)
        try:
            grown = self.initial_delay * self.factor**exponent
        except OverflowError:
            return float(self.max_delay)
        return float(min(grown, self.max_delay))


@dataclasses.dataclass(frozen=True)
class Linear(_Policy):
    """Wait ``increment * attempt`` seconds: 1x, 2x, 3x...

    :param increment: seconds added per attempt.
    :param max_attempts: attempts in all, None for as many as the timeout allows.
    """

    increment: float = 1.0

    def _delay(self, attempt: int) -> float:
        return float(self.increment * attempt)


@dataclasses.dataclass(frozen=True)
class Constant(_Policy):
    """Wait the same ``interval`` between attempts.

    :param interval: seconds between two attempts.
    :param max_attempts: attempts in all, None for as many as the timeout allows.
    """

    interval: float = 1.0

    def _delay(self, attempt: int) -> float:
        return float(self.interval)


@dataclasses.dataclass(frozen=True)
class Never(_Policy):
    """Make one attempt only: the first failure rejects the promise."""

    max_attempts: Optional[int] = 1

    def _delay(self, attempt: int) -> float:
        return 0.0


@functools.lru_cache(maxsize=256)
def _policy_json(policy: _Policy) -> Dict[str, Any]:
    # Every invocation stores its policy: compute each distinct one once.
    fields = {
        field.name: getattr(policy, field.name) for field in dataclasses.fields(policy)
    }
    return {"type": type(policy).__name__.lower(), **fields}


RetryPolicy = Union[Exponential, Linear, Constant, Never]

_BY_TYPE = {cls.__name__.lower(): cls for cls in (Exponential, Linear, Constant, Never)}


def policy_from_json(body: Mapping[str, Any]) -> RetryPolicy:
    """Rebuild a policy stored by ``to_json``.

    :raises InvalidRequestError: when the type or a field is unknown.
    """
    fields = dict(body)
    kind = fields.pop("type", None)
    cls = _BY_TYPE.get(str(kind))
    if cls is None:
        raise InvalidRequestError(f"unknown retry policy type {kind!r}")
    try:
        return cls(**fields)
    except TypeError as err:
        raise InvalidRequestError(f"bad retry policy {body!r}: {err}") from err
