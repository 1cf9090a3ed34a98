"""Recovery: pending top-level invocations found by their tag run again, in this
process (``recover``, ``start``) and in a new one after a SIGKILL; and two
processes sharing one SQLite file."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from typing import List

import pytest

from resonate_sync import Linear, Options, State

WAIT = 10.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Crash(BaseException):
    """Stands for the process dying: the promise is left pending.

    The test then shuts the old Resonate down, which gives back its leases as
    a dead process's expire, so that another may take its work over.
    """


class Declined(Exception):
    """A user error."""


def wait_for(event: threading.Event) -> None:
    assert event.wait(WAIT), "timed out waiting for an event"


def _leave_pending(resonate, function, invocation_id, *args, **kwargs) -> None:
    """Start an invocation that dies at once, leaving its promise pending."""
    with pytest.raises(Crash):
        resonate.run(function, invocation_id, *args, **kwargs)
    assert resonate.promises.get(invocation_id).state is State.PENDING


# -- recover() and start() in one process ------------------------------------------


def test_recover_runs_pending_invocations_registered_here(make_resonate):
    old, new = make_resonate(), make_resonate()
    crash = [True]

    def add(ctx, a, *, b):
        if crash[0]:
            raise Crash()
        return a + b

    old.register(add)
    new.register(add)
    _leave_pending(old, add, "rc-1", 1, b=2)
    _leave_pending(old, add, "rc-2", 3, b=4)
    crash[0] = False
    old.shutdown(wait=False)  # the old process is gone, with its leases

    assert new.recover() == 2
    new.shutdown(wait=True)
    assert [new.promises.value(new.promises.get(i)) for i in ("rc-1", "rc-2")] == [3, 7]
    assert new.recover() == 0


def test_recover_skips_functions_not_registered_here_and_plain_promises(make_resonate):
    old, new = make_resonate(), make_resonate()

    @old.register
    def elsewhere(ctx):
        raise Crash()

    _leave_pending(old, elsewhere, "nr-1")
    new.promises.create("plain-1", tags={"resonate:invocation": "true"})
    new.promises.create("plain-2")
    assert new.recover() == 0
    assert new.promises.get("nr-1").state is State.PENDING


def test_recover_does_not_start_what_runs_here_already(make_resonate):
    resonate = make_resonate(max_workers=2)
    count: List[int] = []
    started, release = threading.Event(), threading.Event()

    @resonate.register
    def slow(ctx):
        count.append(1)
        started.set()
        wait_for(release)
        return "once"

    handle = resonate.invoke_local(slow, "rh-1")
    wait_for(started)
    assert resonate.recover() == 0
    release.set()
    assert handle.result(WAIT) == "once"
    assert count == [1]


def test_recover_leaves_children_to_their_parent(make_resonate):
    old, new = make_resonate(), make_resonate()
    runs: List[str] = []
    crash = [True]

    def step(ctx, name):
        runs.append(name)
        return name

    def parent(ctx):
        done = [ctx.run(step, "a"), ctx.run(step, "b")]
        if crash[0]:
            raise Crash()
        return done + [ctx.run(step, "c")]

    for resonate in (old, new):
        resonate.register(step)
        resonate.register(parent)
    _leave_pending(old, parent, "rp-1")
    crash[0] = False
    old.shutdown(wait=False)  # the old process is gone, with its leases

    assert new.recover() == 1  # the parent only: children carry no invocation tag
    new.shutdown(wait=True)
    assert new.promises.value(new.promises.get("rp-1")) == ["a", "b", "c"]
    assert runs == ["a", "b", "c"]


def test_recovery_retries_with_the_stored_policy(make_resonate, fake_sleep):
    old, new = make_resonate(), make_resonate()
    crash, last = [True], threading.Event()

    def flaky(ctx):
        if crash[0]:
            raise Crash()
        if ctx.attempt == 3:
            last.set()  # shutdown stops retries: wait for the last attempt first
        raise Declined(f"attempt {ctx.attempt}")

    old.register(flaky, retry_policy=Linear(increment=1, max_attempts=3))
    new.register(flaky)  # the default policy here: the stored one must win
    _leave_pending(old, flaky, "rs-1")
    crash[0] = False
    old.shutdown(wait=False)  # the old process is gone, with its leases
    assert new.recover() == 1
    wait_for(last)
    new.shutdown(wait=True)
    assert fake_sleep.waits == [1, 2]
    assert new.promises.get("rs-1").state is State.REJECTED


def test_recovery_finds_more_than_one_page(make_resonate):
    old, new = make_resonate(), make_resonate(max_workers=4)
    crash = [True]

    def work(ctx, n):
        if crash[0]:
            raise Crash()
        return n

    old.register(work)
    new.register(work)
    for n in range(130):
        _leave_pending(old, work, f"pg-{n}", n)
    crash[0] = False
    old.shutdown(wait=False)  # the old process is gone, with its leases
    assert new.recover() == 130
    new.shutdown(wait=True)
    assert list(new.promises.search("pg-*", state="pending")) == []


def test_start_recovers_in_the_background_until_shutdown(make_resonate):
    old, new = make_resonate(), make_resonate(recovery_interval=0.01)
    crash, recovered = [True], threading.Event()

    def job(ctx):
        if crash[0]:
            raise Crash()
        recovered.set()
        return "recovered"

    old.register(job)
    new.register(job)
    _leave_pending(old, job, "st-1")
    crash[0] = False
    old.shutdown(wait=False)  # the old process is gone, with its leases
    new.start()
    new.start()  # a second start is a no-op
    wait_for(recovered)
    new.shutdown(wait=True)
    assert not new._recovery.is_alive()
    assert new.promises.get("st-1").state is State.RESOLVED


def test_invocations_left_by_shutdown_without_wait_are_recovered(make_resonate):
    first = make_resonate(max_workers=1)
    started, gate = threading.Event(), threading.Event()

    @first.register(name="hold")
    def hold(ctx):
        started.set()
        wait_for(gate)

    first.register(lambda ctx, n: n, name="later")
    first.invoke_local("hold", "sw-0")
    wait_for(started)
    for n in range(3):
        first.invoke_local("later", f"sw-{n + 1}", n)
    first.shutdown(wait=False)
    gate.set()

    second = make_resonate()
    second.register(lambda ctx, n: n, name="later")
    assert second.recover() == 3
    second.shutdown(wait=True)
    assert [
        second.promises.get(f"sw-{n}").state for n in range(1, 4)
    ] == [State.RESOLVED] * 3


def test_recovery_after_the_timeout_passed_times_the_promise_out(make_resonate, clock):
    old, new = make_resonate(), make_resonate()
    crash = [True]

    def job(ctx):
        if crash[0]:
            raise Crash()
        return "late"

    old.register(job)
    new.register(job)
    _leave_pending(old, job, "to-1", options=Options(timeout=5))
    crash[0] = False
    old.shutdown(wait=False)  # the old process is gone, with its leases
    clock.advance(6_000)
    assert new.recover() == 0
    assert new.promises.get("to-1").state is State.REJECTED_TIMEDOUT


# -- real processes --------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import json, os, sys, threading
    from resonate_sync import Resonate, SQLiteStore, Constant

    database, log, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    resonate = Resonate(SQLiteStore(database), max_workers=2, recovery_interval=0.05)
    finished = threading.Event()

    def say(line):
        print(line, flush=True)

    @resonate.register
    def step(ctx, n):
        with open(log, "a") as out:
            out.write(f"{n}\\n")
        return n * n

    @resonate.register
    def job(ctx, count):
        squares = []
        for n in range(count):
            squares.append(ctx.run(step, n))
            if mode == "die" and n == 2:
                say("blocked")
                threading.Event().wait()  # killed here
        finished.set()
        return squares

    @resonate.register(retry_policy=Constant(interval=0.01, max_attempts=50))
    def tally(ctx, n):
        return {"n": n, "pid": os.getpid()}

    if mode == "die":
        resonate.invoke_local(job, "killed-1", 6)
        threading.Event().wait()
    elif mode == "recover":
        resonate.start()
        if not finished.wait(20):
            say("not recovered")
            sys.exit(1)
        resonate.shutdown(wait=True)
        say("recovered")
    elif mode == "tally":
        name = sys.argv[4]
        handles = [
            resonate.invoke_local(tally, f"own-{name}-{n}", n) for n in range(40)
        ]
        handles += [resonate.invoke_local(tally, f"shared-{n}", n) for n in range(40)]
        values = [handle.result(20) for handle in handles]
        resonate.shutdown(wait=True)
        say(json.dumps(values))
    """
)


