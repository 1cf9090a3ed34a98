"""SQLiteStore: its methods, validation, timeouts, search, schema and errors."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess

import pytest

from conftest import EPOCH_MS
from resonate_sync.exceptions import (
    InvalidRequestError,
    PromiseAlreadyCompletedError,
    PromiseAlreadyExistsError,
    PromiseNotFoundError,
    StoreError,
)
from resonate_sync.promise import EMPTY, TIMER_TAG, State, Value
from resonate_sync.stores.sqlite import SCHEMA_VERSION, SQLiteStore

HOUR = 3_600_000
LATER = EPOCH_MS + HOUR
PARAM = Value({"content-type": "application/json"}, "eyJvcmRlciI6NDJ9")
RESULT = Value({"h": "é"}, "IuaXpeacrCI=")


def ids(page):
    return [promise.id for promise in page.promises]


# -- create, complete, get --------------------------------------------------


def test_create_stores_a_pending_promise_with_every_field(store):
    written = store.create(
        "order/42.charge",
        LATER,
        param=PARAM,
        tags={"env": "test"},
        idempotency_key="ck",
    )

    assert written.created
    promise = written.promise
    assert promise.state is State.PENDING
    assert promise.timeout == LATER
    assert (promise.param, promise.tags) == (PARAM, {"env": "test"})
    assert promise.idempotency_key_for_create == "ck"
    assert promise.created_on == EPOCH_MS
    assert promise.completed_on is None
    assert store.get("order/42.charge") == promise


def test_a_duplicate_create_answers_the_stored_promise_unchanged(store):
    first = store.create("p", LATER, param=PARAM, idempotency_key="k").promise
    again = store.create(
        "p", LATER + 5, param=RESULT, tags={"x": "y"}, idempotency_key="k"
    )

    assert not again.created
    assert again.promise == first


def test_a_create_with_another_key_conflicts(store):
    store.create("p", LATER, idempotency_key="k")

    with pytest.raises(PromiseAlreadyExistsError) as caught:
        store.create("p", LATER, idempotency_key="other")
    assert caught.value.promise_id == "p"
    assert str(caught.value) == "promise 'p' already exists"


@pytest.mark.parametrize(
    "method, state",
    [
        ("resolve", State.RESOLVED),
        ("reject", State.REJECTED),
        ("cancel", State.REJECTED_CANCELED),
    ],
)
def test_shorthands_complete_with_their_state(store, clock, method, state):
    store.create("p", LATER)
    clock.advance(250)
    written = getattr(store, method)("p", RESULT, idempotency_key="c")

    assert written.created
    assert written.promise.state is state
    assert written.promise.value == RESULT
    assert written.promise.idempotency_key_for_complete == "c"
    assert written.promise.completed_on == EPOCH_MS + 250
    assert store.get("p") == written.promise


@pytest.mark.parametrize("state", ["resolved", "Rejected", "rejected_canceled"])
def test_complete_reads_the_state_ignoring_case(store, state):
    store.create("p", LATER)
    assert store.complete("p", state).promise.state.value == state.upper()


def test_a_duplicate_completion_answers_the_stored_promise(store):
    store.create("p", LATER)
    done = store.resolve("p", RESULT, idempotency_key="c").promise
    again = store.resolve("p", EMPTY, idempotency_key="c")

    assert not again.created and again.promise == done


def test_completing_a_completed_promise_otherwise_is_refused_with_its_state(store):
    store.create("p", LATER)
    store.cancel("p", idempotency_key="c")

    with pytest.raises(PromiseAlreadyCompletedError) as caught:
        store.resolve("p", idempotency_key="other")
    assert caught.value.state is State.REJECTED_CANCELED
    assert caught.value.code == 40303
    assert str(caught.value) == "promise 'p' is already canceled"


def test_get_and_complete_of_an_unknown_id_are_not_found(store):
    with pytest.raises(PromiseNotFoundError, match="'nope'"):
        store.get("nope")
    with pytest.raises(PromiseNotFoundError) as caught:
        store.resolve("nope")
    assert caught.value.promise_id == "nope"


def test_ids_keep_every_character(store):
    odd = ["a/b.c:d", " spaced ", "日本-é-🎉", "*", "%_", "quote'\"", "new\nline"]
    for promise_id in odd:
        store.create(promise_id, LATER)
    for promise_id in odd:
        assert store.get(promise_id).id == promise_id


def test_empty_data_is_stored_as_an_empty_value(store):
    store.create("p", LATER, param=Value({}, ""))
    assert store.get("p").param == EMPTY


# -- validation -------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", None, 42, b"p"])
def test_bad_ids_are_refused_everywhere_naming_them(store, bad):
    for call in (
        lambda: store.create(bad, LATER),
        lambda: store.resolve(bad),
        lambda: store.get(bad),
    ):
        with pytest.raises(InvalidRequestError) as caught:
            call()
        assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("bad", [-1, 1.5, "3600", None, True])
def test_bad_timeouts_are_refused_naming_them(store, bad):
    with pytest.raises(InvalidRequestError) as caught:
        store.create("p", bad)
    assert repr(bad) in str(caught.value)
    with pytest.raises(PromiseNotFoundError):
        store.get("p")


@pytest.mark.parametrize("bad", [{"k": 1}, {1: "v"}, {"k": None}, ["k", "v"]])
def test_bad_tags_are_refused(store, bad):
    with pytest.raises(InvalidRequestError):
        store.create("p", LATER, tags=bad)


@pytest.mark.parametrize(
    "bad",
    [
        Value(None, "not base64!"),
        Value(None, "YQ"),  # padding missing
        Value(None, "-_-_"),  # the URL-safe alphabet
        Value(None, "YQ==\n"),
        Value({"h": 1}, None),
        Value({2: "v"}, None),
        {"data": "YQ=="},
        "YQ==",
    ],
)
def test_bad_params_and_values_are_refused_and_change_nothing(store, bad):
    with pytest.raises(InvalidRequestError):
        store.create("p", LATER, param=bad)
    store.create("p", LATER)

    with pytest.raises(InvalidRequestError):
        store.resolve("p", bad)
    assert store.get("p").state is State.PENDING


@pytest.mark.parametrize("bad", ["PENDING", "rejected_timedout", "done", ""])
def test_bad_completion_states_are_refused_and_leave_the_promise_pending(store, bad):
    store.create("p", LATER)

    with pytest.raises(InvalidRequestError):
        store.complete("p", bad)
    assert store.get("p").state is State.PENDING


def test_synchronous_must_be_a_known_level(db_path):
    with pytest.raises(InvalidRequestError, match="'OFF'"):
        SQLiteStore(db_path, synchronous="OFF")


# -- lazy timeouts and timers -----------------------------------------------


def test_get_times_out_a_pending_promise_at_its_timeout(store, clock):
    store.create("p", EPOCH_MS + 1_000, param=PARAM)
    clock.advance(999)
    assert store.get("p").state is State.PENDING

    clock.advance(1)
    promise = store.get("p")
    assert promise.state is State.REJECTED_TIMEDOUT
    assert promise.completed_on == EPOCH_MS + 1_000
    assert promise.value == EMPTY and promise.param == PARAM


def test_get_resolves_a_timer_at_its_timeout(store, clock):
    store.create("sleep", EPOCH_MS + 10, tags={TIMER_TAG: "true"})
    clock.advance(60_000)

    promise = store.get("sleep")
    assert promise.state is State.RESOLVED
    assert promise.completed_on == EPOCH_MS + 10


def test_a_create_whose_timeout_passed_is_pending_until_read(store):
    written = store.create("p", EPOCH_MS - 1)

    assert written.created and written.promise.state is State.PENDING
    assert store.get("p").state is State.REJECTED_TIMEDOUT


def test_a_lazy_timeout_is_stored(db_path, store, clock):
    store.create("p", EPOCH_MS + 5)
    clock.advance(5)
    store.get("p")

    # A store whose clock is still before the timeout sees the stored outcome.
    earlier = SQLiteStore(db_path, clock=lambda: EPOCH_MS)
    try:
        assert earlier.get("p").state is State.REJECTED_TIMEDOUT
    finally:
        earlier.close()


def test_search_times_out_what_it_touches(store, clock):
    store.create("job.1", EPOCH_MS + 5)
    store.create("job.2", LATER)
    store.create("timer.1", EPOCH_MS + 5, tags={TIMER_TAG: "true"})
    clock.advance(5)

    assert ids(store.search("*", state="pending")) == ["job.2"]
    assert ids(store.search("*", state="rejected")) == ["job.1"]
    assert ids(store.search("*", state="resolved")) == ["timer.1"]


def test_completing_after_the_timeout_answers_the_timed_out_promise(store, clock):
    store.create("p", EPOCH_MS + 5)
    clock.advance(5)

    written = store.resolve("p", RESULT, idempotency_key="c")
    assert not written.created
    assert written.promise.state is State.REJECTED_TIMEDOUT
    with pytest.raises(PromiseAlreadyCompletedError) as caught:
        store.resolve("p", RESULT, idempotency_key="c", strict=True)
    assert caught.value.code == 40304


def test_completing_a_timer_after_its_timeout_is_refused_as_resolved(store, clock):
    store.create("t", EPOCH_MS + 5, tags={TIMER_TAG: "true"})
    clock.advance(5)

    with pytest.raises(PromiseAlreadyCompletedError) as caught:
        store.reject("t")
    assert caught.value.state is State.RESOLVED
    assert store.get("t").state is State.RESOLVED


# -- search -----------------------------------------------------------------


def test_search_is_anchored_and_newest_first(store, clock):
    for promise_id in ["order.1", "order.2", "xorder.3", "order", "refund.order.4"]:
        store.create(promise_id, LATER)
        clock.advance(1)

    assert ids(store.search("order.*")) == ["order.2", "order.1"]
    assert ids(store.search("*order")) == ["order"]
    assert ids(store.search("*order*")) == [
        "refund.order.4", "order", "xorder.3", "order.2", "order.1",
    ]
    assert ids(store.search("order")) == ["order"]


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("a?c", ["a?c"]),
        ("a[b]c", ["a[b]c"]),
        ("a[bc]", []),
        ("[*", ["[x", "["]),
        ("*]", ["a]", "]"]),
        ("a]*", ["a]"]),
        ("*?*", ["a?c"]),
        ("a_c", ["a_c"]),
        ("a%", []),
        ("ABC", []),
        ("a*c", ["a_c", "a[b]c", "abc", "a?c"]),
    ],
)
def test_glob_characters_other_than_star_match_themselves(store, pattern, expected):
    for promise_id in ["a?c", "abc", "a[b]c", "ab", "[", "[x", "]", "a]", "a_c"]:
        store.create(promise_id, LATER)

    found = ids(store.search(pattern))
    assert sorted(found) == sorted(expected)


ODD_TAG_KEYS = [
    "resonate:invocation",
    "a.b",
    "$.a",
    "[0]",
    'quote"key',
    "with space",
    "日本",
    "",
    "*",
]


@pytest.mark.parametrize("key", ODD_TAG_KEYS)
def test_tags_with_odd_keys_are_stored_and_searched_exactly(store, key):
    store.create("tagged", LATER, tags={key: "v é", "other": "x"})
    store.create("near", LATER, tags={key + "x": "v é", "a": "v é"})
    store.create("plain", LATER)

    assert store.get("tagged").tags == {key: "v é", "other": "x"}
    assert ids(store.search("*", tags={key: "v é"})) == ["tagged"]
    assert ids(store.search("*", tags={key: "v"})) == []


def test_tag_filters_are_anded_with_each_other_and_the_state(store):
    store.create("both", LATER, tags={"a": "1", "b": "2"})
    store.create("one", LATER, tags={"a": "1"})
    store.create("both-done", LATER, tags={"a": "1", "b": "2"})
    store.resolve("both-done")

    assert ids(store.search("*", tags={"a": "1", "b": "2"})) == ["both-done", "both"]
    assert ids(store.search("*", tags={"a": "1"}, state="pending")) == ["one", "both"]
    assert ids(store.search("*", tags={"a": "1", "b": "2"}, state="resolved")) == [
        "both-done"
    ]


def test_state_filter_rejected_covers_rejected_canceled_and_timed_out(store, clock):
    for promise_id in ["rejected", "canceled", "timedout", "resolved", "pending"]:
        store.create(promise_id, EPOCH_MS + 10 if promise_id == "timedout" else LATER)
    store.reject("rejected")
    store.cancel("canceled")
    store.resolve("resolved")
    clock.advance(10)

    assert sorted(ids(store.search("*", state="REJECTED"))) == [
        "canceled", "rejected", "timedout",
    ]
    assert ids(store.search("*", state="Resolved")) == ["resolved"]
    assert len(store.search("*").promises) == 5


def test_pages_follow_cursors_newest_first_without_gaps(store, clock):
    for number in range(25):
        store.create(f"p.{number:02}", LATER)
        clock.advance(1)

    pages = [store.search("p.*", limit=10)]
    while pages[-1].cursor is not None:
        pages.append(store.search(cursor=pages[-1].cursor))

    assert [len(page.promises) for page in pages] == [10, 10, 5]
    found = [promise_id for page in pages for promise_id in ids(page)]
    assert found == [f"p.{number:02}" for number in reversed(range(25))]


def test_a_full_last_page_is_followed_by_an_empty_one(store):
    for number in range(4):
        store.create(f"p{number}", LATER)

    first = store.search("*", limit=2)
    second = store.search(cursor=first.cursor)
    third = store.search(cursor=second.cursor)

    assert len(second.promises) == 2 and second.cursor is not None
    assert third == ([], None)


def test_a_cursor_carries_its_query_and_ignores_the_arguments(store):
    for number in range(6):
        store.create(f"p{number}", LATER)
        if number % 2:
            store.resolve(f"p{number}")

    first = store.search("*", state="pending", limit=2)
    second = store.search("other*", state="resolved", limit=50, cursor=first.cursor)

    assert ids(first) == ["p4", "p2"]
    assert ids(second) == ["p0"]


def test_promises_created_while_paging_do_not_disturb_the_pages(store, clock):
    for number in range(6):
        store.create(f"p{number}", LATER)
        clock.advance(1)
    first = store.search("*", limit=3)
    store.create("p-new", LATER)
    rest = store.search(cursor=first.cursor)

    assert ids(first) + ids(rest) == ["p5", "p4", "p3", "p2", "p1", "p0"]


@pytest.mark.parametrize("limit", [None, 0])
def test_limit_zero_or_none_means_a_hundred(store, limit):
    for number in range(101):
        store.create(f"p{number}", LATER)
    page = store.search("*", limit=limit)
    assert len(page.promises) == 100 and page.cursor is not None


def cursor_of(query) -> str:
    text = json.dumps(query).encode()
    return base64.urlsafe_b64encode(text).decode()


GOOD_QUERY = {"pattern": "*", "state": None, "tags": {}, "limit": 10}


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "e30=",  # {}
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        cursor_of({**GOOD_QUERY, "before": "x"}),
        cursor_of({**GOOD_QUERY, "before": None}),
        cursor_of({**GOOD_QUERY, "limit": 500, "before": [1, "a"]}),
        cursor_of({**GOOD_QUERY, "state": "done", "before": [1, "a"]}),
        cursor_of({**GOOD_QUERY, "pattern": "", "before": [1, "a"]}),
        cursor_of({**GOOD_QUERY, "tags": {"k": 1}, "before": [1, "a"]}),
        "日本",
    ],
)
def test_invalid_cursors_are_refused(store, cursor):
    with pytest.raises(InvalidRequestError, match="cursor"):
        store.search(cursor=cursor)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pattern": None},
        {"pattern": ""},
        {"pattern": "*", "limit": 101},
        {"pattern": "*", "limit": -1},
        {"pattern": "*", "limit": "5"},
        {"pattern": "*", "limit": True},
        {"pattern": "*", "state": "canceled"},
        {"pattern": "*", "tags": {"k": 2}},
    ],
)
def test_bad_searches_are_refused(store, kwargs):
    pattern = kwargs.pop("pattern")
    with pytest.raises(InvalidRequestError):
        store.search(pattern, **kwargs)


# -- the file: schema, reopening, errors ------------------------------------


def user_version(path: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute("PRAGMA user_version").fetchone()[0]


def test_the_schema_version_is_recorded(store, db_path):
    assert user_version(db_path) == SCHEMA_VERSION >= 1


def test_a_newer_schema_is_refused_with_a_store_error(db_path):
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 1}"):
        SQLiteStore(db_path)


def test_reopening_the_file_keeps_every_promise(db_path, clock):
    first = SQLiteStore(db_path, clock=clock)
    first.create("kept", LATER, param=PARAM, tags={"a": "b"}, idempotency_key="k")
    done = first.resolve("kept", RESULT, idempotency_key="c").promise
    first.create("pending", LATER)
    first.close()

    second = SQLiteStore(db_path, clock=clock)
    try:
        assert second.get("kept") == done
        assert second.get("pending").state is State.PENDING
        assert user_version(db_path) == SCHEMA_VERSION
    finally:
        second.close()


def test_a_file_that_is_not_a_database_gives_a_store_error(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 400)

    with pytest.raises(StoreError) as caught:
        SQLiteStore(str(path))
    assert isinstance(caught.value.__cause__, sqlite3.Error)


@pytest.mark.parametrize("where", ["directory", "missing/dir/p.db"])
def test_a_path_that_cannot_be_opened_gives_a_store_error(tmp_path, where):
    path = tmp_path / where
    if where == "directory":
        path.mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteStore(str(path))


def test_a_corrupted_file_gives_store_errors_not_sqlite_errors(db_path, clock):
    first = SQLiteStore(db_path, clock=clock)
    for number in range(200):
        first.create(f"p{number}", LATER, tags={"pad": "x" * 64})
    first.close()

    # Keep the header page, so the file opens, and ruin every page after it.
    size = os.path.getsize(db_path)
    with open(db_path, "r+b") as file:
        file.seek(4096)
        file.write(b"\xde\xad" * ((size - 4096) // 2))

    corrupted = SQLiteStore(db_path, clock=clock)
    try:
        for call in (
            lambda: corrupted.get("p1"),
            lambda: corrupted.search("*"),
            lambda: corrupted.create("new", LATER),
            lambda: corrupted.resolve("p2"),
        ):
            with pytest.raises(StoreError) as caught:
                call()
            assert isinstance(caught.value.__cause__, sqlite3.Error)
    finally:
        corrupted.close()


@contextlib.contextmanager
def read_only(path: str):
    """Make ``path`` read-only, even for root (through the immutable flag)."""
    if os.geteuid() != 0:
        os.chmod(path, 0o444)
        try:
            yield
        finally:
            os.chmod(path, 0o644)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("root ignores file modes and chattr is missing")
    made = subprocess.run([chattr, "+i", path], capture_output=True)
    if made.returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", path], check=True)


def test_a_read_only_file_reads_and_refuses_writes_with_store_errors(db_path, clock):
    first = SQLiteStore(db_path, clock=clock)
    first.create("p", LATER)
    first.close()

    with read_only(db_path):
        store = SQLiteStore(db_path, clock=clock)
        try:
            assert store.get("p").state is State.PENDING
            with pytest.raises(StoreError, match="readonly"):
                store.create("q", LATER)
            with pytest.raises(StoreError):
                store.resolve("p")
            assert store.get("p").state is State.PENDING
        finally:
            store.close()


def test_close_releases_the_file_and_another_store_can_open_it(db_path, clock):
    store = SQLiteStore(db_path, clock=clock)
    store.create("p", LATER)
    store.get("p")
    store.close()

    os.replace(db_path, db_path + ".moved")
    moved = SQLiteStore(db_path + ".moved", clock=clock)
    try:
        assert moved.get("p").id == "p"
    finally:
        moved.close()
