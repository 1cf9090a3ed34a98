"""Resonate end to end: register, invoke_local, run, retries, stores failing,
shutdown, many threads, bounded pools and fork.

Behaviour tests take ``make_resonate`` (conftest), which runs them against
every store kind; time is the fake clock, and retries wait on a fake sleep.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, List

import pytest

from resonate_sync import (
    Constant,
    EncodingError,
    Exponential,
    FunctionMismatchError,
    InvalidRequestError,
    Linear,
    Never,
    NotRegisteredError,
    Options,
    PromiseCanceledError,
    PromiseTimedOutError,
    Resonate,
    State,
    StoreError,
)
from resonate_sync._runtime import ShutdownError

WAIT = 10.0  # seconds any event wait may take before the test fails


class Declined(Exception):
    """A user error that tests raise and expect back by type and message."""


class Fatal(Exception):
    """A user error registered as non-retryable."""


class Counter:
    """Counts calls per key, thread-safely."""

    def __init__(self) -> None:
        self.calls: dict = {}
        self._lock = threading.Lock()

    def __call__(self, key: Any) -> int:
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            return self.calls[key]


def wait_for(event: threading.Event) -> None:
    assert event.wait(WAIT), "timed out waiting for an event"


# -- register and options ------------------------------------------------------


def test_register_returns_the_function_and_invokes_under_its_name(make_resonate):
    resonate = make_resonate()

    def double(ctx, x):
        return 2 * x

    assert resonate.register(double) is double
    assert resonate.invoke_local(double, "d-1", 21).result(WAIT) == 42
    assert resonate.invoke_local("double", "d-2", 4).result(WAIT) == 8


def test_register_under_a_name_with_defaults_applies_them(make_resonate):
    resonate = make_resonate()

    @resonate.register(name="tagged", tags={"team": "a"}, timeout=30)
    def work(ctx):
        return ctx.invocation_id

    assert resonate.run("tagged", "t-1") == "t-1"
    promise = resonate.promises.get("t-1")
    assert promise.tags["team"] == "a"
    assert promise.tags["resonate:invocation"] == "true"
    assert promise.timeout == promise.created_on + 30_000


def test_register_refuses_unknown_options_and_a_taken_name(make_resonate):
    resonate = make_resonate()
    with pytest.raises(InvalidRequestError, match="unknown option"):
        resonate.register(lambda ctx: None, name="x", colour="red")
    resonate.register(lambda ctx: 1, name="taken")
    with pytest.raises(InvalidRequestError, match="already registered"):
        resonate.register(lambda ctx: 2, name="taken")


def test_invoking_an_unregistered_function_raises_and_writes_nothing(make_resonate):
    resonate = make_resonate()

    def stranger(ctx):
        return None

    with pytest.raises(NotRegisteredError):
        resonate.invoke_local(stranger, "s-1")
    assert list(resonate.promises.search("*")) == []


def test_call_options_override_registered_defaults_field_by_field(make_resonate):
    resonate = make_resonate()

    @resonate.register(tags={"a": "1"}, timeout=60)
    def work(ctx):
        return None

    resonate.run(work, "o-1", options=Options(timeout=5))
    promise = resonate.promises.get("o-1")
    assert promise.tags["a"] == "1"
    assert promise.timeout == promise.created_on + 5_000


def test_idempotency_key_option_is_stored_as_the_create_key(make_resonate):
    resonate = make_resonate()
    resonate.register(lambda ctx: 1, name="keyed")
    resonate.run("keyed", "k-1", options=Options(idempotency_key="order-7"))
    assert resonate.promises.get("k-1").idempotency_key_for_create == "order-7"


# -- the handle guarantee and the same id again ---------------------------------


def test_invoke_local_returns_with_the_promise_committed_and_work_submitted(
    make_resonate,
):
    resonate = make_resonate(max_workers=1)
    started, release = threading.Event(), threading.Event()

    @resonate.register
    def blocked(ctx):
        started.set()
        wait_for(release)
        return "done"

    handle = resonate.invoke_local(blocked, "g-1")
    # Committed: a second store on the same data sees it; submitted: it starts
    # on the pool without anyone waiting on the handle.
    other = make_resonate()
    assert other.promises.get("g-1").state is State.PENDING
    wait_for(started)
    release.set()
    assert handle.result(WAIT) == "done"
    assert other.promises.get("g-1").state is State.RESOLVED


def test_same_id_while_running_here_returns_the_same_handle(make_resonate):
    resonate = make_resonate()
    count, started, release = Counter(), threading.Event(), threading.Event()

    @resonate.register
    def slow(ctx, x):
        count("slow")
        started.set()
        wait_for(release)
        return x

    first = resonate.invoke_local(slow, "same-1", 1)
    wait_for(started)
    again = resonate.invoke_local(slow, "same-1", 2)
    assert again is first
    release.set()
    assert again.result(WAIT) == 1
    assert count.calls == {"slow": 1}


def test_same_id_once_resolved_is_done_at_once_without_running(make_resonate):
    resonate = make_resonate()
    count = Counter()

    @resonate.register
    def work(ctx, x):
        count(x)
        return {"x": x}

    assert resonate.run(work, "r-1", 1) == {"x": 1}
    handle = resonate.invoke_local(work, "r-1", 99)
    assert handle.done()
    assert handle.result(0) == {"x": 1}
    assert count.calls == {1: 1}


def test_same_id_once_rejected_raises_the_same_type_and_message(make_resonate):
    resonate = make_resonate()

    @resonate.register(retry_policy=Never())
    def refuse(ctx, amount):
        raise Declined(f"card declined for {amount}")

    with pytest.raises(Declined, match="card declined for 5"):
        resonate.run(refuse, "rej-1", 5)
    handle = resonate.invoke_local(refuse, "rej-1", 5)
    assert handle.done()
    with pytest.raises(Declined, match="card declined for 5"):
        handle.result(0)


def test_same_id_pending_and_not_running_here_runs_with_stored_arguments(
    make_resonate,
):
    writer = make_resonate(max_workers=1)
    gate, started = threading.Event(), threading.Event()

    @writer.register(name="hold")
    def hold(ctx):
        started.set()
        wait_for(gate)

    writer.register(lambda ctx, x: x * 10, name="times_ten")
    writer.invoke_local("hold", "hold-1")
    wait_for(started)
    writer.invoke_local("times_ten", "tt-1", 4)  # queued behind hold
    writer.shutdown(wait=False)

    runner = make_resonate()
    runner.register(lambda ctx, x: x * 10, name="times_ten")
    try:
        assert runner.invoke_local("times_ten", "tt-1", 7).result(WAIT) == 40
        assert runner.promises.get("tt-1").state is State.RESOLVED
    finally:
        gate.set()


def test_same_id_completed_under_another_function_is_a_mismatch_naming_both(
    make_resonate,
):
    resonate = make_resonate()
    resonate.register(lambda ctx: 1, name="alpha")
    resonate.register(lambda ctx: 2, name="beta")
    resonate.run("alpha", "m-1")
    with pytest.raises(FunctionMismatchError) as raised:
        resonate.invoke_local("beta", "m-1")
    assert "alpha" in str(raised.value) and "beta" in str(raised.value)
    assert (raised.value.stored, raised.value.called) == ("alpha", "beta")


def test_same_id_running_here_under_another_function_is_a_mismatch(make_resonate):
    resonate = make_resonate()
    gate = threading.Event()
    resonate.register(lambda ctx: wait_for(gate), name="slow")
    resonate.register(lambda ctx: 2, name="beta")
    running = resonate.invoke_local("slow", "m-2")
    try:
        with pytest.raises(FunctionMismatchError, match="slow"):
            resonate.invoke_local("beta", "m-2")
    finally:
        gate.set()
    running.result(WAIT)


def test_an_id_taken_by_a_plain_promise_is_a_mismatch(make_resonate):
    resonate = make_resonate()
    resonate.register(lambda ctx: 1, name="alpha")
    resonate.promises.create("plain-1")
    with pytest.raises(FunctionMismatchError, match="not an invocation"):
        resonate.invoke_local("alpha", "plain-1")


# -- values, arguments and exceptions --------------------------------------------


def test_values_and_arguments_round_trip_as_json(make_resonate):
    resonate = make_resonate()

    @resonate.register
    def echo(ctx, *args, **kwargs):
        return {"args": args, "kwargs": kwargs}

    value = resonate.run(echo, "e-1", (1, 2), "é", None, flag=True, n=1.5)
    assert value == {"args": [[1, 2], "é", None], "kwargs": {"flag": True, "n": 1.5}}


@pytest.mark.parametrize("bad", [{1, 2}, object(), float("nan"), b"bytes"])
def test_an_argument_that_is_not_json_is_refused_before_any_write(make_resonate, bad):
    resonate = make_resonate()
    resonate.register(lambda ctx, *a, **k: None, name="take")
    with pytest.raises(EncodingError, match="argument 2 of 'take'"):
        resonate.invoke_local("take", "enc-1", 1, bad)
    with pytest.raises(EncodingError, match="argument 'named' of 'take'"):
        resonate.invoke_local("take", "enc-2", named=bad)
    assert list(resonate.promises.search("*")) == []


def test_a_return_value_that_is_not_json_rejects_with_encoding_error(make_resonate):
    resonate = make_resonate()
    resonate.register(lambda ctx: {1, 2}, name="setty")
    with pytest.raises(EncodingError, match="value returned by 'setty'"):
        resonate.run("setty", "ret-1")
    assert resonate.promises.get("ret-1").state is State.REJECTED


def test_builtin_exceptions_come_back_as_their_type(make_resonate):
    resonate = make_resonate()

    @resonate.register(retry_policy=Never())
    def lookup(ctx, key):
        return {}[key]

    with pytest.raises(KeyError, match="missing"):
        resonate.invoke_local(lookup, "ke-1", "missing").result(WAIT)


# -- retries, timeouts and cancellation -------------------------------------------


def test_retries_follow_the_policy_and_then_resolve(make_resonate, fake_sleep):
    resonate = make_resonate()
    count = Counter()

    @resonate.register(retry_policy=Linear(increment=2, max_attempts=5))
    def flaky(ctx):
        if count("flaky") < 4:
            raise Declined("not yet")
        return ctx.attempt

    assert resonate.run(flaky, "f-1") == 4
    assert fake_sleep.waits == [2, 4, 6]


def test_retries_stop_at_max_attempts_and_reject_with_the_last_error(
    make_resonate, fake_sleep
):
    resonate = make_resonate()
    count = Counter()

    @resonate.register(retry_policy=Exponential(initial_delay=1, max_attempts=3))
    def always(ctx):
        raise Declined(f"attempt {count('always')}")

    with pytest.raises(Declined, match="attempt 3"):
        resonate.run(always, "a-1")
    assert fake_sleep.waits == [1, 2]
    assert resonate.promises.get("a-1").state is State.REJECTED


def test_non_retryable_types_reject_at_once(make_resonate, fake_sleep):
    resonate = make_resonate()
    count = Counter()

    @resonate.register(non_retryable=(Fatal,), retry_policy=Constant(interval=1))
    def fatal(ctx):
        count("fatal")
        raise Fatal("give up")

    with pytest.raises(Fatal, match="give up"):
        resonate.run(fatal, "nr-1")
    assert count.calls == {"fatal": 1}
    assert fake_sleep.waits == []


def test_retries_never_wait_past_the_promise_timeout(make_resonate, clock, fake_sleep):
    resonate = make_resonate()
    count = Counter()

    @resonate.register(retry_policy=Constant(interval=2, max_attempts=None))
    def doomed(ctx):
        count("doomed")
        raise Declined("again")

    handle = resonate.invoke_local(doomed, "to-1", options=Options(timeout=7))
    with pytest.raises((Declined, PromiseTimedOutError)):
        handle.result(WAIT)
    # Attempts at 0, 2, 4 and 6 s; another at 8 s would be past the timeout.
    assert count.calls == {"doomed": 4}
    assert sum(fake_sleep.waits) < 7


def test_a_promise_that_times_out_while_running_raises_timed_out(make_resonate, clock):
    resonate = make_resonate()

    @resonate.register(timeout=1)
    def overrun(ctx):
        clock.advance(5_000)
        return "too late"

    with pytest.raises(PromiseTimedOutError) as raised:
        resonate.run(overrun, "late-1")
    assert not isinstance(raised.value, Declined)
    assert resonate.promises.get("late-1").state is State.REJECTED_TIMEDOUT
    with pytest.raises(PromiseTimedOutError):
        resonate.invoke_local(overrun, "late-1").result(0)


def test_a_promise_canceled_while_running_raises_canceled(make_resonate):
    resonate = make_resonate()
    started, release = threading.Event(), threading.Event()

    @resonate.register
    def cancellable(ctx):
        started.set()
        wait_for(release)
        return "finished"

    handle = resonate.invoke_local(cancellable, "c-1")
    wait_for(started)
    resonate.promises.cancel("c-1")
    release.set()
    with pytest.raises(PromiseCanceledError):
        handle.result(WAIT)
    with pytest.raises(PromiseCanceledError):
        resonate.invoke_local(cancellable, "c-1").result(0)


# -- a failing store --------------------------------------------------------------


class FailingStore:
    """Wraps a store; ``complete`` raises StoreError ``failures`` times (-1: always)."""

    def __init__(self, store, failures: int) -> None:
        self._store = store
        self.failures = failures
        self.attempts = 0

    def complete(self, *args, **kwargs):
        self.attempts += 1
        if self.failures < 0 or self.attempts <= self.failures:
            raise StoreError("database or disk is full")
        return self._store.complete(*args, **kwargs)

    def complete_later(self, promise_id, state, callback, **kwargs):
        """The same faults on the path that does not wait for the commit."""
        try:
            written = self.complete(promise_id, state, **kwargs)
        except StoreError as error:
            return callback(None, error)
        return callback(written, None)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_store_failing_on_complete_leaves_the_promise_pending(
    make_resonate, make_store
):
    failing = FailingStore(make_store(), failures=-1)
    resonate = make_resonate(store=failing)
    resonate.register(lambda ctx: "value", name="work")
    handle = resonate.invoke_local("work", "sf-1")
    with pytest.raises(StoreError, match="disk is full"):
        handle.result(WAIT)
    assert resonate.promises.get("sf-1").state is State.PENDING

    # The store recovers: the same id runs again and completes.
    failing.failures = 0
    assert resonate.invoke_local("work", "sf-1").result(WAIT) == "value"


def test_a_user_error_is_not_rejected_while_the_store_fails(make_resonate, make_store):
    resonate = make_resonate(store=FailingStore(make_store(), failures=-1))

    @resonate.register(retry_policy=Never())
    def refuse(ctx):
        raise Declined("no")

    with pytest.raises(StoreError):
        resonate.run(refuse, "sf-2")
    assert resonate.promises.get("sf-2").state is State.PENDING


def test_a_store_failing_a_few_times_on_complete_is_retried(make_resonate, make_store):
    failing = FailingStore(make_store(), failures=3)
    resonate = make_resonate(store=failing)
    resonate.register(lambda ctx: 7, name="work")
    assert resonate.run("work", "sf-3") == 7
    assert resonate.promises.get("sf-3").state is State.RESOLVED


def test_a_store_error_raised_inside_the_function_leaves_it_pending(make_resonate):
    resonate = make_resonate()

    @resonate.register(retry_policy=Constant(interval=1))
    def locked(ctx):
        raise StoreError("database is locked")

    with pytest.raises(StoreError):
        resonate.run(locked, "sf-4")
    assert resonate.promises.get("sf-4").state is State.PENDING


# -- many threads -------------------------------------------------------------------


def test_the_same_id_from_many_threads_runs_once(make_resonate):
    resonate = make_resonate(max_workers=4)
    count = Counter()
    go = threading.Barrier(16, timeout=WAIT)
    results: List[Any] = []

    @resonate.register
    def once(ctx, caller):
        count("once")
        return caller

    def call(index: int) -> None:
        go.wait()
        results.append(resonate.invoke_local(once, "once-1", index).result(WAIT))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert count.calls == {"once": 1}
    assert len(results) == 16 and len(set(results)) == 1


def test_distinct_ids_from_many_threads_all_complete(make_resonate):
    resonate = make_resonate(max_workers=4)
    resonate.register(lambda ctx, n: n * n, name="square")
    handles: dict = {}
    lock = threading.Lock()

    def call(thread: int) -> None:
        for n in range(thread * 10, thread * 10 + 10):
            handle = resonate.invoke_local("square", f"sq-{n}", n)
            with lock:
                handles[n] = handle

    threads = [threading.Thread(target=call, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert {n: h.result(WAIT) for n, h in handles.items()} == {
        n: n * n for n in range(80)
    }


# -- bounded pools --------------------------------------------------------------------


def test_two_workers_finish_a_tree_ten_deep_and_twenty_wide(make_resonate):
    resonate = make_resonate(max_workers=2)

    @resonate.register
    def chain(ctx, depth):
        if depth == 1:
            return 1
        return 1 + ctx.invoke_local(chain, depth - 1).result()

    @resonate.register
    def fan(ctx, width, depth):
        handles = [ctx.invoke_local(chain, depth) for _ in range(width)]
        return sum(handle.result() for handle in handles)

    @resonate.register
    def wide_leaves(ctx, depth):
        # Ten deep with twenty children at the bottom.
        if depth == 1:
            return sum(ctx.run(chain, 1) for _ in range(20))
        return ctx.run(wide_leaves, depth - 1)

    assert resonate.invoke_local(fan, "tree-1", 20, 10).result(WAIT * 3) == 200
    assert resonate.invoke_local(wide_leaves, "tree-2", 10).result(WAIT) == 20


def test_one_worker_parents_waiting_on_children_with_a_timeout_still_finish(
    make_resonate,
):
    resonate = make_resonate(max_workers=1)
    resonate.register(lambda ctx, x: x, name="leaf")

    @resonate.register
    def parent(ctx):
        return ctx.invoke_local("leaf", 3).result()

    handles = [resonate.invoke_local(parent, f"bp-{i}") for i in range(5)]
    assert [h.result(WAIT) for h in handles] == [3] * 5


# -- shutdown --------------------------------------------------------------------------


def test_shutdown_wait_drains_submitted_invocations(make_resonate):
    resonate = make_resonate(max_workers=1)
    gate = threading.Event()
    resonate.register(lambda ctx: wait_for(gate), name="first")
    resonate.register(lambda ctx, n: n, name="later")
    resonate.invoke_local("first", "dr-0")
    later = [resonate.invoke_local("later", f"dr-{n}", n) for n in range(1, 4)]
    gate.set()
    resonate.shutdown(wait=True)
    assert [h.result(0) for h in later] == [1, 2, 3]
    assert all(
        resonate.promises.get(f"dr-{n}").state is State.RESOLVED for n in range(4)
    )


def test_shutdown_wait_lets_a_running_parent_start_children(make_resonate):
    resonate = make_resonate(max_workers=2)
    started, go = threading.Event(), threading.Event()
    resonate.register(lambda ctx, x: x + 1, name="child")

    @resonate.register
    def parent(ctx):
        started.set()
        wait_for(go)
        return ctx.run("child", 1)

    handle = resonate.invoke_local(parent, "sdp-1")
    wait_for(started)
    stopper = threading.Thread(target=resonate.shutdown, kwargs={"wait": True})
    stopper.start()
    go.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert handle.result(0) == 2


def test_shutdown_without_wait_leaves_unstarted_invocations_pending(make_resonate):
    resonate = make_resonate(max_workers=1)
    started, gate = threading.Event(), threading.Event()

    @resonate.register
    def first(ctx):
        started.set()
        wait_for(gate)
        return "first"

    resonate.register(lambda ctx: "later", name="later")
    running = resonate.invoke_local(first, "nw-0")
    wait_for(started)
    queued = resonate.invoke_local("later", "nw-1")
    resonate.shutdown(wait=False)
    with pytest.raises(ShutdownError):
        queued.result(WAIT)
    gate.set()
    assert running.result(WAIT) == "first"
    assert resonate.promises.get("nw-1").state is State.PENDING


def test_invoking_after_shutdown_is_refused(make_resonate):
    resonate = make_resonate()
    resonate.register(lambda ctx: 1, name="work")
    resonate.shutdown(wait=True)
    with pytest.raises(ShutdownError):
        resonate.invoke_local("work", "after-1")


# -- fork ------------------------------------------------------------------------------


def _in_child(body, limit: float = WAIT) -> int:
    """Run ``body`` in a forked child and return its exit code (124: it hung)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read)
        code = 1
        try:
            code = 0 if body() else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    ready = threading.Event()
    outcome: List[bytes] = []

    def reader() -> None:
        outcome.append(os.read(read, 1))
        ready.set()

    threading.Thread(target=reader, daemon=True).start()
    if not ready.wait(limit):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return 124
    os.waitpid(pid, 0)
    os.close(read)
    return outcome[0][0] if outcome[0] else 3


