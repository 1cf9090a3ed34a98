"""The runtime on a RemoteStore while the server fails: nothing lost, nothing twice.

Each test runs a batch of parent invocations with children against a
:class:`TestServer` that is restarted, answers 5xx, drops connections or
answers past the client's read timeout. The test counts every execution of
every function, and the server counts every write it applied; in the end each
invocation ran once, was created once and completed once, every promise is
RESOLVED and every handle gives the right value.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest

from resonate_sync import InvocationHandle, RemoteStore, Resonate, State, StoreError
from server import Fault, TestServer

WAIT = 10.0  # seconds any wait may take before the test fails
PARENTS, CHILDREN = 6, 5
WORKERS = 8
# Children sure to be running at once while they wait on a gate: every busy
# worker runs a parent or a child, and each waiting parent has a child of its
# own running (on a worker, or inline in the parent's thread).
SURELY_RUNNING = WORKERS // 2
SQUARES = sum(number * number for number in range(CHILDREN))


class Retries:
    """The store's ``sleep``: records each retry, flags it, then really waits."""

    def __init__(self) -> None:
        self.delays: List[float] = []
        self.happened = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.happened.set()
        time.sleep(seconds)


class Batch:
    """A parent ``total`` summing the squares its children compute.

    Counts each execution by invocation id. A test may set ``gate``: children
    then wait on it, and ``running`` is set once ``running_after`` of them
    have started.
    """

    def __init__(self, resonate: Resonate) -> None:
        self.executions: collections.Counter = collections.Counter()
        self.gate: Optional[threading.Event] = None
        self.running, self.running_after = threading.Event(), CHILDREN
        self._lock = threading.Lock()
        self._children = 0

        def total(ctx: Any, count: int) -> int:
            self._count(ctx.invocation_id)
            handles = [ctx.invoke_local(square, number) for number in range(count)]
            return sum(handle.result() for handle in handles)

        def square(ctx: Any, number: int) -> int:
            self._count(ctx.invocation_id)
            with self._lock:
                self._children += 1
                if self._children >= self.running_after:
                    self.running.set()
            if self.gate is not None:
                assert self.gate.wait(WAIT), "the test never opened the gate"
            return number * number

        resonate.register(total)
        resonate.register(square)

    def _count(self, invocation_id: str) -> None:
        with self._lock:
            self.executions[invocation_id] += 1

    @staticmethod
    def start(resonate: Resonate) -> Dict[str, InvocationHandle[Any]]:
        """Invoke every parent and return the handles by id."""
        ids = [f"batch-{parent}" for parent in range(PARENTS)]
        return {key: resonate.invoke_local("total", key, CHILDREN) for key in ids}


@pytest.fixture
def server(tmp_path: Any) -> Iterator[TestServer]:
    with TestServer(str(tmp_path / "server.db")) as running:
        yield running


@pytest.fixture
def retries() -> Retries:
    return Retries()


@pytest.fixture
def store(server: TestServer, retries: Retries) -> Iterator[RemoteStore]:
    # A short read timeout so that slow answers count as failures; retries
    # enough (about 20 s of backoff in all) to outlast every fault injected.
    with RemoteStore(
        server.url, timeout=(1, 0.3), retries=10, backoff=0.02, sleep=retries
    ) as opened:
        yield opened


@pytest.fixture
def resonate(store: RemoteStore) -> Iterator[Resonate]:
    resonate = Resonate(store, max_workers=WORKERS)
    yield resonate
    resonate.shutdown(wait=True)


@pytest.fixture
def batch(resonate: Resonate) -> Iterator[Batch]:
    batch = Batch(resonate)
    yield batch
    if batch.gate is not None:  # a failed test must not leave children waiting
        batch.gate.set()


def expected_ids() -> List[str]:
    """Every invocation id of the batch: parents and their children."""
    ids = []
    for parent in range(PARENTS):
        ids.append(f"batch-{parent}")
        ids.extend(f"batch-{parent}.{child}" for child in range(1, CHILDREN + 1))
    return ids


def all_states(store: RemoteStore) -> Dict[str, State]:
    """The state of every promise on the server by id, over all pages."""
    states, page = {}, store.search("*", limit=20)
    while True:
        states.update((promise.id, promise.state) for promise in page.promises)
        if page.cursor is None:
            return states
        page = store.search(cursor=page.cursor)


