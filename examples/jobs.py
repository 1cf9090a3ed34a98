"""The work behind the web examples: a durable job with two children.

``summarize(text, delay)`` counts the words of ``text`` (a durable child),
sleeps ``delay`` seconds durably, then records the count (a second child that
appends a line to the file named by ``JOBS_LOG``, if set) and returns a
summary. Input that is not text rejects the job at once, with no retries.

``create_resonate()`` picks the store from the environment: a SQLite file
named by ``RESONATE_DB``, else the server at ``RESONATE_URL``, else
``resonate.db`` in the working directory. Every worker process of a web app
must use the same store, so that any of them can answer for any job.
"""

from __future__ import annotations

import os
from typing import Any, Dict

from resonate_sync import Context, Resonate, SQLiteStore


def count_words(ctx: Context, text: str) -> int:
    return len(text.split())


def record(ctx: Context, job_id: str, words: int) -> None:
    log = os.environ.get("JOBS_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as file:
            file.write(f"{job_id} {words} {os.getpid()}\n")


def summarize(ctx: Context, text: Any, delay: Any = 0) -> Dict[str, Any]:
    if not isinstance(text, str):
        raise ValueError(f"input must be a string, not {text!r}")
    if not isinstance(delay, (int, float)) or not 0 <= delay <= 3600:
        raise ValueError(f"delay must be 0 to 3600 seconds, not {delay!r}")

    words = ctx.run(count_words, text)
    if delay:
        ctx.sleep(delay)  # durable: a restarted worker does not sleep again
    ctx.run(record, ctx.invocation_id, words)
    return {"words": words, "characters": len(text)}


def create_resonate() -> Resonate:
    """A Resonate on the store the environment names, with ``summarize`` registered."""
    database = os.environ.get("RESONATE_DB")
    resonate = Resonate(SQLiteStore(database) if database else None)
    resonate.register(summarize, non_retryable=(ValueError,))
    return resonate