def test_a_resonate_made_before_fork_works_in_the_child(make_resonate):
    resonate = make_resonate(max_workers=2)

    @resonate.register
    def parent(ctx, n):
        return sum(ctx.run(square, i) for i in range(n))

    @resonate.register
    def square(ctx, n):
        return n * n

    # The parent process has a running pool and open connections at fork time.
    assert resonate.run(parent, "fk-0", 3) == 5
    assert resonate.invoke_local(parent, "fk-1", 3).result(WAIT) == 5

    def child() -> bool:
        value = resonate.invoke_local(parent, "fk-child", 4).result(WAIT)
        done = resonate.invoke_local(parent, "fk-1", 3).result(WAIT)
        resonate.shutdown(wait=True)
        return value == 14 and done == 5

    assert _in_child(child) == 0
    assert resonate.promises.get("fk-child").state is State.RESOLVED
    assert resonate.invoke_local(parent, "fk-2", 2).result(WAIT) == 1


def test_a_fork_while_an_invocation_runs_does_not_hang_the_child(make_resonate):
    resonate = make_resonate(max_workers=2)
    started, gate = threading.Event(), threading.Event()

    @resonate.register
    def blocker(ctx):
        started.set()
        wait_for(gate)
        return "parent's"

    resonate.register(lambda ctx: "child's", name="other")
    handle = resonate.invoke_local(blocker, "fr-1")
    wait_for(started)

    def child() -> bool:
        return resonate.invoke_local("other", "fr-2").result(WAIT) == "child's"

    try:
        assert _in_child(child) == 0
    finally:
        gate.set()
    assert handle.result(WAIT) == "parent's"