def assert_exactly_once(
    handles: Dict[str, InvocationHandle[Any]],
    batch: Batch,
    store: RemoteStore,
    server: TestServer,
) -> None:
    """Every handle has its value; each invocation ran, was created and was
    completed exactly once; every promise is RESOLVED and there are no others."""
    values = {key: handle.result(WAIT) for key, handle in handles.items()}
    assert values == {key: SQUARES for key in handles}

    once = {key: 1 for key in expected_ids()}
    assert dict(batch.executions) == once
    assert {key: server.app.applied["create", key] for key in once} == once
    assert {key: server.app.applied["complete", key] for key in once} == once
    assert sum(server.app.applied.values()) == 2 * len(once)
    assert all_states(store) == {key: State.RESOLVED for key in once}


def completion_path(number: int) -> str:
    """The completion path of the batch's ``number``-th child, and of no other
    promise: no id has a child's id as a prefix."""
    children = [key for key in expected_ids() if "." in key]
    return f"/promises/{children[number]}"


def sent(server: TestServer, method: str) -> int:
    """How many requests with ``method`` reached the server, answered or not."""
    return sum(1 for request in server.requests if request[0] == method)


# -- the batch under faults --------------------------------------------------------


def test_without_faults_the_batch_writes_each_promise_once_and_never_retries(
    resonate: Resonate, batch: Batch, store: RemoteStore, server: TestServer,
    retries: Retries,
) -> None:
    handles = batch.start(resonate)
    assert_exactly_once(handles, batch, store, server)
    assert retries.delays == []
    assert sent(server, "PATCH") == len(expected_ids())


def test_a_server_restart_mid_batch_loses_nothing_and_runs_nothing_twice(
    resonate: Resonate, batch: Batch, store: RemoteStore, server: TestServer,
    retries: Retries,
) -> None:
    """The server stops, cutting open connections, while children run and
    parents are still creating children; it comes back on the same file and
    port, and the batch finishes."""
    batch.gate, batch.running_after = threading.Event(), SURELY_RUNNING
    handles = batch.start(resonate)
    assert batch.running.wait(WAIT), "no children ran"

    server.stop()
    batch.gate.set()  # running children now complete against a stopped server
    assert retries.happened.wait(WAIT), "no request failed while the server was down"
    server.start()

    assert_exactly_once(handles, batch, store, server)


def test_5xx_answers_and_dropped_connections_are_retried_without_double_writes(
    resonate: Resonate, batch: Batch, store: RemoteStore, server: TestServer,
    retries: Retries,
) -> None:
    """Refusals (500, 502, 503, 429) and connections dropped before the server
    applies a request, or after it applied it but before it answered."""
    # A create's path names no promise, so those faults hit whichever creates
    # come first, one after another; completions are hit promise by promise.
    creates = [
        Fault("status", "POST", "/promises", status=503),
        Fault("status", "POST", "/promises", status=429),
        Fault("drop-before", "POST", "/promises"),
        Fault("drop-after", "POST", "/promises"),
    ]
    kinds = [("status", 500), ("status", 502), ("drop-before", 0), ("drop-after", 0)]
    completions = [
        Fault(kind, "PATCH", completion_path(number), status=status)
        for number, (kind, status) in enumerate(kinds * 4)
    ]
    search = Fault("status", "GET", "/promises", status=502)
    server.inject(*creates, *completions, search)
    handles = batch.start(resonate)

    assert_exactly_once(handles, batch, store, server)
    assert list(server.faults) == [], "some faults never hit a request"
    assert len(retries.delays) == len(creates) + len(completions) + 1
    # Each faulted completion was sent again; the dropped-after ones had been
    # applied the first time, and the server's dedup answered the second.
    assert sent(server, "PATCH") == len(expected_ids()) + len(completions)


def test_answers_past_the_read_timeout_are_retried_without_double_writes(
    resonate: Resonate, batch: Batch, store: RemoteStore, server: TestServer,
    retries: Retries,
) -> None:
    """The server applies creates and completions but answers after the
    client stopped waiting; the retries find the first attempts' writes."""
    late = 3 * 0.3  # three read timeouts
    completions = [
        Fault("delay-after", "PATCH", completion_path(number), delay=late)
        for number in range(6)
    ]
    server.inject(
        *[Fault("delay-after", "POST", "/promises", delay=late)] * 2,
        *completions,
        Fault("delay-after", "GET", "/promises", delay=late),
    )
    handles = batch.start(resonate)

    assert_exactly_once(handles, batch, store, server)
    assert list(server.faults) == [], "some faults never hit a request"
    assert len(retries.delays) == 2 + len(completions) + 1
    assert sent(server, "PATCH") == len(expected_ids()) + len(completions)


