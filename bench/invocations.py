"""Durable invocations a second on the SQLite store. Run by hand, not in tests.

    python3 bench/invocations.py [--count 10000] [--grow 200000] [--threads 8]

Reports, each on a fresh database file in a temporary directory:

- one at a time: ``resonate.run(...)`` in a loop, and
  ``invoke_local(...).result()`` in a loop (the pool hop included);
- a burst: ``--count`` invocations started by ``--threads`` threads at once,
  then every result awaited;
- growth: the one-at-a-time rate measured again as the store grows to
  ``--grow`` promises, to show whether the cost stays flat.

Every invocation is durable: its promise is committed before it starts and
its result is committed before ``result()`` returns.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from typing import Callable, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resonate_sync import Context, Resonate, SQLiteStore  # noqa: E402


def add(ctx: Context, a: int, b: int) -> int:
    return a + b


def _fresh(directory: str, name: str, workers: int) -> Resonate:
    resonate = Resonate(SQLiteStore(os.path.join(directory, name)), max_workers=workers)
    resonate.register(add)
    return resonate


def _rate(count: int, work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def one_at_a_time(resonate: Resonate, prefix: str, count: int) -> float:
    """``resonate.run`` in a loop: the caller runs each function itself."""

    def work() -> None:
        for number in range(count):
            resonate.run(add, f"{prefix}{number}", number, 1)

    return _rate(count, work)


def one_at_a_time_pooled(resonate: Resonate, prefix: str, count: int) -> float:
    """``invoke_local(...).result()`` in a loop."""

    def work() -> None:
        for number in range(count):
            resonate.invoke_local(add, f"{prefix}{number}", number, 1).result()

    return _rate(count, work)


def burst(resonate: Resonate, prefix: str, count: int, threads: int) -> float:
    """``count`` invocations started from ``threads`` threads, then all awaited."""
    barrier = threading.Barrier(threads + 1)
    handles: List[list] = [[] for _ in range(threads)]

    def start(index: int) -> None:
        barrier.wait()
        for number in range(index, count, threads):
            handles[index].append(
                resonate.invoke_local(add, f"{prefix}{number}", number, 1)
            )

    starters = [
        threading.Thread(target=start, args=(index,)) for index in range(threads)
    ]
    for starter in starters:
        starter.start()

    def work() -> None:
        barrier.wait()
        for starter in starters:
            starter.join()
        for group in handles:
            for handle in group:
                handle.result()

    return _rate(count, work)


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--grow", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        with _fresh(directory, "run.db", 4) as resonate:
            one_at_a_time(resonate, "warm", 1000)
            rate = one_at_a_time(resonate, "r", args.count)
            print(f"one at a time, run():            {rate:>9,.0f}/s")
        with _fresh(directory, "pooled.db", 4) as resonate:
            rate = one_at_a_time_pooled(resonate, "p", args.count)
            print(f"one at a time, invoke+result():  {rate:>9,.0f}/s")
        with _fresh(directory, "burst.db", args.threads * 2) as resonate:
            rate = burst(resonate, "b", args.count, args.threads)
            print(
                f"burst of {args.count:,} from {args.threads} threads:  {rate:>9,.0f}/s"
            )
        with _fresh(directory, "grow.db", 4) as resonate:
            growth(resonate, args.count, args.grow)


def growth(resonate: Resonate, count: int, largest: int) -> None:
    """The one-at-a-time rate with the store at 0, 1/4, 1/2 and all of ``largest``."""
    size = 0
    for stage, target in enumerate([0, largest // 4, largest // 2, largest]):
        if target > size:
            _fill(resonate, f"fill{stage}-", target - size)
            size = target
        rate = one_at_a_time(resonate, f"grow{stage}-", count)
        size += count
        print(f"store at {target:>9,} promises:  run() {rate:>9,.0f}/s")


def _fill(resonate: Resonate, prefix: str, count: int) -> None:
    # Completed promises written straight to the store, to grow it quickly.
    for number in range(count):
        resonate.promises.create(f"{prefix}{number}", 3600)
        resonate.promises.resolve(f"{prefix}{number}", number)


if __name__ == "__main__":
    main(sys.argv[1:])