def test_a_handle_running_at_fork_time_fails_clearly_in_the_child(make_resonate):
    resonate = make_resonate(max_workers=2)
    started, gate = threading.Event(), threading.Event()

    @resonate.register
    def blocker(ctx):
        started.set()
        wait_for(gate)
        return "parent's"

    handle = resonate.invoke_local(blocker, "fh-1")
    wait_for(started)

    def child() -> bool:
        # The thread running it is gone in the child: an untimed wait must
        # not hang.
        return isinstance(handle.exception(), ShutdownError)

    try:
        assert _in_child(child, limit=3) == 0
    finally:
        gate.set()
    assert handle.result(WAIT) == "parent's"


def test_resonate_is_a_context_manager_that_drains(tmp_path):
    with Resonate(store=_sqlite(tmp_path)) as resonate:
        resonate.register(lambda ctx: "ok", name="work")
        handle = resonate.invoke_local("work", "cm-1")
    assert handle.done() and handle.result(0) == "ok"


def test_giving_a_store_and_a_url_is_refused(tmp_path):
    with pytest.raises(InvalidRequestError):
        Resonate(_sqlite(tmp_path), url="http://127.0.0.1:1")


def _sqlite(tmp_path):
    from resonate_sync import SQLiteStore

    return SQLiteStore(str(tmp_path / "cm.db"))


