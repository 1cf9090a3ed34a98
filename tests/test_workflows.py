"""Durable sleep, ``ctx.promise``, detached invocations and cancellation.

Most tests run on both store kinds with the fake clock; a durable sleep then
advances the clock instead of waiting. The tests that complete or cancel from
another process run the ``resonate-sync`` command line in a subprocess, with
real clocks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

import pytest

from resonate_sync import encoding
from resonate_sync import Never, Options, PromiseCanceledError, Resonate, SQLiteStore
from resonate_sync.exceptions import PromiseTimedOutError
from resonate_sync.promise import State

NO_RETRY = Options(retry_policy=Never())
WAIT = 10  # seconds any wait in these tests may take before it counts as a hang


class CountingStore:
    """A store wrapper that counts calls by method name."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: Dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, name: str) -> int:
        with self._lock:
            return self.calls.get(name, 0)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] = self.calls.get(name, 0) + 1
            return attribute(*args, **kwargs)

        return counted


class ClockedSleep:
    """A sleep that moves the fake clock and yields a little real time.

    Unlike ``fake_sleep`` it lets other threads (a cancel, a second store)
    act while a workflow sleeps.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.waits: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(int(seconds * 1000))
        time.sleep(0.01)


def cli() -> List[str]:
    script = shutil.which("resonate-sync")
    return [script] if script else [sys.executable, "-m", "resonate_sync"]


# -- durable sleep ----------------------------------------------------------


def test_sleep_waits_until_its_deadline_by_the_injected_clock(
    make_resonate, clock, fake_sleep
):
    resonate = make_resonate()
    start = clock()

    @resonate.register
    def nap(ctx):
        ctx.sleep(90)
        return "awake"

    assert resonate.run(nap, "nap-1") == "awake"
    assert clock() - start >= 90_000
    assert all(wait <= 1.0 for wait in fake_sleep.waits)  # never deaf for long
    timer = resonate.promises.get("nap-1.1")
    assert timer.state is State.RESOLVED and timer.timeout == start + 90_000


def test_a_restart_keeps_the_sleep_deadline_it_first_stored(make_resonate, clock):
    first = make_resonate()
    gate = threading.Event()
    started = clock()

    def sleep_then_die(seconds):
        clock.advance(int(seconds * 1000))
        gate.set()
        first.shutdown(wait=False)  # the "crash": the sleep ends, undone

    first._runtime._sleep = sleep_then_die

    @first.register
    def nap(ctx):
        ctx.sleep(10)
        return "awake"

    handle = first.invoke_local(nap, "nap-2")
    assert gate.wait(WAIT)
    handle.exception(timeout=WAIT)
    assert first.promises.get("nap-2").state is State.PENDING

    second = make_resonate()
    second.register(nap)
    assert second.run(nap, "nap-2") == "awake"
    # The deadline is the first run's: 10 s after it began, not after the restart.
    assert second.promises.get("nap-2.1").timeout == started + 10_000


def test_a_rerun_whose_sleep_has_ended_continues_at_once(make_resonate, clock, fake_sleep):
    resonate = make_resonate()
    resonate.promises.create("nap-3", timeout=3600)  # keeps the id busy
    store = resonate.store
    # The timer of an earlier run, whose deadline has passed since.
    store.create("nap-4.1", clock() + 5_000, tags={"resonate:timeout": "true"},
                 idempotency_key="nap-4.1")
    clock.advance(60_000)

    @resonate.register
    def nap(ctx):
        ctx.sleep(5)
        return "awake"

    assert resonate.run(nap, "nap-4") == "awake"
    assert fake_sleep.waits == []


def test_sleep_of_zero_or_less_returns_at_once(make_resonate, fake_sleep):
    resonate = make_resonate()

    @resonate.register
    def nap(ctx):
        ctx.sleep(0)
        ctx.sleep(-3)
        return "done"

    assert resonate.run(nap, "nap-5") == "done"
    assert fake_sleep.waits == []


def test_a_store_clock_behind_ours_makes_sleep_poll_not_spin(
    make_store, clock, fake_sleep
):
    """The timer resolves by the store's clock; until it does, sleep backs off."""
    store = CountingStore(make_store())
    ahead = Resonate(store, clock=lambda: clock() / 1000 + 5, sleep=fake_sleep)
    try:

        @ahead.register
        def nap(ctx):
            ctx.sleep(1)
            return "awake"

        handle = ahead.invoke_local(nap, "nap-6")
        assert handle.result(timeout=WAIT) == "awake"
        assert store.count("get") < 200
    finally:
        ahead.shutdown()


