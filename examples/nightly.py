"""A nightly report, run by a durable schedule.

    python examples/nightly.py                   # a report at 02:00 UTC each night
    python examples/nightly.py --every-minute    # see it fire: a report each minute
    python examples/nightly.py --cron "*/5 * * * * *" --runs 2   # every 5 s, twice

Each run measures a directory (a durable step) and appends one line to a
report file (another). The schedule is stored with the promises, so it
outlives this process: start it again, or start several processes on the same
file or server, and each run still happens once. While no process runs, the
runs are missed; the next process to start fires the latest missed one only.

Look at it from another terminal with the CLI::

    resonate-sync schedules list
    resonate-sync promises search "nightly-report.*"
    resonate-sync tree nightly-report.<run time>

Cron times are UTC. With ``RESONATE_URL`` set (and no ``--db``), the schedule
lives on that Resonate server, which fires it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import threading
from typing import Any, Dict, List

from resonate_sync import Context, Resonate, ResonateError, SQLiteStore

NIGHTLY = "0 2 * * *"

#: Set once this process has run the number of reports ``--runs`` asks for.
ENOUGH = threading.Event()
_runs: List[str] = []
_wanted = 0


def measure(ctx: Context, directory: str) -> Dict[str, Any]:
    """Count the files and bytes under ``directory``."""
    files = size = 0
    for root, _, names in os.walk(directory):
        for name in names:
            try:
                size += os.path.getsize(os.path.join(root, name))
                files += 1
            except OSError:  # removed while we walked
                pass
    return {"directory": directory, "files": files, "bytes": size}


def append_line(ctx: Context, report: str, line: str) -> str:
    """Append one line to the report file; returns the line."""
    with open(report, "a", encoding="utf-8") as output:
        output.write(line + "\n")
    return line


def nightly_report(ctx: Context, directory: str, report: str) -> str:
    """One run: measure, then write. A run re-run after a crash skips done steps."""
    sizes = ctx.run(measure, directory)
    run_ms = int(ctx.invocation_id.rsplit(".", 1)[-1])
    when = datetime.datetime.fromtimestamp(run_ms / 1000, datetime.timezone.utc)
    counts = f"{sizes['files']:,} files, {sizes['bytes']:,} bytes"
    line = f"{when:%Y-%m-%d %H:%M:%S}Z  {counts}"
    ctx.run(append_line, report, line)
    _count(ctx.invocation_id, line)
    return line


def _count(run_id: str, line: str) -> None:
    print(f"{run_id}: {line}", flush=True)
    _runs.append(run_id)
    if _wanted and len(_runs) >= _wanted:
        ENOUGH.set()


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--every-minute", action="store_true", help="fire each minute")
    when.add_argument("--cron", help="a cron expression: 5 fields, or 6 with seconds")
    parser.add_argument("--name", help="schedule id (default: from the cron)")
    parser.add_argument("--directory", default=".", help="what to measure (default: .)")
    parser.add_argument("--report", default="report.txt", help="file to append to")
    parser.add_argument("--db", help="SQLite file (default: resonate.db)")
    parser.add_argument(
        "--runs", type=int, default=0,
        help="exit after N runs here (default 0: run until interrupted)",
    )
    args = parser.parse_args(argv)

    cron = "* * * * *" if args.every_minute else args.cron or NIGHTLY
    name = args.name or _default_name(cron)
    global _wanted
    _wanted = args.runs
    store = SQLiteStore(args.db) if args.db else None
    with Resonate(store, recovery_interval=1.0) as resonate:
        for step in (measure, append_line, nightly_report):
            resonate.register(step)
        try:
            schedule = resonate.schedule(
                name, cron, nightly_report,
                os.path.abspath(args.directory), os.path.abspath(args.report),
            )
        except ResonateError as err:
            print(f"nightly.py: {err}", file=sys.stderr)
            return 2
        _announce(schedule.id, cron, schedule.next_run_time)
        resonate.start()
        return _wait()


def _default_name(cron: str) -> str:
    if cron == NIGHTLY:
        return "nightly-report"
    return "every-minute-report" if cron == "* * * * *" else "custom-report"


def _announce(name: str, cron: str, next_run: Any) -> None:
    shown = "by the server"
    if next_run:
        at = datetime.datetime.fromtimestamp(next_run / 1000, datetime.timezone.utc)
        shown = f"{at:%Y-%m-%d %H:%M:%S}Z"
    print(f"schedule {name!r} ({cron}, UTC): next run {shown}; Ctrl-C to stop")
    sys.stdout.flush()


def _wait() -> int:
    try:
        while not ENOUGH.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