def test_a_top_level_call_of_a_non_durable_function_still_completes_its_promise(
    make_resonate,
):
    resonate = make_resonate()
    resonate.register(lambda ctx: "v", name="volatile", durable=False)
    assert resonate.run("volatile", "nd-1") == "v"
    assert resonate.invoke_local("volatile", "nd-2").result(WAIT) == "v"
    assert resonate.promises.get("nd-1").state is State.RESOLVED
    assert resonate.promises.get("nd-2").state is State.RESOLVED


def test_a_rerun_retries_within_the_stored_timeout_not_a_new_one(
    make_resonate, fake_sleep
):
    resonate = make_resonate()
    count = Counter()
    crash = [True]

    class Crash(BaseException):
        pass

    @resonate.register(retry_policy=Constant(interval=2, max_attempts=50))
    def doomed(ctx):
        if crash[0]:
            raise Crash()
        count("doomed")
        raise Declined("again")

    with pytest.raises(Crash):
        resonate.run(doomed, "st-1", options=Options(timeout=10))
    crash[0] = False
    with pytest.raises((Declined, PromiseTimedOutError)):
        resonate.invoke_local(doomed, "st-1").result(WAIT)
    assert sum(fake_sleep.waits) < 10
    assert count.calls == {"doomed": 5}
