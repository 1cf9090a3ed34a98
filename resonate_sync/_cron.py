"""Cron expressions: validation and the times they name, in UTC epoch milliseconds.

Pure: no I/O, no clock. An expression has 5 fields, or 6 with leading seconds,
as the Resonate server takes them; times are UTC, as on the server. Parsing
and stepping are cronsim's.
"""

from __future__ import annotations

import datetime
from typing import Iterator

import cronsim

from .exceptions import InvalidRequestError

__all__ = ["latest_at_or_before", "next_after", "validate"]

_UTC = datetime.timezone.utc


def validate(cron: str) -> str:
    """Check that ``cron`` is an expression that fires at least once.

    :returns: ``cron`` unchanged.
    :raises InvalidRequestError: naming the expression.
    """
    next_after(cron, 0)
    return cron


def next_after(cron: str, after_ms: int) -> int:
    """The first time strictly after ``after_ms`` that ``cron`` names.

    :raises InvalidRequestError: naming the expression.
    """
    for tick in _ticks(cron, after_ms, reverse=False):
        if tick > after_ms:
            return tick
    raise _invalid(cron, "it never fires")  # pragma: no cover - cronsim ends first


def latest_at_or_before(cron: str, at_ms: int) -> int:
    """The last time at or before ``at_ms`` that ``cron`` names.

    :raises InvalidRequestError: naming the expression.
    """
    # cronsim steps back from the whole second it starts on, so start one
    # second late and skip what lies after ``at_ms``: at most one tick.
    for tick in _ticks(cron, at_ms + 1000, reverse=True):
        if tick <= at_ms:
            return tick
    raise _invalid(cron, "it never fires")  # pragma: no cover - cronsim ends first


def _ticks(cron: str, start_ms: int, reverse: bool) -> Iterator[int]:
    if not isinstance(cron, str):
        raise _invalid(cron, "it is not a string")
    start = datetime.datetime.fromtimestamp(start_ms / 1000, _UTC)
    try:
        for tick in cronsim.CronSim(cron, start, reverse=reverse):
            yield int(tick.timestamp() * 1000)
    except cronsim.CronSimError as err:
        raise _invalid(cron, str(err).lower()) from err
    except (StopIteration, ValueError, OverflowError) as err:
        raise _invalid(cron, "it never fires") from err


def _invalid(cron: object, reason: str) -> InvalidRequestError:
    return InvalidRequestError(f"cron expression {cron!r} is not valid: {reason}")
