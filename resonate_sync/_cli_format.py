"""How ``resonate-sync`` shows promises, schedules and invocation trees.

Pure: every function takes what it shows, and ``now`` where time matters,
and returns text or JSON-ready values. Times are shown in UTC.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import encoding
from .exceptions import ResonateError
from .promise import DurablePromise, Value
from .stores.base import Schedule

__all__ = [
    "Node",
    "duration",
    "function_of",
    "promise_lines",
    "schedule_lines",
    "table",
    "timestamp",
    "tree_json",
    "tree_lines",
]

#: An invocation and its children, as ``tree`` draws it.
#: Its children are Nodes again.
Node = Tuple[DurablePromise, List[Any]]


def timestamp(epoch_ms: Optional[int]) -> str:
    """``2024-01-01 00:00:00Z``, or ``-`` for no time."""
    if epoch_ms is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.timezone.utc)
    return f"{moment:%Y-%m-%d %H:%M:%S}Z"


def duration(milliseconds: int) -> str:
    """``850ms``, ``12.3s``, ``4m05s`` or ``2h03m``."""
    milliseconds = max(0, int(milliseconds))
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, second = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{second:02d}s"
    hours, minute = divmod(minutes, 60)
    return f"{hours}h{minute:02d}m"


def shown_value(value: Value) -> str:
    """A param or value as JSON text; data that is not JSON as raw base64."""
    if not value.data:
        return "-"
    try:
        return json.dumps(encoding.decode_value(value), ensure_ascii=False)
    except (ResonateError, ValueError):
        return f"(base64) {value.data}"


def function_of(promise: DurablePromise) -> str:
    """The function an invocation's promise names in its param, or ``""``."""
    try:
        body = encoding.decode_value(promise.param)
    except (ResonateError, ValueError):
        return ""
    return str(body.get("func", "")) if isinstance(body, dict) else ""


def promise_lines(promise: DurablePromise, now: int) -> List[str]:
    """The ``promises get`` view: one field per line."""
    tags = ", ".join(f"{key}={value}" for key, value in sorted(promise.tags.items()))
    fields = [
        ("id", promise.id),
        ("state", promise.state.value),
        ("created", timestamp(promise.created_on)),
        ("completed", timestamp(promise.completed_on)),
        ("duration", _so_far(promise, now)),
        ("timeout", timestamp(promise.timeout)),
        ("tags", tags or "-"),
        ("param", shown_value(promise.param)),
        ("value", shown_value(promise.value)),
    ]
    return [f"{name:<10} {value}" for name, value in fields]


def schedule_lines(schedule: Schedule) -> List[str]:
    """The one-schedule view: one field per line."""
    fields = [
        ("id", schedule.id),
        ("cron", f"{schedule.cron} (UTC)"),
        ("next run", timestamp(schedule.next_run_time)),
        ("last run", timestamp(schedule.last_run_time)),
        ("promise", schedule.promise_id or "-"),
        ("param", shown_value(schedule.promise_param)),
    ]
    return [f"{name:<9} {value}" for name, value in fields]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    ]


def tree_lines(root: Node, now: int) -> List[str]:
    """The invocation tree, one promise per line, children indented below."""
    lines = [_label(root[0], now)]
    _draw_children(root[1], "", now, lines)
    return lines


def tree_json(node: Node, now: int) -> Dict[str, Any]:
    """The invocation tree as nested JSON objects."""
    promise, children = node
    return {
        "id": promise.id,
        "state": promise.state.value,
        "function": function_of(promise) or None,
        "createdOn": promise.created_on,
        "completedOn": promise.completed_on,
        "durationMs": _elapsed(promise, now),
        "children": [tree_json(child, now) for child in children],
    }


def _draw_children(
    children: List[Node], indent: str, now: int, lines: List[str]
) -> None:
    for number, (promise, grandchildren) in enumerate(children, 1):
        last = number == len(children)
        lines.append(f"{indent}{'└── ' if last else '├── '}{_label(promise, now)}")
        deeper = indent + ("    " if last else "│   ")
        _draw_children(grandchildren, deeper, now, lines)


def _label(promise: DurablePromise, now: int) -> str:
    function = function_of(promise)
    parts = [promise.id, function, _state(promise, now)]
    return "  ".join(part for part in parts if part)


def _state(promise: DurablePromise, now: int) -> str:
    shown = "running" if promise.pending else promise.state.value
    return f"{shown} {duration(_elapsed(promise, now))}"


def _so_far(promise: DurablePromise, now: int) -> str:
    shown = duration(_elapsed(promise, now))
    return f"{shown} so far" if promise.pending else shown


def _elapsed(promise: DurablePromise, now: int) -> int:
    end = now if promise.completed_on is None else promise.completed_on
    return max(0, end - promise.created_on)
