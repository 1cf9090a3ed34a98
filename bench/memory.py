"""Memory over a long batch: does it stay flat once results are consumed?

    python3 bench/memory.py [--count 1000000] [--window 1000] [--every 100000]

Starts ``--count`` durable invocations in windows of ``--window`` (start a
window with ``invoke_local``, then consume every result), on a fresh SQLite
file, and prints the process's resident memory every ``--every`` invocations.
Run by hand, not in the test suite.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from typing import List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resonate_sync import Context, Resonate, SQLiteStore  # noqa: E402


def work(ctx: Context, number: int) -> int:
    return number * 2


def resident_mib() -> float:
    """This process's resident set size in MiB (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100_000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(os.path.join(directory, "memory.db"))
        with Resonate(store, max_workers=8) as resonate:
            resonate.register(work)
            start = time.perf_counter()
            print(f"{0:>10,} invocations  {resident_mib():8.1f} MiB")
            for first in range(0, args.count, args.window):
                numbers = range(first, min(first + args.window, args.count))
                handles = [resonate.invoke_local(work, f"m{n}", n) for n in numbers]
                assert [handle.result() for handle in handles] == [
                    n * 2 for n in numbers
                ]
                done = numbers[-1] + 1
                if done % args.every == 0 or done == args.count:
                    gc.collect()
                    rate = done / (time.perf_counter() - start)
                    print(
                        f"{done:>10,} invocations  {resident_mib():8.1f} MiB  {rate:,.0f}/s"
                    )
            size = os.path.getsize(os.path.join(directory, "memory.db")) / 2**20
            print(f"database file: {size:,.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
