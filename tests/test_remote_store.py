"""RemoteStore against the test server on 127.0.0.1, faults included."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
from typing import Any, Callable, Iterator, List

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resonate_sync import (
    InvalidRequestError,
    PromiseAlreadyCompletedError,
    PromiseAlreadyExistsError,
    PromiseNotFoundError,
    RemoteStore,
    State,
    StoreError,
    Value,
)
from resonate_sync.exceptions import (
    LockHeldError,
    LockNotFoundError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
)
from server import Fault, TestServer

HOUR = 3_600_000
ODD_IDS = [
    "a/b/c",
    "root.child:1.step:2",
    "with space and  two",
    "100%",
    "%2F",
    "what?x=1",
    "hash#tag",
    "café/日本/🎉",
    ".",
    "..",
    "a//b/",
    "tab\there",
    "plus+sign&amp",
]


class Sleeps(list):
    """Records the delays a store asked for; runs an action on the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.on_first: List[Callable[[], None]] = []

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        while self.on_first:
            self.on_first.pop(0)()


@pytest.fixture
def server(tmp_path: Any) -> Iterator[TestServer]:
    with TestServer(str(tmp_path / "server.db")) as running:
        yield running


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def store(server: TestServer, sleeps: Sleeps) -> Iterator[RemoteStore]:
    with RemoteStore(
        server.url, timeout=(1, 0.5), retries=4, backoff=0.01, sleep=sleeps
    ) as opened:
        yield opened


def deadline() -> int:
    return int(time.time() * 1000) + HOUR


def data(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode("utf-8")).decode("ascii")


# -- promises -------------------------------------------------------------


def test_create_then_get_round_trips_param_and_tags(store: RemoteStore) -> None:
    param = Value({"content-type": "application/json"}, data({"order": 42}))
    written = store.create("p", deadline(), param=param, tags={"env": "test"})

    assert written.created
    assert written.promise.state is State.PENDING
    assert written.promise.param == param
    assert written.promise.idempotency_key_for_create == "p"  # the default key
    assert store.get("p") == written.promise


def test_a_repeated_create_answers_the_stored_promise(store: RemoteStore) -> None:
    first = store.create("p", deadline(), tags={"a": "1"})
    again = store.create("p", deadline() + 5, tags={"b": "2"})

    assert not again.created
    assert again.promise == first.promise


def test_a_create_with_another_key_conflicts(store: RemoteStore) -> None:
    store.create("p", deadline(), idempotency_key="k1")
    with pytest.raises(PromiseAlreadyExistsError) as caught:
        store.create("p", deadline(), idempotency_key="k2")
    assert caught.value.code == 40900
    assert caught.value.promise_id == "p"
    assert "'p'" in str(caught.value)


def test_resolve_reject_cancel(store: RemoteStore) -> None:
    for name in ("r", "j", "c"):
        store.create(name, deadline())

    resolved = store.resolve("r", Value(data=data("ok")))
    rejected = store.reject("j", Value(data=data("bad")))
    canceled = store.cancel("c")

    assert resolved.created and resolved.promise.state is State.RESOLVED
    assert resolved.promise.value == Value(data=data("ok"))
    assert rejected.promise.state is State.REJECTED
    assert canceled.promise.state is State.REJECTED_CANCELED
    assert store.get("c").completed_on is not None


def test_a_repeated_completion_answers_the_stored_promise(store: RemoteStore) -> None:
    store.create("p", deadline())
    store.resolve("p", Value(data=data(1)))
    again = store.reject("p", Value(data=data(2)))

    assert not again.created
    assert again.promise.state is State.RESOLVED
    assert again.promise.value == Value(data=data(1))


def test_a_completion_with_another_key_is_refused(store: RemoteStore) -> None:
    store.create("p", deadline())
    store.cancel("p", idempotency_key="mine")
    with pytest.raises(PromiseAlreadyCompletedError) as caught:
        store.resolve("p", idempotency_key="other")
    assert caught.value.code == 40303
    assert caught.value.state is State.REJECTED_CANCELED
    assert caught.value.promise_id == "p"


