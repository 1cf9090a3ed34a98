"""At most one executor per invocation across processes, on SQLite and a server.

Each test starts real processes (this file run as a script) that share one
SQLite file or one TestServer. Every execution of a job appends a line to a
log file, which the test reads: who started what, and when it ended. The
lease functions are also tested in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Iterator, List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
for path in (ROOT, TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)

from resonate_sync import Resonate, SQLiteStore, encoding  # noqa: E402
from resonate_sync._lease import OWNER_TAG, Leases  # noqa: E402
from resonate_sync.promise import State  # noqa: E402

WAIT = 15  # seconds before a wait in these tests counts as a hang


# -- the worker process -------------------------------------------------------


def _append(log: str, line: str) -> None:
    with open(log, "a") as file:  # one short write: lines never interleave
        file.write(line + "\n")


def _open(target: str) -> Any:
    if target.startswith("http://"):
        from resonate_sync.stores.remote import RemoteStore

        return RemoteStore(target)
    return SQLiteStore(target)


def worker(mode: str, target: str, log: str, release: str, ttl: str, *ids: str) -> None:
    """``recover``: run what recovery finds until killed; ``invoke``: run ``ids``."""
    resonate = Resonate(_open(target), lease_ttl=float(ttl), recovery_interval=0.2)

    @resonate.register
    def job(ctx: Any, name: str) -> str:
        _append(log, f"start {ctx.invocation_id} {os.getpid()}")
        while not os.path.exists(release):
            time.sleep(0.02)
        time.sleep(0.05)  # long enough for an overlap to show in the log
        _append(log, f"end {ctx.invocation_id} {os.getpid()}")
        return f"{name} by {os.getpid()}"

    if mode == "recover":
        resonate.start()
        print("ready", flush=True)
        while True:
            time.sleep(1)
    handles = [resonate.invoke_local(job, i, i) for i in ids]
    print("invoked", flush=True)
    for handle in handles:
        print(handle.result(), flush=True)
    resonate.shutdown()


# -- helpers ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "server"])
def target(request, tmp_path) -> Iterator[str]:
    """Where the processes keep promises: a SQLite file or a TestServer's URL."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    from server import TestServer

    with TestServer(str(tmp_path / "server.db"), sweep_interval=0.1) as server:
        yield server.url