# -- ctx.promise: waiting on a person or another system -----------------------


def test_a_promise_resolved_in_this_process_wakes_the_workflow_at_once(make_resonate):
    resonate = make_resonate()
    made = threading.Event()

    @resonate.register
    def approve(ctx, amount):
        approval = ctx.promise(param={"amount": amount})
        made.set()
        return approval.result()

    handle = resonate.invoke_local(approve, "expense-1", 40)
    assert made.wait(WAIT)
    promise = resonate.promises.get("expense-1.1")
    assert promise.state is State.PENDING
    assert encoding.decode_value(promise.param) == {"amount": 40}
    began = time.monotonic()
    resonate.promises.resolve("expense-1.1", {"approved": True})
    assert handle.result(timeout=WAIT) == {"approved": True}
    assert time.monotonic() - began < 0.5


def test_a_promise_completed_through_another_store_is_seen_within_a_second(
    make_resonate, make_store
):
    counting = CountingStore(make_store())
    resonate = make_resonate(store=counting)
    elsewhere = make_resonate()  # another process, as far as the first can tell
    made = threading.Event()

    @resonate.register
    def approve(ctx):
        approval = ctx.promise(id="approval-2")
        made.set()
        return approval.result()

    handle = resonate.invoke_local(approve, "expense-2")
    try:
        assert made.wait(WAIT)
        time.sleep(1.0)  # polls back off to once a second
        before = counting.count("get")
        time.sleep(2.0)  # the idle wait is what is measured here
        reads = counting.count("get") - before
        # Once a second: the promise, and the workflow's own for a cancel.
        assert reads <= 6, f"{reads} reads in 2 s of waiting"
    finally:
        elsewhere.promises.resolve("approval-2", "yes")
    began = time.monotonic()
    assert handle.result(timeout=WAIT) == "yes"
    assert time.monotonic() - began < 1.6


def test_a_rejected_promise_raises_in_the_workflow(make_resonate):
    resonate = make_resonate()
    made = threading.Event()

    @resonate.register(retry_policy=Never())
    def approve(ctx):
        approval = ctx.promise(id="approval-3")
        made.set()
        return approval.result()

    handle = resonate.invoke_local(approve, "expense-3")
    assert made.wait(WAIT)
    resonate.promises.reject("approval-3", ValueError("over budget"))
    with pytest.raises(ValueError, match="over budget"):
        handle.result(timeout=WAIT)


def test_a_promise_that_times_out_raises_timed_out(make_resonate, clock):
    resonate = make_resonate()

    @resonate.register(retry_policy=Never())
    def approve(ctx):
        approval = ctx.promise(timeout=30)
        clock.advance(31_000)
        return approval.result(timeout=WAIT)

    with pytest.raises(PromiseTimedOutError):
        resonate.run(approve, "expense-4")


def test_a_rerun_finds_the_same_promise_and_its_stored_value(make_resonate):
    resonate = make_resonate()
    runs = []

    @resonate.register
    def approve(ctx):
        runs.append(ctx.attempt)
        approval = ctx.promise(timeout=60)
        if len(runs) == 1:
            resonate.promises.resolve(approval.invocation_id, "ok")
            raise RuntimeError("crash after the approval")
        return approval.result()

    assert resonate.run(approve, "expense-5") == "ok"
    assert len(runs) == 2
    assert [p.id for p in resonate.promises.search("expense-5.*")] == ["expense-5.1"]