def test_unknown_ids_raise_not_found(store: RemoteStore, sleeps: Sleeps) -> None:
    with pytest.raises(PromiseNotFoundError) as caught:
        store.get("missing")
    with pytest.raises(PromiseNotFoundError):
        store.resolve("missing")
    assert caught.value.promise_id == "missing"
    assert sleeps == []  # a client error is not retried


def test_invalid_requests_raise_invalid_request(store: RemoteStore) -> None:
    store.create("p", deadline())
    with pytest.raises(InvalidRequestError, match="state"):
        store.complete("p", State.PENDING)
    with pytest.raises(InvalidRequestError, match="id is required"):
        store.search()
    with pytest.raises(InvalidRequestError, match="limit"):
        store.search("*", limit=101)
    with pytest.raises(InvalidRequestError):
        store.search(cursor="not-a-cursor")
    assert store.get("p").state is State.PENDING


def test_a_lazy_timeout_shows_as_timed_out(store: RemoteStore) -> None:
    store.create("p", int(time.time() * 1000) - 1000)
    assert store.get("p").state is State.REJECTED_TIMEDOUT


@pytest.mark.parametrize("promise_id", ODD_IDS)
def test_odd_ids_are_percent_encoded(store: RemoteStore, promise_id: str) -> None:
    written = store.create(promise_id, deadline())
    resolved = store.resolve(promise_id)

    assert written.promise.id == promise_id
    assert resolved.promise.id == promise_id
    assert store.get(promise_id).state is State.RESOLVED
    assert [p.id for p in store.search(promise_id).promises] == [promise_id]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40))
def test_any_text_id_round_trips(store: RemoteStore, promise_id: str) -> None:
    store.create(promise_id, deadline())
    assert store.get(promise_id).id == promise_id


def test_non_ascii_data_and_headers_round_trip(store: RemoteStore) -> None:
    value = Value({"x-note": "é 日本 🎉"}, data({"greeting": "café 日本 🎉"}))
    store.create("p", deadline(), param=value)
    store.resolve("p", value)

    stored = store.get("p")
    assert stored.param == value and stored.value == value
    decoded = json.loads(base64.b64decode(stored.value.data or ""))
    assert decoded == {"greeting": "café 日本 🎉"}


def test_search_pages_newest_first(store: RemoteStore) -> None:
    for number in range(3):
        store.create(f"s.{number}", deadline(), tags={"n": str(number % 2)})
    store.resolve("s.1")

    pages, cursor = [], None
    while True:
        page = store.search("s.*", limit=1, cursor=cursor)
        pages.append([p.id for p in page.promises])
        if page.cursor is None:
            break
        cursor = page.cursor

    assert pages == [["s.2"], ["s.1"], ["s.0"], []]
    assert [p.id for p in store.search("s.*", state="pending").promises] == [
        "s.2",
        "s.0",
    ]
    assert [p.id for p in store.search("s.*", tags={"n": "1"}).promises] == ["s.1"]


def test_bearer_token_and_basic_auth_are_sent(server: TestServer) -> None:
    with RemoteStore(server.url, token="t0k3n") as bearer:
        bearer.create("a", deadline())
    with RemoteStore(server.url, auth=("user", "pass")) as basic:
        basic.get("a")

    sent = [headers.get("authorization") for _, _, headers in server.requests]
    expected = "Basic " + base64.b64encode(b"user:pass").decode()
    assert sent == ["Bearer t0k3n", expected]


def test_a_given_session_is_used_and_left_open(server: TestServer) -> None:
    session = requests.Session()
    session.headers["x-test"] = "mine"
    with RemoteStore(server.url, session=session) as store:
        store.create("p", deadline())
    assert server.requests[-1][2]["x-test"] == "mine"
    assert session.get(server.url + "/promises/p", timeout=5).status_code == 200
    session.close()


# -- locks and schedules --------------------------------------------------