@pytest.fixture
def spawn(tmp_path) -> Iterator[Any]:
    """Start worker processes; every one still running is killed at teardown."""
    started: List[subprocess.Popen] = []

    def start(mode: str, target: str, ttl: float, *ids: str) -> subprocess.Popen:
        args = [mode, target, str(tmp_path / "log"), str(tmp_path / "release"), str(ttl)]
        process = subprocess.Popen(
            [sys.executable, __file__, *args, *ids], stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        assert process.stdout.readline().strip() in ("ready", "invoked")
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(WAIT)
        process.stdout.close()


def entries(tmp_path) -> List[Tuple[str, str, int]]:
    path = tmp_path / "log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(what, invocation, int(pid)) for what, invocation, pid in map(str.split, lines)]


def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def pending_invocation(store: Any, invocation_id: str) -> None:
    """A pending invocation no process owns, as a schedule or the CLI makes one."""
    body = {"func": "job", "args": [invocation_id], "kwargs": {}, "version": 1,
            "retryPolicy": None}
    store.create(
        invocation_id, int(time.time() * 1000) + 600_000,
        param=encoding.encode_value(body), tags={"resonate:invocation": "true"},
    )


def assert_one_at_a_time(log: List[Tuple[str, str, int]]) -> None:
    running = {}
    for what, invocation, pid in log:
        if what == "start":
            assert invocation not in running, f"{invocation} ran twice at once: {log}"
            running[invocation] = pid
        else:
            assert running.pop(invocation) == pid


# -- several processes --------------------------------------------------------


def test_recovering_processes_run_each_pending_invocation_exactly_once(
    target, spawn, tmp_path
):
    store = _open(target)
    ids = [f"batch-{n}" for n in range(8)]
    for invocation_id in ids:
        pending_invocation(store, invocation_id)
    (tmp_path / "release").touch()

    for _ in range(3):
        spawn("recover", target, 1.5)
    wait_for(lambda: sum(e[0] == "end" for e in entries(tmp_path)) == len(ids))
    wait_for(lambda: all(not store.get(i).pending for i in ids))

    log = entries(tmp_path)
    assert sorted(e[1] for e in log if e[0] == "start") == ids
    assert_one_at_a_time(log)
    store.close()


def test_a_killed_owner_loses_its_invocation_at_once_on_the_same_host(
    target, spawn, tmp_path
):
    """A dead pid is known at once: no waiting out a 30 s lease."""
    owner = spawn("invoke", target, 30, "long-1")
    wait_for(lambda: entries(tmp_path))
    spawn("recover", target, 30)
    time.sleep(0.5)  # the owner is alive: several recovery passes leave it be
    assert len(entries(tmp_path)) == 1

    owner.send_signal(signal.SIGKILL)
    owner.wait(WAIT)
    killed = time.monotonic()
    wait_for(lambda: len(entries(tmp_path)) == 2, timeout=5)
    assert time.monotonic() - killed < 3
    (tmp_path / "release").touch()
    wait_for(lambda: len(entries(tmp_path)) == 3)

    (_, _, first), (_, _, second), end = entries(tmp_path)
    assert first == owner.pid and second != owner.pid and end[2] == second
    store = _open(target)
    assert store.get("long-1").state is State.RESOLVED
    store.close()


def test_a_live_owner_keeps_its_invocation_past_the_lease_ttl(target, spawn, tmp_path):
    owner = spawn("invoke", target, 1.0, "long-2")
    wait_for(lambda: entries(tmp_path))
    spawn("recover", target, 1.0)
    time.sleep(3.0)  # three ttls: only the heartbeat keeps the lease
    assert [e[2] for e in entries(tmp_path)] == [owner.pid]

    (tmp_path / "release").touch()
    assert owner.stdout.readline().strip() == f"long-2 by {owner.pid}"
    assert [(e[0], e[2]) for e in entries(tmp_path)] == [
        ("start", owner.pid), ("end", owner.pid)
    ]


def test_a_second_process_invoking_the_same_id_gets_the_first_ones_result(
    target, spawn, tmp_path
):
    first = spawn("invoke", target, 30, "long-3")
    wait_for(lambda: entries(tmp_path))
    second = spawn("invoke", target, 30, "long-3")

    (tmp_path / "release").touch()
    assert first.stdout.readline().strip() == f"long-3 by {first.pid}"
    assert second.stdout.readline().strip() == f"long-3 by {first.pid}"
    assert [e[2] for e in entries(tmp_path)] == [first.pid, first.pid]


# -- the lease functions in this process ---------------------------------------


def test_a_process_is_alive_to_itself_and_a_dead_pid_on_this_host_is_not(
    tmp_path, clock
):
    import threading

    store = SQLiteStore(str(tmp_path / "leases.db"), clock=clock)
    leases = Leases(store, ttl=30, stopping=threading.Event())
    me = leases.ensure()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = me.partition("/")[0]
    assert leases.owner_alive(me)
    assert not leases.owner_alive(None)
    assert not leases.owner_alive(f"{host}/{dead.pid}/0123456789ab")
    leases.close()
    store.close()


def test_an_owner_on_another_host_is_alive_while_its_lock_lasts(tmp_path, clock):
    import threading

    store = SQLiteStore(str(tmp_path / "leases.db"), clock=clock)
    stopping = threading.Event()
    mine = Leases(store, ttl=30, stopping=stopping)
    theirs = Leases(store, ttl=2, stopping=stopping)
    theirs.process_id = "elsewhere.example/4242/0123456789ab"
    theirs.ensure()
    assert mine.owner_alive(theirs.process_id)
    clock.advance(2_001)  # no heartbeat reached the store since
    assert not mine.owner_alive(theirs.process_id)
    stopping.set()
    store.close()


def test_only_one_process_takes_over_an_invocation(tmp_path, clock):
    import threading

    store = SQLiteStore(str(tmp_path / "leases.db"), clock=clock)
    stopping = threading.Event()
    first, second = (Leases(store, ttl=30, stopping=stopping) for _ in range(2))
    assert first.take("order-1")
    assert not second.take("order-1")
    first.release("order-1")
    assert second.take("order-1")
    stopping.set()
    store.close()


def test_an_invocation_made_here_is_tagged_with_this_process(make_resonate):
    resonate = make_resonate()

    @resonate.register
    def job(ctx):
        return "done"

    resonate.run(job, "tagged-1")
    owner = resonate.promises.get("tagged-1").tags[OWNER_TAG]
    assert owner == resonate._runtime.leases.process_id
    assert owner.split("/")[1] == str(os.getpid())


if __name__ == "__main__":
    worker(*sys.argv[1:])