def _spawn(tmp_path, *args: str) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    if not script.exists():
        script.write_text(_WORKER)
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    env.pop("RESONATE_URL", None)
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _next_line(process: subprocess.Popen) -> str:
    """The process's next stdout line, waited for at most WAIT seconds."""
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(
        target=lambda: lines.put(process.stdout.readline()), daemon=True
    ).start()
    try:
        return lines.get(timeout=WAIT * 2).strip()
    except queue.Empty:
        process.kill()
        raise AssertionError("the process said nothing in time")


def _finish(process: subprocess.Popen) -> str:
    try:
        out, err = process.communicate(timeout=WAIT * 3)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, err[-3000:]
    return out


def test_a_run_killed_mid_invocation_is_finished_by_start_in_a_new_process(tmp_path):
    database, log = str(tmp_path / "shared.db"), str(tmp_path / "steps.log")
    doomed = _spawn(tmp_path, database, log, "die")
    assert _next_line(doomed) == "blocked"
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(WAIT)
    assert open(log).read().split() == ["0", "1", "2"]

    recovering = _spawn(tmp_path, database, log, "recover")
    assert _finish(recovering).split() == ["recovered"]
    # Completed children were not executed again; the rest ran once.
    assert open(log).read().split() == ["0", "1", "2", "3", "4", "5"]

    from resonate_sync import Resonate, SQLiteStore

    with Resonate(SQLiteStore(database)) as resonate:
        promise = resonate.promises.get("killed-1")
        assert promise.state is State.RESOLVED
        assert resonate.promises.value(promise) == [0, 1, 4, 9, 16, 25]