def test_locks(store: RemoteStore) -> None:
    lock = store.acquire_lock("r", "e1", "proc", 30_000)
    assert (lock.resource_id, lock.execution_id, lock.ttl) == ("r", "e1", 30_000)
    assert lock.expires_at >= int(time.time() * 1000) + 29_000

    with pytest.raises(LockHeldError):
        store.acquire_lock("r", "e2", "proc2", 30_000)
    assert store.heartbeat("proc") == 1
    store.release_lock("r", "e1")
    with pytest.raises(LockNotFoundError):
        store.release_lock("r", "e1")
    assert store.heartbeat("proc") == 0


def test_schedules(store: RemoteStore) -> None:
    created = store.create_schedule(
        "nightly",
        "0 0 * * *",
        "{{.id}}.{{.timestamp}}",
        60_000,
        description="report",
        tags={"team": "a"},
        promise_tags={"k": "v"},
    )
    again = store.create_schedule("nightly", "5 * * * *", "other", 1)
    store.create_schedule("hourly", "0 * * * *", "{{.id}}", 1_000)

    assert created.description == "report" and created.promise_tags == {"k": "v"}
    assert again == created
    assert store.get_schedule("nightly") == created
    page = store.search_schedules("*ly")
    assert [s.id for s in page.schedules] == ["hourly", "nightly"]
    assert [
        s.id for s in store.search_schedules("*", tags={"team": "a"}).schedules
    ] == ["nightly"]
    with pytest.raises(ScheduleAlreadyExistsError):
        store.create_schedule("nightly", "0 0 * * *", "x", 1, idempotency_key="other")

    store.delete_schedule("nightly")
    with pytest.raises(ScheduleNotFoundError):
        store.get_schedule("nightly")
    with pytest.raises(ScheduleNotFoundError):
        store.delete_schedule("nightly")
    with pytest.raises(InvalidRequestError, match="cron"):
        store.create_schedule("bad", "not a cron", "x", 1)


# -- transient faults -----------------------------------------------------


def applied(server: TestServer, operation: str, promise_id: str) -> int:
    return server.app.applied[operation, promise_id]


def test_5xx_is_retried_and_logged(
    server: TestServer, store: RemoteStore, sleeps: Sleeps, caplog: Any
) -> None:
    server.inject(Fault("status", "POST", status=503), Fault("status", status=502))
    with caplog.at_level(logging.WARNING, logger="resonate_sync.stores._http"):
        written = store.create("p", deadline())

    assert written.created
    assert applied(server, "create", "p") == 1
    assert sleeps == [0.01, 0.02]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "retry 1 of 4" in warnings[0].getMessage()


def test_429_is_retried(server: TestServer, store: RemoteStore, sleeps: Sleeps) -> None:
    store.create("p", deadline())
    server.inject(Fault("status", "PATCH", status=429))
    assert store.resolve("p").created
    assert len(sleeps) == 1


@pytest.mark.parametrize("kind", ["drop-before", "drop-after"])
def test_a_dropped_connection_applies_create_and_complete_once(
    server: TestServer, store: RemoteStore, sleeps: Sleeps, kind: str
) -> None:
    server.inject(Fault(kind, "POST", "/promises"))
    created = store.create("p", deadline())
    server.inject(Fault(kind, "PATCH", "/promises/"))
    resolved = store.resolve("p", Value(data=data("v")))

    assert created.promise.state is State.PENDING
    assert resolved.promise.state is State.RESOLVED
    assert created.created is resolved.created is (kind == "drop-before")
    assert applied(server, "create", "p") == applied(server, "complete", "p") == 1
    assert len(sleeps) == 2


def test_a_slow_answer_past_the_read_timeout_is_retried_once_applied(
    server: TestServer, store: RemoteStore, sleeps: Sleeps
) -> None:
    server.inject(Fault("delay-after", "POST", delay=2.0))
    created = store.create("p", deadline())
    server.inject(Fault("delay-after", "PATCH", delay=2.0))
    rejected = store.reject("p")

    assert not created.created and not rejected.created
    assert store.get("p").state is State.REJECTED
    assert applied(server, "create", "p") == applied(server, "complete", "p") == 1
    assert len(sleeps) == 2


