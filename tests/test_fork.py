"""A Resonate made before ``os.fork()``, as under ``gunicorn --preload``.

The master process makes the Resonate and calls ``start()``; the workers are
forked from it. Each test runs work in a forked child and fails, instead of
hanging, when the child does not answer in time.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

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


def test_a_started_resonate_works_in_the_child_and_the_parent(tmp_path):
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


def test_a_fork_in_the_middle_of_busy_writes_does_not_hang_the_child(tmp_path):
    """Threads of the parent hold the store's locks at fork time, often."""
    resonate = make(tmp_path, max_workers=8)
    resonate.start()
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
        return resonate.invoke_local("double", f"forked-{os.getpid()}", 2).result(WAIT) == 4

    try:
        answers = [in_child(child) for _ in range(8)]
    finally:
        stop.set()
        for writer in writers:
            writer.join(WAIT)
        resonate.shutdown()
    assert answers == ["ok"] * 8
