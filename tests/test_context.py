"""Context: child ids, replay of children after a crash, mismatches, joins and
non-durable children.

A "crash" is a parent that raises a BaseException that is not an Exception:
the runtime leaves its promise pending, as a killed process would.
"""

from __future__ import annotations

import threading
from typing import Any, List

import pytest

from resonate_sync import (
    Constant,
    EncodingError,
    FunctionMismatchError,
    Never,
    Options,
    State,
    StoreError,
)

WAIT = 10.0


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing is completed."""


class Declined(Exception):
    """A user error."""


def wait_for(event: threading.Event) -> None:
    assert event.wait(WAIT), "timed out waiting for an event"


def test_children_get_parent_id_dot_position_from_one(make_resonate):
    resonate = make_resonate()
    seen: List[Any] = []

    @resonate.register
    def leaf(ctx):
        seen.append((ctx.invocation_id, ctx.root_id))
        return ctx.invocation_id

    @resonate.register
    def middle(ctx):
        return [ctx.run(leaf), ctx.run(leaf)]

    @resonate.register
    def top(ctx):
        first = ctx.invoke_local(leaf)
        return [first.invocation_id, ctx.run(middle), first.result()]

    assert resonate.run(top, "order/7.x") == [
        "order/7.x.1", ["order/7.x.2.1", "order/7.x.2.2"], "order/7.x.1"
    ]
    assert {root for _, root in seen} == {"order/7.x"}
    child = resonate.promises.get("order/7.x.2.1")
    assert child.tags["resonate:parent"] == "order/7.x.2"
    assert child.tags["resonate:root"] == "order/7.x"
    assert "resonate:invocation" not in child.tags


def test_context_exposes_id_root_and_attempt(make_resonate):
    resonate = make_resonate()
    attempts: List[int] = []

    @resonate.register(retry_policy=Constant(interval=1, max_attempts=3))
    def flaky(ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise Declined("again")
        return [ctx.invocation_id, ctx.root_id]

    assert resonate.run(flaky, "ctx-1") == ["ctx-1", "ctx-1"]
    assert attempts == [1, 2, 3]


def test_completed_children_are_not_run_again_when_the_parent_reruns(make_resonate):
    resonate = make_resonate()
    runs: List[str] = []
    crash = [True]

    @resonate.register
    def step(ctx, name):
        runs.append(name)
        return name.upper()

    @resonate.register
    def parent(ctx):
        a = ctx.run(step, "a")
        b = ctx.run(step, "b")
        if crash[0]:
            raise Crash()
        return [a, b, ctx.run(step, "c")]

    with pytest.raises(Crash):
        resonate.run(parent, "re-1")
    assert resonate.promises.get("re-1").state is State.PENDING

    crash[0] = False
    assert resonate.invoke_local(parent, "re-1").result(WAIT) == ["A", "B", "C"]
    assert runs == ["a", "b", "c"]


def test_a_rejected_child_replays_its_stored_error_without_running(make_resonate):
    resonate = make_resonate()
    runs: List[int] = []
    crash = [True]

    @resonate.register(retry_policy=Never())
    def refuse(ctx, n):
        runs.append(n)
        raise Declined(f"no {n}")

    @resonate.register
    def parent(ctx):
        try:
            ctx.run(refuse, 1)
        except Declined as err:
            caught = str(err)
        if crash[0]:
            raise Crash()
        return caught

    with pytest.raises(Crash):
        resonate.run(parent, "rc-1")
    crash[0] = False
    assert resonate.run(parent, "rc-1") == "no 1"
    assert runs == [1]


def test_a_retried_parent_reuses_the_children_of_earlier_attempts(make_resonate):
    resonate = make_resonate()
    runs: List[int] = []

    @resonate.register
    def child(ctx, n):
        runs.append(n)
        return n

    @resonate.register(retry_policy=Constant(interval=1, max_attempts=3))
    def parent(ctx):
        total = ctx.run(child, 1) + ctx.run(child, 2)
        if ctx.attempt < 3:
            raise Declined("retry me")
        return total

    assert resonate.run(parent, "rt-1") == 3
    assert runs == [1, 2]


def test_a_child_that_is_now_another_function_is_a_mismatch(make_resonate):
    old, new = make_resonate(), make_resonate()

    @old.register(name="parent")
    def parent_v1(ctx):
        ctx.run(charge)
        raise Crash()

    @old.register
    def charge(ctx):
        return "charged"

    @new.register(name="parent", retry_policy=Never())
    def parent_v2(ctx):
        return ctx.run(refund)

    @new.register
    def refund(ctx):
        return "refunded"

    with pytest.raises(Crash):
        old.run("parent", "mm-1")
    old.shutdown(wait=False)  # the old process is gone, with its leases
    with pytest.raises(FunctionMismatchError) as raised:
        new.run("parent", "mm-1")
    assert "charge" in str(raised.value) and "refund" in str(raised.value)
    assert new.promises.get("mm-1.1").state is State.RESOLVED


def test_a_pending_child_that_is_now_another_function_is_a_mismatch(make_resonate):
    old, new = make_resonate(), make_resonate()

    @old.register(name="parent")
    def parent_v1(ctx):
        ctx.invoke_local(charge)
        raise Crash()

    @old.register(retry_policy=Never())
    def charge(ctx):
        raise Crash()  # the child dies too, leaving its promise pending

    @new.register(name="parent", retry_policy=Never())
    def parent_v2(ctx):
        return ctx.run(refund)

    @new.register
    def refund(ctx):
        return "refunded"

    with pytest.raises(Crash):
        old.run("parent", "mm-2")
    assert old.promises.get("mm-2.1").state is State.PENDING
    old.shutdown(wait=False)  # the old process is gone, with its leases
    with pytest.raises(FunctionMismatchError, match="refund"):
        new.run("parent", "mm-2")


def test_a_parent_completes_only_after_all_its_children(make_resonate):
    resonate = make_resonate(max_workers=4)
    started, release = threading.Event(), threading.Event()

    @resonate.register
    def slow(ctx):
        started.set()
        wait_for(release)
        return "slow"

    @resonate.register
    def parent(ctx):
        ctx.invoke_local(slow)  # started and never awaited
        return "parent"

    handle = resonate.invoke_local(parent, "j-1")
    wait_for(started)
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.05)
    assert resonate.promises.get("j-1").state is State.PENDING
    release.set()
    assert handle.result(WAIT) == "parent"
    assert resonate.promises.get("j-1.1").state is State.RESOLVED


def test_a_failed_parent_attempt_still_waits_for_its_children(make_resonate):
    resonate = make_resonate(max_workers=4)
    started, release = threading.Event(), threading.Event()
    order: List[str] = []

    @resonate.register
    def slow(ctx):
        started.set()
        wait_for(release)
        order.append("child")

    @resonate.register(retry_policy=Never())
    def parent(ctx):
        ctx.invoke_local(slow)
        wait_for(started)
        raise Declined("parent failed")

    handle = resonate.invoke_local(parent, "j-2")
    wait_for(started)
    release.set()
    with pytest.raises(Declined):
        handle.result(WAIT)
    assert order == ["child"]
    assert resonate.promises.get("j-2.1").state is State.RESOLVED


def test_a_child_left_pending_by_the_store_keeps_the_parent_pending(make_resonate):
    resonate = make_resonate()

    @resonate.register(retry_policy=Never())
    def child(ctx):
        raise StoreError("database is locked")

    @resonate.register(retry_policy=Never())
    def parent(ctx):
        handle = ctx.invoke_local(child)
        try:
            handle.result()
        except StoreError:
            pass  # swallowing it must not complete the parent
        return "done"

    with pytest.raises(StoreError):
        resonate.run(parent, "sp-1")
    assert resonate.promises.get("sp-1").state is State.PENDING
    assert resonate.promises.get("sp-1.1").state is State.PENDING


def test_a_child_error_comes_back_to_the_parent_as_its_type(make_resonate):
    resonate = make_resonate()

    @resonate.register(retry_policy=Never())
    def child(ctx):
        raise Declined("child says no")

    @resonate.register
    def parent(ctx):
        try:
            ctx.run(child)
        except Declined as err:
            return f"caught: {err}"

    assert resonate.run(parent, "ce-1") == "caught: child says no"


def test_an_unregistered_callable_child_is_stored_under_its_qualified_name(
    make_resonate,
):
    resonate = make_resonate()

    def helper(ctx, x):
        return x + 1

    @resonate.register
    def parent(ctx):
        return ctx.run(helper, 1)

    assert resonate.run(parent, "u-1") == 2
    param = resonate.promises.value  # decodes a promise's JSON value
    stored = resonate.promises.get("u-1.1")
    assert stored.state is State.RESOLVED and param(stored) == 2


def test_a_child_by_registered_name_runs_with_its_registered_defaults(make_resonate):
    resonate = make_resonate()
    resonate.register(lambda ctx: "hi", name="greet", tags={"kind": "greeting"})

    @resonate.register
    def parent(ctx):
        return ctx.run("greet")

    assert resonate.run(parent, "n-1") == "hi"
    assert resonate.promises.get("n-1.1").tags["kind"] == "greeting"


def test_a_child_never_outlives_its_parent_timeout(make_resonate):
    resonate = make_resonate()
    resonate.register(lambda ctx: None, name="child", timeout=3600)

    @resonate.register(timeout=60)
    def parent(ctx):
        ctx.run("child")
        ctx.run("child", options=Options(timeout=5))

    resonate.run(parent, "tl-1")
    parent_timeout = resonate.promises.get("tl-1").timeout
    assert resonate.promises.get("tl-1.1").timeout == parent_timeout
    assert resonate.promises.get("tl-1.2").timeout < parent_timeout


def test_a_child_argument_that_is_not_json_fails_the_parent_before_writing(
    make_resonate,
):
    resonate = make_resonate()
    resonate.register(lambda ctx, x: x, name="child")

    @resonate.register
    def parent(ctx):
        ctx.run("child", {1, 2})

    with pytest.raises(EncodingError, match="argument 1 of 'child'"):
        resonate.run(parent, "ea-1")
    with pytest.raises(LookupError):
        resonate.promises.get("ea-1.1")


def test_a_non_durable_child_retries_without_a_promise_and_reruns(
    make_resonate, fake_sleep
):
    resonate = make_resonate()
    runs: List[int] = []
    crash = [True]

    @resonate.register(durable=False, retry_policy=Constant(interval=1, max_attempts=3))
    def volatile(ctx):
        runs.append(ctx.attempt)
        if ctx.attempt < 2:
            raise Declined("flaky")
        return {"ok": ctx.invocation_id}

    @resonate.register
    def parent(ctx):
        value = ctx.run(volatile)
        if crash[0]:
            raise Crash()
        return value

    with pytest.raises(Crash):
        resonate.run(parent, "v-1")
    crash[0] = False
    assert resonate.run(parent, "v-1") == {"ok": "v-1.1"}
    assert runs == [1, 2, 1, 2]
    assert fake_sleep.waits == [1, 1]
    with pytest.raises(LookupError):
        resonate.promises.get("v-1.1")


def test_a_non_durable_child_error_reaches_the_parent_unencoded(make_resonate):
    resonate = make_resonate()

    class Local(Exception):
        pass

    @resonate.register(durable=False, retry_policy=Never())
    def volatile(ctx):
        raise Local("kept as is")

    @resonate.register
    def parent(ctx):
        try:
            ctx.run(volatile)
        except Local:
            return "caught local"

    assert resonate.run(parent, "v-2") == "caught local"


def test_context_invoke_local_returns_before_the_child_ends(make_resonate):
    resonate = make_resonate(max_workers=4)
    release = threading.Event()

    @resonate.register
    def child(ctx):
        wait_for(release)
        return 1

    @resonate.register
    def parent(ctx):
        handle = ctx.invoke_local(child)
        committed = resonate.promises.get(handle.invocation_id).state
        release.set()
        return [committed.value, handle.result()]

    assert resonate.run(parent, "ci-1") == ["PENDING", 1]
