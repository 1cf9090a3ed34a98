"""InvocationHandle and Task: claimed once, run inline by an untimed waiter,
and the futures vocabulary (result, exception, done, callbacks)."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, List

import pytest

from resonate_sync import InvocationHandle, PromiseCanceledError
from resonate_sync.handle import Task

WAIT = 10.0


class Declined(Exception):
    """A user error."""


def _handle(work) -> InvocationHandle:
    """A handle whose task runs ``work`` and settles the future with its outcome."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(work())
        except Exception as err:
            future.set_exception(err)

    return InvocationHandle("h-1", future, Task(run))


def test_a_task_runs_once_however_many_threads_call_it():
    runs: List[str] = []
    go = threading.Barrier(8, timeout=WAIT)
    task = Task(lambda: runs.append(threading.current_thread().name))

    def call() -> None:
        go.wait()
        task()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(runs) == 1
    assert task.claimed


def test_a_task_is_unclaimed_until_someone_runs_it():
    task = Task(lambda: None)
    assert not task.claimed
    task()
    assert task.claimed


def test_result_without_timeout_runs_an_unclaimed_task_in_the_calling_thread():
    handle = _handle(lambda: threading.current_thread())
    assert handle.result() is threading.current_thread()
    assert handle.done()


def test_result_with_a_timeout_waits_for_a_worker_instead_of_running_inline():
    ran: List[Any] = []
    handle = _handle(lambda: ran.append(1))
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.01)
    assert ran == [] and not handle.done()
    handle.result()  # an untimed wait runs it after all
    assert ran == [1]


def test_result_raises_and_exception_returns_the_error():
    handle = _handle(lambda: (_ for _ in ()).throw(Declined("no")))
    error = handle.exception()
    assert isinstance(error, Declined)
    with pytest.raises(Declined, match="no"):
        handle.result()


def test_exception_is_none_for_a_value():
    assert _handle(lambda: 5).exception() is None


def test_result_waits_for_the_thread_that_claimed_the_task():
    entered, release = threading.Event(), threading.Event()

    def work() -> str:
        entered.set()
        assert release.wait(WAIT)
        return "worker's"

    handle = _handle(work)
    worker = threading.Thread(target=handle._task)
    worker.start()
    assert entered.wait(WAIT)
    waiter: List[Any] = []
    other = threading.Thread(target=lambda: waiter.append(handle.result()))
    other.start()
    release.set()
    other.join(WAIT)
    worker.join(WAIT)
    assert waiter == ["worker's"]


def test_done_never_blocks_and_reports_the_end():
    release = threading.Event()
    handle = _handle(lambda: release.wait(WAIT))
    assert not handle.done()
    release.set()
    handle.result()
    assert handle.done()


def test_add_done_callback_gets_the_handle_once_it_ends_or_at_once():
    handle = _handle(lambda: 3)
    called: List[Any] = []
    handle.add_done_callback(called.append)
    assert called == []
    handle.result()
    assert called == [handle]
    handle.add_done_callback(called.append)
    assert called == [handle, handle]


def test_a_handle_without_a_task_just_waits_on_its_future():
    future: concurrent.futures.Future = concurrent.futures.Future()
    handle = InvocationHandle("plain", future)
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.01)
    future.set_result("set elsewhere")
    assert handle.result() == "set elsewhere"
    assert handle.future is future


def test_a_finished_handle_lets_go_of_its_task():
    handle = _handle(lambda: 1)
    handle.result()
    assert handle._task is None


def test_repr_shows_id_and_state():
    handle = _handle(lambda: 1)
    assert repr(handle) == "<InvocationHandle 'h-1' running>"
    handle.result()
    assert repr(handle) == "<InvocationHandle 'h-1' done>"


# -- handles from Resonate ---------------------------------------------------------


def test_handles_of_a_completed_promise_are_done_with_no_task(make_resonate):
    resonate = make_resonate()
    resonate.register(lambda ctx: [1, "two"], name="work")
    resonate.run("work", "hc-1")
    handle = resonate.invoke_local("work", "hc-1")
    assert handle.done() and handle._task is None
    assert handle.invocation_id == "hc-1"
    assert handle.result(0) == [1, "two"]


def test_run_executes_in_the_calling_thread(make_resonate):
    resonate = make_resonate()
    resonate.register(lambda ctx: threading.get_ident(), name="where")
    assert resonate.run("where", "rt-1") == threading.get_ident()


def test_a_handle_waited_with_a_timeout_runs_on_the_pool(make_resonate):
    resonate = make_resonate(max_workers=1)
    resonate.register(lambda ctx: threading.current_thread().name, name="where")
    handle = resonate.invoke_local("where", "pool-1")
    assert handle.result(WAIT).startswith("resonate")


def test_many_threads_waiting_on_one_handle_all_get_the_value(make_resonate):
    resonate = make_resonate(max_workers=2)
    release = threading.Event()

    @resonate.register
    def slow(ctx):
        assert release.wait(WAIT)
        return "shared"

    handle = resonate.invoke_local(slow, "mw-1")
    values: List[Any] = []
    threads = [
        threading.Thread(target=lambda: values.append(handle.result()))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(WAIT)
    assert values == ["shared"] * 6


def test_a_canceled_promise_handle_raises_canceled_and_is_a_cancelled_error(
    make_resonate,
):
    resonate = make_resonate()
    started, release = threading.Event(), threading.Event()

    @resonate.register
    def waits(ctx):
        started.set()
        assert release.wait(WAIT)

    handle = resonate.invoke_local(waits, "cx-2")
    assert started.wait(WAIT)
    resonate.promises.cancel("cx-2")
    release.set()
    error = handle.exception()
    assert isinstance(error, PromiseCanceledError)
    assert isinstance(error, concurrent.futures.CancelledError)