def test_two_processes_share_one_sqlite_file(tmp_path):
    database, log = str(tmp_path / "shared.db"), str(tmp_path / "unused.log")
    processes = [_spawn(tmp_path, database, log, "tally", name) for name in "ab"]
    outputs = [json.loads(_finish(process)) for process in processes]

    for output in outputs:
        assert [value["n"] for value in output] == list(range(40)) * 2
    # A shared id has one outcome, whichever process made it.
    assert outputs[0][40:] == outputs[1][40:]

    from resonate_sync import Resonate, SQLiteStore

    with Resonate(SQLiteStore(database)) as resonate:
        states = {p.state for p in resonate.promises.search("*")}
    assert states == {State.RESOLVED}


class PausedSearch:
    """Wraps a store; ``search`` answers, then waits for ``go`` before returning."""

    def __init__(self, store) -> None:
        self._store = store
        self.searched, self.go = threading.Event(), threading.Event()

    def search(self, *args, **kwargs):
        page = self._store.search(*args, **kwargs)
        self.searched.set()
        wait_for(self.go)
        return page

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_recovery_does_not_rerun_what_completed_after_its_search(
    make_resonate, make_store
):
    paused = PausedSearch(make_store())
    resonate = make_resonate(store=paused, max_workers=2)
    runs: List[int] = []
    started, release = threading.Event(), threading.Event()

    @resonate.register
    def once(ctx):
        runs.append(1)
        started.set()
        wait_for(release)
        return "done"

    handle = resonate.invoke_local(once, "race-1")
    wait_for(started)
    recovering = threading.Thread(target=resonate.recover)
    recovering.start()
    wait_for(paused.searched)  # the page holds race-1, still pending
    release.set()
    assert handle.result(WAIT) == "done"
    paused.go.set()  # recovery goes on with the stale page
    recovering.join(WAIT)
    resonate.shutdown(wait=True)
    assert runs == [1]
