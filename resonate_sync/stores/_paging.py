"""One page of a SQLite search, shared by the promises and schedules tables.

Rows match an id GLOB pattern, any extra conditions and every tag, and come
newest first by ``(sort_id, id)``; a page starts after the row named by the
query's ``before``, so paging never skips or repeats a row.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Dict, List, Sequence

__all__ = ["page"]


def page(
    connection: sqlite3.Connection,
    select: str,
    table: str,
    glob: str,
    query: Dict[str, Any],
    where: Sequence[str] = (),
    where_params: Sequence[Any] = (),
) -> List[Any]:
    """The rows of one page: ``select`` filtered, ordered and limited."""
    sql = [f"{select} WHERE id GLOB ?", *where]
    params: List[Any] = [glob, *where_params]
    for key, value in sorted(query["tags"].items()):
        sql.append(
            f"AND EXISTS (SELECT 1 FROM json_each({table}.tags)"
            " WHERE json_each.key = ? AND json_each.value = ?)"
        )
        params.extend([key, value])
    if query.get("before") is not None:
        sql.append("AND (sort_id, id) < (?, ?)")
        params.extend(query["before"])
    sql.append("ORDER BY sort_id DESC, id DESC LIMIT ?")
    params.append(query["limit"])
    return connection.execute(" ".join(sql), params).fetchall()