def test_the_command_line_resolves_a_promise_a_workflow_waits_for(tmp_path):
    path = str(tmp_path / "approve.db")
    made = threading.Event()
    with Resonate(SQLiteStore(path)) as resonate:

        @resonate.register
        def approve(ctx):
            approval = ctx.promise(id="approval-6")
            made.set()
            return approval.result()

        handle = resonate.invoke_local(approve, "expense-6")
        assert made.wait(WAIT)
        began = time.monotonic()
        done = subprocess.run(
            cli() + ["--db", path, "promises", "resolve", "approval-6",
                     "--value", '{"approved": true}'],
            capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert handle.result(timeout=WAIT) == {"approved": True}
        assert time.monotonic() - began < 1.6 + _startup_allowance()


def _startup_allowance() -> float:
    return 5.0  # a cold interpreter starting the command line


# -- detached invocations -----------------------------------------------------


def test_a_detached_invocation_outlives_its_parent(make_resonate):
    resonate = make_resonate()
    release = threading.Event()

    @resonate.register
    def report(ctx, month):
        assert release.wait(WAIT)
        return f"report {month}"

    @resonate.register
    def close_month(ctx, month):
        ctx.detached(report, f"report-{month}", month)
        return "closed"

    assert resonate.run(close_month, "close-1", "jan") == "closed"
    assert resonate.promises.get("close-1").state is State.RESOLVED
    assert resonate.promises.get("report-jan").state is State.PENDING
    release.set()
    detached = resonate.invoke_local(report, "report-jan", "jan")
    assert detached.result(timeout=WAIT) == "report jan"
    tags = resonate.promises.get("report-jan").tags
    assert tags.get("resonate:invocation") == "true" and "resonate:parent" not in tags


def test_a_replayed_parent_does_not_start_its_detached_invocation_again(make_resonate):
    resonate = make_resonate()
    runs = []

    @resonate.register
    def report(ctx):
        runs.append("report")
        return "sent"

    @resonate.register
    def close_month(ctx):
        handle = ctx.detached(report, "report-feb")
        handle.result(timeout=WAIT)
        if ctx.attempt == 1:
            raise RuntimeError("retry me")
        return "closed"

    assert resonate.run(close_month, "close-2") == "closed"
    assert runs == ["report"]


# -- cancellation -------------------------------------------------------------


def test_a_canceled_invocation_stops_at_its_next_step_and_raises(make_resonate):
    resonate = make_resonate()
    inside, cancel_done = threading.Event(), threading.Event()
    steps = []

    @resonate.register
    def work(ctx):
        return "child"

    @resonate.register
    def flow(ctx):
        steps.append(ctx.run(work))
        inside.set()
        assert cancel_done.wait(WAIT)
        steps.append(ctx.run(work))  # the next step: it must not run
        return "finished"

    handle = resonate.invoke_local(flow, "flow-1")
    assert inside.wait(WAIT)
    resonate.promises.cancel("flow-1")
    cancel_done.set()
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=WAIT)
    assert steps == ["child"]
    assert [p.id for p in resonate.promises.search("flow-1.*")] == ["flow-1.1"]


def test_children_queued_before_the_cancel_do_not_start(make_resonate):
    resonate = make_resonate(max_workers=2)
    queued, cancel_done = threading.Event(), threading.Event()
    started = []

    @resonate.register
    def step(ctx, number):
        started.append(number)
        if number == 1:
            assert cancel_done.wait(WAIT)
        return number

    @resonate.register(retry_policy=Never())
    def flow(ctx):
        first = ctx.invoke_local(step, 1)  # takes the second worker
        _wait_until(lambda: started == [1])
        later = [ctx.invoke_local(step, n) for n in (2, 3)]  # no worker left
        queued.set()
        return [first.result()] + [h.result() for h in later]

    handle = resonate.invoke_local(flow, "flow-2")
    assert queued.wait(WAIT)
    resonate.promises.cancel("flow-2")
    cancel_done.set()
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=WAIT)
    assert started == [1]
    for number in (2, 3):
        assert resonate.promises.get(f"flow-2.{number}").state is State.REJECTED_CANCELED


