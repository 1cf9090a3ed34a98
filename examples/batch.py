"""Summarize every Python source file under a directory, durably.

One durable child invocation per file, and a summary at the end. Kill the job
at any moment (even with SIGKILL) and run the same command again: files that
were already analyzed return their stored results instead of being read again,
and the summary is the same as an uninterrupted run's.

    python examples/batch.py                 # the standard library's sources
    python examples/batch.py path/to/dir --db jobs.db -v

With ``RESONATE_URL`` set (and no ``--db``), promises live on that Resonate
server instead of a SQLite file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import sysconfig
from typing import Any, Dict, List

from resonate_sync import Context, Resonate, SQLiteStore

_SKIPPED = {"site-packages", "dist-packages", "__pycache__"}
_DEFINITION = re.compile(rb"^\s*(?:async\s+)?(def|class)\s", re.MULTILINE)

#: Print each file as it is analyzed (``-v``); not part of any invocation's
#: arguments, so a re-run may turn it on or off.
VERBOSE = False


def list_sources(ctx: Context, directory: str) -> List[str]:
    """Every ``.py`` file under ``directory``, relative and sorted.

    A durable step of its own: a re-run gets the same list back from the
    store, so each file keeps its position (and its child id) even if the
    directory changed in between.
    """
    found = []
    for root, dirs, files in os.walk(directory):
        # Installed packages live inside the standard library's directory.
        dirs[:] = sorted(name for name in dirs if name not in _SKIPPED)
        for name in files:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def analyze(ctx: Context, directory: str, path: str) -> Dict[str, Any]:
    """Count the lines, bytes, functions and classes of one file."""
    with open(os.path.join(directory, path), "rb") as source:
        data = source.read()
    kinds = [match.group(1) for match in _DEFINITION.finditer(data)]
    if VERBOSE:
        # One write per line: print() writes the newline separately, and
        # lines from several threads would interleave.
        sys.stderr.write(f"analyzed {path}\n")
    return {
        "path": path,
        "lines": data.count(b"\n"),
        "bytes": len(data),
        "functions": kinds.count(b"def"),
        "classes": kinds.count(b"class"),
    }


def summarize(ctx: Context, directory: str) -> Dict[str, Any]:
    """Analyze every file in its own durable child, then total the results."""
    paths = ctx.run(list_sources, directory)
    handles = [ctx.invoke_local(analyze, directory, path) for path in paths]
    results = [handle.result() for handle in handles]
    largest = sorted(results, key=lambda result: (-result["lines"], result["path"]))
    return {
        "directory": directory,
        "files": len(results),
        "lines": sum(result["lines"] for result in results),
        "bytes": sum(result["bytes"] for result in results),
        "functions": sum(result["functions"] for result in results),
        "classes": sum(result["classes"] for result in results),
        "largest": [[result["path"], result["lines"]] for result in largest[:5]],
    }


def print_summary(summary: Dict[str, Any]) -> None:
    """Print the summary as a short report."""
    print(f"Summary of {summary['directory']}")
    print(f"  files:     {summary['files']:>10,}")
    print(f"  lines:     {summary['lines']:>10,}")
    print(f"  bytes:     {summary['bytes']:>10,}")
    print(f"  functions: {summary['functions']:>10,}")
    print(f"  classes:   {summary['classes']:>10,}")
    print("  largest files:")
    for path, lines in summary["largest"]:
        print(f"    {lines:>8,}  {path}")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "directory", nargs="?", default=sysconfig.get_paths()["stdlib"],
        help="directory to summarize (default: the standard library's sources)",
    )
    parser.add_argument("--db", help="SQLite file for the promises (default: resonate.db)")
    parser.add_argument("--id", help="job id (default: derived from the directory)")
    parser.add_argument("--workers", type=int, default=8, help="threads (default: 8)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each file analyzed")
    args = parser.parse_args(argv)

    directory = os.path.abspath(args.directory)
    if not os.path.isdir(directory):
        parser.error(f"not a directory: {directory!r}")
    store = SQLiteStore(args.db) if args.db else None
    job_id = args.id or f"summarize:{directory}"

    global VERBOSE
    VERBOSE = args.verbose
    with Resonate(store, max_workers=args.workers) as resonate:
        resonate.register(list_sources)
        resonate.register(analyze)
        resonate.register(summarize)
        print_summary(resonate.run(summarize, job_id, directory))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