def test_every_fault_at_once_with_a_restart(
    resonate: Resonate, batch: Batch, store: RemoteStore, server: TestServer,
    retries: Retries,
) -> None:
    """Late answers, dropped connections and 503s while the server restarts."""
    server.inject(
        Fault("delay-after", "PATCH", "/promises/", delay=0.9),
        Fault("drop-after", "POST", "/promises"),
        Fault("status", "PATCH", "/promises/", status=503),
    )
    batch.gate, batch.running_after = threading.Event(), SURELY_RUNNING
    handles = batch.start(resonate)
    assert batch.running.wait(WAIT), "no children ran"

    server.stop()
    retries.happened.clear()
    batch.gate.set()
    assert retries.happened.wait(WAIT), "no request failed while the server was down"
    server.start()
    server.inject(
        Fault("drop-after", "PATCH", "/promises/"),
        Fault("delay-after", "POST", "/promises", delay=0.9),
    )

    assert_exactly_once(handles, batch, store, server)


def test_an_outage_longer_than_the_retries_leaves_pending_work_for_recovery(
    server: TestServer,
) -> None:
    """When every retry fails, invocations end with StoreError and their
    promises stay pending; once the server is back, recovery finishes them,
    still writing each promise once. A child that had finished but could not
    record it runs again: the store never saw its first run."""
    with RemoteStore(server.url, timeout=(1, 0.3), retries=1, backoff=0.01) as store:
        resonate = Resonate(store, max_workers=WORKERS, sleep=lambda seconds: None)
        batch = Batch(resonate)
        batch.gate, batch.running_after = threading.Event(), SURELY_RUNNING
        try:
            fail_then_recover(resonate, batch, server)
        finally:
            batch.gate.set()
            resonate.shutdown(wait=True)

        once = {key: 1 for key in expected_ids()}
        assert {key: server.app.applied["create", key] for key in once} == once
        assert {key: server.app.applied["complete", key] for key in once} == once
        assert all_states(store) == {key: State.RESOLVED for key in once}
    assert set(batch.executions) == set(once)
    assert max(batch.executions.values()) == 2  # run again, but only once again


def fail_then_recover(resonate: Resonate, batch: Batch, server: TestServer) -> None:
    """Stop the server mid-batch until every handle failed, then recover."""
    handles = batch.start(resonate)
    assert batch.running.wait(WAIT), "no children ran"
    server.stop()
    assert batch.gate is not None
    batch.gate.set()
    for handle in handles.values():
        assert isinstance(handle.exception(WAIT), StoreError)

    server.start()
    assert resonate.recover() == PARENTS
    for key in handles:  # the same id again: the recovered invocation's handle
        assert resonate.invoke_local("total", key, CHILDREN).result(WAIT) == SQUARES


# -- a store shared across fork() ---------------------------------------------------


def test_parent_and_forked_child_using_one_store_each_get_their_own_answers(
    store: RemoteStore,
) -> None:
    """A child forked after the store pooled a connection reads only its own
    answers, and so does the parent, while both send requests at once."""
    deadline = int(time.time() * 1000) + 3_600_000
    ids = [f"fork-{number}" for number in range(10)]
    for key in ids:
        store.create(key, deadline)

    def mismatches() -> int:
        wrong = 0
        for round_number in range(200):
            key = ids[round_number % len(ids)]
            wrong += store.get(key).id != key
        return wrong

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = min(mismatches(), 100)
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    try:
        assert mismatches() == 0
        assert _read_byte(read, pid) == 0, "the child got answers meant for the parent"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def _read_byte(descriptor: int, pid: int) -> int:
    """The one byte a child writes; kills the child when it hangs."""
    got: List[bytes] = []
    ready = threading.Event()

    def reader() -> None:
        got.append(os.read(descriptor, 1))
        ready.set()

    threading.Thread(target=reader, daemon=True).start()
    if not ready.wait(WAIT):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the forked child hung")
    assert got[0], "the forked child died before it answered"
    return got[0][0]
