"""The InvocationHandle, from the post this project grew from.

``foo`` starts a child with ``ctx.invoke_local`` and no retries. The child
sleeps a second and prints "World"; meanwhile ``foo`` prints "Hello", reads the
child's durable promise (PENDING), waits on the handle, and reads it again
(RESOLVED). Holding the handle means the promise exists and the child started.

    python examples/seed.py              # a fresh database each run
    python examples/seed.py --db seed.db
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from resonate_sync import Context, Never, Options, Resonate, SQLiteStore


def world(ctx: Context) -> None:
    time.sleep(1)
    print("World", flush=True)


def main(database: str) -> None:
    with Resonate(SQLiteStore(database)) as resonate:

        @resonate.register
        def foo(ctx: Context) -> None:
            handle = ctx.invoke_local(world, options=Options(retry_policy=Never()))
            print("Hello", flush=True)

            promise = resonate.promises.get(handle.invocation_id)
            print(promise.state, flush=True)  # PENDING

            handle.result()

            promise = resonate.promises.get(handle.invocation_id)
            print(promise.state, flush=True)  # RESOLVED

        top = resonate.invoke_local("foo", "foo.0")
        top.result()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the InvocationHandle example")
    parser.add_argument("--db", help="SQLite file (default: a fresh temporary one)")
    args = parser.parse_args()
    if args.db:
        main(args.db)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            main(os.path.join(scratch, "seed.db"))
    sys.exit(0)