def test_a_canceled_child_does_not_start_its_own_queued_children(make_resonate):
    resonate = make_resonate(max_workers=1)
    inside, cancel_done = threading.Event(), threading.Event()
    started = []

    @resonate.register
    def leaf(ctx):
        started.append("leaf")
        return "leaf"

    @resonate.register(retry_policy=Never())
    def middle(ctx):
        queued = ctx.invoke_local(leaf)  # the only worker runs the root
        inside.set()
        assert cancel_done.wait(WAIT)
        return queued.result()

    @resonate.register(retry_policy=Never())
    def root(ctx):
        try:
            return ctx.run(middle)
        except PromiseCanceledError:
            return "middle canceled"

    handle = resonate.invoke_local(root, "tree-1")
    assert inside.wait(WAIT)
    resonate.promises.cancel("tree-1.1")
    cancel_done.set()
    assert handle.result(timeout=WAIT) == "middle canceled"
    assert started == []


def test_canceling_a_workflow_that_waits_on_a_promise_ends_the_wait(make_resonate):
    resonate = make_resonate()
    made = threading.Event()

    @resonate.register(retry_policy=Never())
    def approve(ctx):
        approval = ctx.promise(id="approval-7", timeout=3600)
        made.set()
        return approval.result()

    handle = resonate.invoke_local(approve, "expense-7")
    assert made.wait(WAIT)
    resonate.promises.cancel("expense-7")
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=3)
    assert resonate.promises.get("approval-7").state is State.PENDING


def test_a_cancel_from_another_store_ends_a_long_sleep(make_store, clock):
    sleep = ClockedSleep(clock)
    resonate = Resonate(make_store(), clock=lambda: clock() / 1000, sleep=sleep)
    elsewhere = Resonate(make_store(), clock=lambda: clock() / 1000)
    try:

        @resonate.register
        def nap(ctx):
            ctx.sleep(24 * 3600)
            return "awake"

        handle = resonate.invoke_local(nap, "nap-7")
        _wait_until(lambda: len(sleep.waits) > 0)
        elsewhere.promises.cancel("nap-7")
        with pytest.raises(PromiseCanceledError):
            handle.result(timeout=WAIT)
        assert len(sleep.waits) < 400  # seconds of the fake clock, not a day
    finally:
        resonate.shutdown()
        elsewhere.shutdown()


def test_the_command_line_cancels_a_sleeping_workflow_of_another_process(tmp_path):
    path = str(tmp_path / "cancel.db")
    with Resonate(SQLiteStore(path)) as resonate:
        asleep = threading.Event()

        @resonate.register
        def nap(ctx):
            asleep.set()
            ctx.sleep(600)
            return "awake"

        handle = resonate.invoke_local(nap, "nap-8")
        assert asleep.wait(WAIT)
        done = subprocess.run(
            cli() + ["--db", path, "promises", "cancel", "nap-8"],
            capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 0, done.stderr
        began = time.monotonic()
        with pytest.raises(PromiseCanceledError):
            handle.result(timeout=WAIT)
        assert time.monotonic() - began < 2.5


def test_shutdown_without_waiting_ends_a_wait_on_a_promise(make_resonate):
    resonate = make_resonate()
    made = threading.Event()

    @resonate.register
    def approve(ctx):
        approval = ctx.promise(id="approval-9")
        made.set()
        return approval.result()

    handle = resonate.invoke_local(approve, "expense-9")
    assert made.wait(WAIT)
    try:
        resonate.shutdown(wait=False)
        error = handle.exception(timeout=3)
        assert error is not None and "shut down" in str(error)
        assert resonate.promises.get("expense-9").state is State.PENDING
    finally:
        resonate.store.resolve("approval-9")  # frees the worker if the test failed


def _wait_until(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)
