"""A Resonate made before ``os.fork()``, as under ``gunicorn --preload``.

The master process makes the Resonate and calls ``start()``; the workers are
forked from it. Each test runs work in a forked child and fails, instead of
hanging, when the child does not answer in time.

Each scenario runs in a fresh interpreter: threads that other tests leave
behind could be inside SQLite at the fork, and a child forked then cannot
open a connection (SQLite's own mutexes do not survive fork()), whatever
this package does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import pytest

from resonate_sync import Resonate, SQLiteStore, State

WAIT = 10.0  # seconds a child or a result may take before the test fails


def in_child(body: Callable[[], bool], limit: float = WAIT) -> str:
    """Run ``body`` in a forked child: "ok", "false", "raised" or "hung"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read)
        answer = b"raised"
        try:
            answer = b"ok" if body() else b"false"
        finally:
            os.write(write, answer)
            os._exit(0)
    os.close(write)
    answers: list = []
    reader = threading.Thread(target=lambda: answers.append(os.read(read, 16)))
    reader.daemon = True
    reader.start()
    reader.join(limit)
    if reader.is_alive():
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read)
    return answers[0].decode() if answers and answers[0] else "hung"


def make(tmp_path, **settings) -> Resonate:
    resonate = Resonate(SQLiteStore(str(tmp_path / "fork.db")), **settings)

    @resonate.register
    def double(ctx, n):
        return ctx.run(add, n, n)

    @resonate.register
    def add(ctx, a, b):
        return a + b

    return resonate


def wait_resolved(resonate: Resonate, promise_id: str) -> object:
    deadline = time.monotonic() + WAIT / 2
    while time.monotonic() < deadline:
        promise = resonate.promises.get(promise_id)
        if not promise.pending:
            return resonate.promises.value(promise)
        time.sleep(0.02)
    return None


def started_resonate_works_in_the_child_and_the_parent(tmp_path):
    """Invoke and result in the child of a started Resonate; the parent goes on."""
    resonate = make(tmp_path)
    resonate.start()
    assert resonate.invoke_local("double", "before", 1).result(WAIT) == 2

    def child() -> bool:
        value = resonate.invoke_local("double", "in-child", 21).result(WAIT)
        again = resonate.invoke_local("double", "before", 1).result(WAIT)
        return value == 42 and again == 2

    try:
        assert in_child(child) == "ok"
        assert resonate.promises.get("in-child").state is State.RESOLVED
        assert resonate.invoke_local("double", "after", 5).result(WAIT) == 10
    finally:
        resonate.shutdown()


def child_of_a_started_resonate_recovers_pending_invocations(tmp_path):
    """start() holds in a forked worker too, from its first invocation on: it
    recovers work that a dead worker left pending."""
    # The parent's recovery passes once, then sleeps through the test.
    resonate = make(tmp_path, recovery_interval=3600)
    resonate.start()

    def child() -> bool:
        # Registered only here, so that only this process can recover it.
        resonate.register(lambda ctx: os.getpid(), name="whoami")
        resonate.promises.create(
            "orphan",
            param={"func": "whoami", "args": [], "kwargs": {}, "version": 1},
            tags={"resonate:invocation": "true"},
        )
        resonate.invoke_local("double", "first-request", 1).result(WAIT)
        return wait_resolved(resonate, "orphan") == os.getpid()

    try:
        assert in_child(child) == "ok"
    finally:
        resonate.shutdown()


def fork_in_the_middle_of_busy_writes_does_not_hang_the_child(tmp_path):
    """Threads of the parent hold the store's write lock at fork time, often."""
    resonate = make(tmp_path, max_workers=8)
    # The first invocation imports the pool's module; a fork in the middle
    # of an import would hang any child, with or without resonate_sync.
    assert resonate.invoke_local("double", "warm", 1).result(WAIT) == 2
    stop = threading.Event()

    def keep_writing(worker: int) -> None:
        for number in range(10_000):
            if stop.is_set():
                return
            resonate.run("double", f"busy-{worker}-{number}", number)

    writers = [threading.Thread(target=keep_writing, args=(n,)) for n in range(4)]
    for writer in writers:
        writer.start()

    def child() -> bool:
        handle = resonate.invoke_local("double", f"forked-{os.getpid()}", 2)
        return handle.result(WAIT) == 4

    try:
        answers = [in_child(child) for _ in range(6)]
    finally:
        stop.set()
        for writer in writers:
            writer.join(WAIT)
        resonate.shutdown()
    assert answers == ["ok"] * 6


SCENARIOS = {
    function.__name__: function
    for function in (
        started_resonate_works_in_the_child_and_the_parent,
        child_of_a_started_resonate_recovers_pending_invocations,
        fork_in_the_middle_of_busy_writes_does_not_hang_the_child,
    )
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_fork(scenario, tmp_path):
    """The scenario's docstring says what it checks."""
    command = [sys.executable, __file__, scenario, str(tmp_path)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = dict(os.environ, PYTHONPATH=root)  # this checkout's package
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=environment
    )
    assert finished.returncode == 0, finished.stderr[-3000:]


if __name__ == "__main__":
    import pathlib

    SCENARIOS[sys.argv[1]](pathlib.Path(sys.argv[2]))