def test_a_strict_create_retried_after_completion_answers_its_own_write(
    server: TestServer, store: RemoteStore, sleeps: Sleeps
) -> None:
    """The retry meets 409 because the promise completed meanwhile; the key is ours."""
    server.inject(Fault("drop-after", "POST", "/promises"))
    with RemoteStore(server.url) as other:
        sleeps.on_first.append(lambda: other.resolve("p", idempotency_key="theirs"))
        written = store.create("p", deadline(), strict=True)

    assert not written.created
    assert written.promise.state is State.RESOLVED
    assert applied(server, "create", "p") == 1


def test_a_strict_create_without_retry_still_conflicts(store: RemoteStore) -> None:
    store.create("p", deadline())
    store.resolve("p")
    with pytest.raises(PromiseAlreadyExistsError):
        store.create("p", deadline(), strict=True)


def test_the_server_restarts_on_its_file_mid_sequence(
    server: TestServer, store: RemoteStore, sleeps: Sleeps
) -> None:
    store.create("before", deadline())
    server.stop()
    sleeps.on_first.append(server.start)

    written = store.create("after", deadline())
    store.resolve("before")

    assert written.created and len(sleeps) == 1
    assert store.get("before").state is State.RESOLVED
    assert [p.id for p in store.search("*").promises] == ["after", "before"]
    assert applied(server, "create", "after") == 1


def test_transient_failures_exhausted_raise_store_error(
    server: TestServer, store: RemoteStore, sleeps: Sleeps
) -> None:
    server.inject(*[Fault("status", status=500) for _ in range(5)])
    with pytest.raises(StoreError, match="after 5 attempts"):
        store.create("p", deadline())
    server.stop()
    with pytest.raises(StoreError) as caught:
        store.get("p")

    assert isinstance(caught.value.__cause__, requests.ConnectionError)
    assert sleeps == [0.01, 0.02, 0.04, 0.08] * 2


def test_an_answer_that_is_not_resonate_raises_store_error(server: TestServer) -> None:
    with RemoteStore(server.url + "/nowhere", retries=0) as lost:
        with pytest.raises(StoreError, match="not the JSON of a Resonate server"):
            lost.get("p")


FAULT_KINDS = st.sampled_from([None, "status", "drop-before", "drop-after"])
_counter = itertools.count()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(FAULT_KINDS, FAULT_KINDS, st.booleans()), max_size=6))
def test_every_write_is_applied_exactly_once_under_faults(
    server: TestServer, store: RemoteStore, plan: List[Any]
) -> None:
    ids = []
    for create_fault, complete_fault, resolve in plan:
        promise_id = f"x.{next(_counter)}"
        ids.append((promise_id, resolve))
        if create_fault:
            server.inject(Fault(create_fault, "POST", "/promises"))
        store.create(promise_id, deadline())
        if complete_fault:
            server.inject(Fault(complete_fault, "PATCH", "/promises/"))
        store.complete(promise_id, State.RESOLVED if resolve else State.REJECTED)

    for promise_id, resolve in ids:
        assert applied(server, "create", promise_id) == 1
        assert applied(server, "complete", promise_id) == 1
        wanted = State.RESOLVED if resolve else State.REJECTED
        assert store.get(promise_id).state is wanted


def test_close_releases_the_pool(server: TestServer) -> None:
    store = RemoteStore(server.url)
    pools = store._transport.session.adapters["http://"].poolmanager.pools
    store.create("p", deadline())
    assert len(pools) == 1

    store.close()
    assert len(pools) == 0


def test_a_key_that_is_not_ascii_is_refused_before_sending(
    server: TestServer, store: RemoteStore
) -> None:
    with pytest.raises(InvalidRequestError, match="printable ascii"):
        store.create("p", deadline(), idempotency_key="clé")
    with pytest.raises(InvalidRequestError):
        store.create("p", deadline(), idempotency_key="a\r\nx-injected: 1")
    assert len(server.requests) == 0


def test_dot_ids_go_percent_encoded_so_no_url_layer_drops_them(
    server: TestServer, store: RemoteStore
) -> None:
    store.create("..", deadline())
    store.get("..")
    assert server.requests[-1][1] == "/promises/%2E%2E"
