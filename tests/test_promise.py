"""The promise rules of PROTOCOL.md, unit by unit and against a model.

The first part checks ``resonate_sync.promise`` row by row against the tables
of PROTOCOL.md. The second drives a real :class:`SQLiteStore` with random
sequences of requests and checks every answer against :class:`ProtocolModel`,
a model written from the protocol text alone.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from typing import Dict, List, Optional

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from conftest import EPOCH_MS, FakeClock
from resonate_sync.exceptions import (
    InvalidRequestError,
    PromiseAlreadyCompletedError,
    PromiseAlreadyExistsError,
    PromiseNotFoundError,
    ResonateError,
)
from resonate_sync.promise import (
    EMPTY,
    TIMER_TAG,
    DurablePromise,
    State,
    Value,
    complete,
    create,
    pattern_matches,
    settle,
    states_for_filter,
    validate_id,
    validate_tags,
    validate_timeout,
)
from resonate_sync.stores.sqlite import SQLiteStore

NOW = EPOCH_MS
LATER = NOW + 60_000
PARAM = Value({"content-type": "application/json"}, "eyJhIjoxfQ==")
RESULT = Value(None, "NDI=")


def pending(
    promise_id: str = "p",
    key: Optional[str] = "k",
    timeout: int = LATER,
    timer: bool = False,
) -> DurablePromise:
    tags = {TIMER_TAG: "true"} if timer else {}
    return DurablePromise(
        id=promise_id,
        state=State.PENDING,
        timeout=timeout,
        param=PARAM,
        tags=tags,
        idempotency_key_for_create=key,
        created_on=NOW,
    )


def completed(
    state: State, create_key: Optional[str] = "k", complete_key: Optional[str] = "c"
) -> DurablePromise:
    return dataclasses.replace(
        pending(key=create_key),
        state=state,
        value=RESULT,
        idempotency_key_for_complete=complete_key,
        completed_on=NOW + 1,
    )


def request(key: Optional[str], promise_id: str = "p") -> DurablePromise:
    return DurablePromise(
        id=promise_id,
        state=State.PENDING,
        timeout=LATER + 5,
        param=Value(None, "b3RoZXI="),
        tags={"other": "tag"},
        idempotency_key_for_create=key,
        created_on=NOW + 2,
    )


COMPLETED_STATES = [
    State.RESOLVED,
    State.REJECTED,
    State.REJECTED_CANCELED,
    State.REJECTED_TIMEDOUT,
]
ASKABLE = [State.RESOLVED, State.REJECTED, State.REJECTED_CANCELED]
CODES = {
    State.RESOLVED: 40301,
    State.REJECTED: 40302,
    State.REJECTED_CANCELED: 40303,
    State.REJECTED_TIMEDOUT: 40304,
}


# -- the record -------------------------------------------------------------


@pytest.mark.parametrize("text", ["pending", "Resolved", "rejected_CANCELED"])
def test_state_parse_ignores_case(text):
    assert State.parse(text).value == text.upper()


@pytest.mark.parametrize("text", ["", "done", "RESOLVED ", "cancelled"])
def test_state_parse_refuses_unknown_names_showing_them(text):
    with pytest.raises(InvalidRequestError, match=repr(text).replace("[", r"\[")):
        State.parse(text)


def test_value_json_leaves_out_absent_and_empty_parts():
    assert Value().to_json() == {}
    assert Value({}, "").to_json() == {}
    assert Value({"h": "v"}).to_json() == {"headers": {"h": "v"}}
    assert Value(None, "YQ==").to_json() == {"data": "YQ=="}


@pytest.mark.parametrize("body", [None, {}, {"headers": None, "data": None}])
def test_value_from_empty_json_is_empty(body):
    assert Value.from_json(body) == EMPTY


def test_promise_json_round_trips_and_leaves_out_absent_keys():
    fresh = pending(key=None)
    body = fresh.to_json()

    assert "idempotencyKeyForCreate" not in body
    assert "completedOn" not in body
    assert "idempotencyKeyForComplete" not in body
    assert DurablePromise.from_json(body) == fresh

    done = completed(State.REJECTED_CANCELED)
    assert DurablePromise.from_json(done.to_json()) == done


def test_promise_from_json_tolerates_absent_keys_and_lower_case_state():
    read = DurablePromise.from_json({"id": "x", "state": "resolved"})

    assert read.state is State.RESOLVED
    assert (read.timeout, read.created_on, read.completed_on) == (0, 0, None)
    assert read.tags == {} and read.param == EMPTY and read.value == EMPTY


# -- validation -------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", None, 7, b"id"])
def test_validate_id_refuses_non_strings_and_empty_naming_the_value(bad):
    with pytest.raises(InvalidRequestError) as caught:
        validate_id(bad)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("good", ["a/b.c:d", " ", "日本", "*?[]"])
def test_validate_id_accepts_any_non_empty_string(good):
    assert validate_id(good) == good


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True, None])
def test_validate_timeout_refuses_non_whole_or_negative_naming_the_value(bad):
    with pytest.raises(InvalidRequestError) as caught:
        validate_timeout(bad)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("bad", [{"k": 1}, {1: "v"}, ["k"], {"k": None}])
def test_validate_tags_refuses_non_string_entries(bad):
    with pytest.raises(InvalidRequestError):
        validate_tags(bad)


def test_validate_tags_copies_and_treats_none_as_no_tags():
    tags = {"a": "b"}
    assert validate_tags(None) == {}
    assert validate_tags(tags) == tags and validate_tags(tags) is not tags


# -- lazy timeouts ----------------------------------------------------------


def test_settle_leaves_a_promise_before_its_timeout_alone():
    promise = pending()
    assert settle(promise, LATER - 1) is promise


def test_settle_times_out_a_regular_promise_at_its_timeout():
    settled = settle(dataclasses.replace(pending(), value=RESULT), LATER)

    assert settled.state is State.REJECTED_TIMEDOUT
    assert settled.completed_on == LATER
    assert settled.value == EMPTY


def test_settle_resolves_a_timer_with_completed_on_equal_to_timeout():
    settled = settle(pending(timer=True), LATER + 10_000)

    assert settled.state is State.RESOLVED
    assert settled.completed_on == LATER
    assert settled.value == EMPTY


def test_settle_only_treats_the_exact_string_true_as_a_timer():
    promise = dataclasses.replace(pending(), tags={TIMER_TAG: "True"})
    assert settle(promise, LATER).state is State.REJECTED_TIMEDOUT


@pytest.mark.parametrize("state", COMPLETED_STATES)
def test_settle_never_changes_a_completed_promise(state):
    promise = completed(state)
    assert settle(promise, LATER + 1) is promise


# -- create -----------------------------------------------------------------


def test_create_of_a_new_id_is_201_and_written():
    new = request("k")
    assert create(None, new, strict=False, now=NOW) == (new, 201, True, None)


@pytest.mark.parametrize("strict", [False, True])
def test_create_with_same_key_on_pending_returns_stored_whatever_strict(strict):
    stored = pending()
    transition = create(stored, request("k"), strict, NOW)

    assert transition.status == 200
    assert transition.promise == stored  # the request's param, tags, timeout ignored
    assert not transition.changed and transition.error is None


@pytest.mark.parametrize(
    "stored_key, key", [("k", "other"), ("k", None), (None, None), (None, "k")]
)
def test_create_on_pending_with_other_or_missing_key_is_409(stored_key, key):
    transition = create(pending(key=stored_key), request(key), False, NOW)

    assert transition.status == 409
    assert isinstance(transition.error, PromiseAlreadyExistsError)
    assert transition.error.promise_id == "p"
    assert transition.error.code == 40900


@pytest.mark.parametrize("state", COMPLETED_STATES)
def test_create_on_completed_with_same_key_non_strict_returns_it(state):
    stored = completed(state)
    transition = create(stored, request("k"), False, NOW)
    assert (transition.promise, transition.status, transition.error) == (
        stored,
        200,
        None,
    )


@pytest.mark.parametrize("state", COMPLETED_STATES)
@pytest.mark.parametrize(
    "key, strict", [("k", True), ("other", False), (None, False), (None, True)]
)
def test_create_on_completed_strict_or_with_other_key_is_409(state, key, strict):
    transition = create(completed(state), request(key), strict, NOW)

    assert transition.status == 409
    assert isinstance(transition.error, PromiseAlreadyExistsError)


def test_create_on_completed_without_keys_on_either_side_is_409():
    stored = completed(State.RESOLVED, create_key=None)
    assert create(stored, request(None), False, NOW).status == 409


def test_create_times_out_a_stored_promise_first_and_writes_that():
    stored = pending(timeout=NOW)
    transition = create(stored, request("k"), False, NOW)

    assert transition.status == 200
    assert transition.changed
    assert transition.promise.state is State.REJECTED_TIMEDOUT


def test_create_past_timeout_strict_is_409_but_still_writes_the_timeout():
    transition = create(pending(timeout=NOW), request("k"), True, NOW)

    assert transition.status == 409
    assert transition.changed
    assert transition.promise.state is State.REJECTED_TIMEDOUT


# -- complete ---------------------------------------------------------------


def ask(stored, state=State.RESOLVED, key="c", strict=False, now=NOW):
    return complete(stored, "p", state, RESULT, key, strict, now)


@pytest.mark.parametrize("state", ASKABLE)
def test_complete_pending_is_201_with_value_key_and_completed_on(state):
    transition = ask(pending(), state, key="c", now=NOW + 7)

    assert transition.status == 201 and transition.changed
    done = transition.promise
    assert done.state is state and done.value == RESULT
    assert done.idempotency_key_for_complete == "c"
    assert done.completed_on == NOW + 7


def test_complete_unknown_id_is_404():
    transition = ask(None)

    assert transition.status == 404 and transition.promise is None
    assert isinstance(transition.error, PromiseNotFoundError)
    assert transition.error.promise_id == "p"


@pytest.mark.parametrize("state", [State.PENDING, State.REJECTED_TIMEDOUT])
@pytest.mark.parametrize("stored", [None, pending()])
def test_complete_asking_for_pending_or_timed_out_is_400(state, stored):
    transition = ask(stored, state)

    assert transition.status == 400 and not transition.changed
    assert isinstance(transition.error, InvalidRequestError)


@pytest.mark.parametrize("key", ["c", None, "other"])
def test_complete_past_timeout_non_strict_is_200_timed_out_whatever_key(key):
    transition = ask(pending(timeout=NOW), key=key)

    assert transition.status == 200 and transition.changed
    assert transition.promise.state is State.REJECTED_TIMEDOUT
    assert transition.promise.completed_on == NOW
    assert transition.error is None


def test_complete_past_timeout_strict_is_403_timed_out_and_writes_it():
    transition = ask(pending(timeout=NOW), strict=True)

    assert transition.status == 403 and transition.changed
    assert transition.promise.state is State.REJECTED_TIMEDOUT
    assert transition.error.code == 40304
    assert transition.error.state is State.REJECTED_TIMEDOUT


@pytest.mark.parametrize("strict", [False, True])
def test_complete_timer_past_timeout_resolves_it_and_is_403(strict):
    transition = ask(pending(timer=True, timeout=NOW), State.REJECTED, strict=strict)

    assert transition.status == 403 and transition.changed
    assert transition.promise.state is State.RESOLVED
    assert transition.error.code == 40301


def test_complete_timer_before_timeout_is_an_ordinary_201():
    transition = ask(pending(timer=True), State.REJECTED_CANCELED, now=LATER - 1)
    assert transition.status == 201
    assert transition.promise.state is State.REJECTED_CANCELED


@pytest.mark.parametrize("stored_state", ASKABLE)
@pytest.mark.parametrize("asked", ASKABLE)
def test_complete_same_key_non_strict_is_200_whatever_state(stored_state, asked):
    stored = completed(stored_state)
    transition = ask(stored, asked, key="c")
    assert (transition.promise, transition.status) == (stored, 200)


@pytest.mark.parametrize("state", ASKABLE)
def test_complete_same_key_strict_same_state_is_200(state):
    assert ask(completed(state), state, key="c", strict=True).status == 200


@pytest.mark.parametrize("stored_state", ASKABLE)
@pytest.mark.parametrize("asked", ASKABLE)
def test_complete_same_key_strict_other_state_is_403(stored_state, asked):
    if stored_state is asked:
        return
    transition = ask(completed(stored_state), asked, key="c", strict=True)
    assert transition.status == 403


@pytest.mark.parametrize("state", ASKABLE)
@pytest.mark.parametrize(
    "stored_key, key", [("c", "other"), ("c", None), (None, None), (None, "c")]
)
@pytest.mark.parametrize("strict", [False, True])
def test_complete_with_other_or_missing_key_is_403_with_the_state_code(
    state, stored_key, key, strict
):
    transition = ask(completed(state, complete_key=stored_key), key=key, strict=strict)

    assert transition.status == 403 and not transition.changed
    assert isinstance(transition.error, PromiseAlreadyCompletedError)
    assert transition.error.code == CODES[state]
    assert transition.error.state is state
    assert transition.error.status_code == 403


@pytest.mark.parametrize("key", ["c", None])
def test_complete_stored_timed_out_non_strict_is_200_whatever_key(key):
    stored = completed(State.REJECTED_TIMEDOUT, complete_key=None)
    assert ask(stored, State.REJECTED_CANCELED, key=key).status == 200


def test_complete_stored_timed_out_strict_is_403_already_timed_out():
    stored = completed(State.REJECTED_TIMEDOUT, complete_key=None)
    transition = ask(stored, key=None, strict=True)

    assert transition.status == 403
    assert str(transition.error) == "promise 'p' is already timed out"


# -- search filters ---------------------------------------------------------


@pytest.mark.parametrize(
    "word, states",
    [
        ("pending", {State.PENDING}),
        ("RESOLVED", {State.RESOLVED}),
        (
            "Rejected",
            {State.REJECTED, State.REJECTED_CANCELED, State.REJECTED_TIMEDOUT},
        ),
    ],
)
def test_state_filter_words_ignore_case_and_rejected_covers_all_rejections(
    word, states
):
    assert states_for_filter(word) == states


def test_no_state_filter_admits_every_state():
    assert states_for_filter(None) is None


@pytest.mark.parametrize("word", ["", "canceled", "timedout", "all", "REJECTED_X"])
def test_unknown_state_filter_is_refused(word):
    with pytest.raises(InvalidRequestError):
        states_for_filter(word)


@pytest.mark.parametrize(
    "pattern, promise_id, expected",
    [
        ("order.*", "order.1", True),
        ("order.*", "order.", True),
        ("order.*", "xorder.1", False),
        ("order.*", "orderx1", False),  # '.' is literal
        ("*.charge", "a.b.charge", True),
        ("*.charge", "a.charge.x", False),
        ("a*c", "abbbc", True),
        ("a*c", "abbbcd", False),
        ("exact", "exact", True),
        ("exact", "exactly", False),
        ("*", "", True),
        ("*", "any\nthing", True),
        ("a?c", "abc", False),  # only '*' is a wildcard
        ("a?c", "a?c", True),
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("a_c", "abc", False),
        ("a%", "abc", False),
        ("ABC", "abc", False),  # case matters
        ("a+b", "aab", False),
        ("(x)|y", "(x)|y", True),
        ("**", "x", True),
    ],
)
def test_pattern_is_anchored_and_only_star_is_a_wildcard(pattern, promise_id, expected):
    assert pattern_matches(pattern, promise_id) is expected


# -- the SQLite store against a model of PROTOCOL.md ------------------------


@dataclasses.dataclass
class Record:
    """The model's view of one promise."""

    id: str
    state: str
    timeout: int
    param: Value
    tags: Dict[str, str]
    create_key: Optional[str]
    created_on: int
    order: int
    value: Value = EMPTY
    complete_key: Optional[str] = None
    completed_on: Optional[int] = None


def star_match(pattern: str, text: str) -> bool:
    """True when ``text`` matches ``pattern``, anchored, ``*`` any run of chars."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return pattern == text
    first, last = pieces[0], pieces[-1]
    if not text.startswith(first) or len(text) < len(first) + len(last):
        return False
    if not text.endswith(last):
        return False
    position, end = len(first), len(text) - len(last)
    for middle in pieces[1:-1]:
        found = text.find(middle, position, end)
        if found < 0:
            return False
        position = found + len(middle)
    return True


class ProtocolModel:
    """PROTOCOL.md's tables, written out as plainly as possible.

    Answers are ``(status, record)``; an error status comes with the record
    the store holds afterwards (or None).
    """

    REJECTIONS = ("REJECTED", "REJECTED_CANCELED", "REJECTED_TIMEDOUT")

    def __init__(self) -> None:
        self.records: Dict[str, Record] = {}

    def time_out(self, now: int) -> None:
        # Timeouts are applied lazily, but the outcome depends only on the
        # timeout itself, so applying them all before each request is the same.
        for record in self.records.values():
            if record.state == "PENDING" and now >= record.timeout:
                timer = record.tags.get("resonate:timeout") == "true"
                record.state = "RESOLVED" if timer else "REJECTED_TIMEDOUT"
                record.completed_on = record.timeout
                record.value = EMPTY

    @staticmethod
    def same_key(stored: Optional[str], asked: Optional[str]) -> bool:
        return stored is not None and stored == asked

    def create(self, promise_id, timeout, param, tags, key, strict, now):
        self.time_out(now)
        record = self.records.get(promise_id)
        if record is None:
            record = Record(
                promise_id, "PENDING", timeout, param, tags, key, now,
                order=len(self.records),
            )
            self.records[promise_id] = record
            return 201, record
        if record.state == "PENDING" and self.same_key(record.create_key, key):
            return 200, record
        if self.same_key(record.create_key, key) and not strict:
            return 200, record
        return 409, record

    def complete(self, promise_id, state, value, key, strict, now):
        if state not in ("RESOLVED", "REJECTED", "REJECTED_CANCELED"):
            return 400, self.records.get(promise_id)
        self.time_out(now)
        record = self.records.get(promise_id)
        if record is None:
            return 404, None
        if record.state == "PENDING":
            record.state, record.value = state, value
            record.complete_key, record.completed_on = key, now
            return 201, record
        if record.state == "REJECTED_TIMEDOUT" and not strict:
            return 200, record
        same = self.same_key(record.complete_key, key)
        if same and (not strict or record.state == state):
            return 200, record
        return 403, record

    def get(self, promise_id, now):
        self.time_out(now)
        record = self.records.get(promise_id)
        return (404, None) if record is None else (200, record)

    def search(self, pattern, state, tags, now) -> List[Record]:
        self.time_out(now)
        found = []
        for record in sorted(self.records.values(), key=lambda r: -r.order):
            if not star_match(pattern, record.id):
                continue
            if state == "pending" and record.state != "PENDING":
                continue
            if state == "resolved" and record.state != "RESOLVED":
                continue
            if state == "rejected" and record.state not in self.REJECTIONS:
                continue
            if any(record.tags.get(k) != v for k, v in tags.items()):
                continue
            found.append(record)
        return found


IDS = ["a.1", "a.2", "b?x", "b[1]", "c*"]
PATTERNS = ["*", "a.*", "*.1", "b?x", "b[1]", "b*", "*]", "[*", "c*", "a?1", "nope"]
KEYS = st.sampled_from([None, "k1", "k2"])
STRICT = st.booleans()
VALUES = st.sampled_from([EMPTY, RESULT, Value({"h": "é"}, "ImEi")])
TAG_SETS = st.sampled_from(
    [{}, {"env": "test"}, {TIMER_TAG: "true"}, {TIMER_TAG: "true", "env": "x"}]
)
OFFSETS = st.sampled_from([-5, 0, 1, 1_000, 10_000])
ADVANCES = st.sampled_from([0, 1, 999, 1_000, 5_000])
STATES = st.sampled_from(
    ["RESOLVED", "REJECTED", "REJECTED_CANCELED", "resolved", "PENDING",
     "REJECTED_TIMEDOUT"]
)


class StoreAgainstModel(RuleBasedStateMachine):
    """Random requests to a SQLiteStore, each answer checked against the model."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="resonate-model-")
        self.clock = FakeClock()
        self.store = SQLiteStore(f"{self.directory}/model.db", clock=self.clock)
        self.model = ProtocolModel()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def check_record(self, promise: DurablePromise, record: Record) -> None:
        assert promise.id == record.id
        assert promise.state.value == record.state
        assert promise.timeout == record.timeout
        assert promise.param == record.param
        assert promise.value == record.value
        assert dict(promise.tags) == record.tags
        assert promise.idempotency_key_for_create == record.create_key
        assert promise.idempotency_key_for_complete == record.complete_key
        assert promise.created_on == record.created_on
        assert promise.completed_on == record.completed_on

    def check_answer(self, call, status: int, record: Optional[Record]) -> None:
        errors = {
            400: InvalidRequestError,
            403: PromiseAlreadyCompletedError,
            404: PromiseNotFoundError,
            409: PromiseAlreadyExistsError,
        }
        if status in errors:
            with pytest.raises(ResonateError) as caught:
                call()
            assert type(caught.value) is errors[status]
            if status == 403:
                assert caught.value.state.value == record.state
            return
        written = call()
        assert written.created is (status == 201)
        self.check_record(written.promise, record)

    @rule(
        promise_id=st.sampled_from(IDS),
        offset=OFFSETS,
        param=VALUES,
        tags=TAG_SETS,
        key=KEYS,
        strict=STRICT,
    )
    def create(self, promise_id, offset, param, tags, key, strict):
        now = self.clock()
        status, record = self.model.create(
            promise_id, now + offset, param, dict(tags), key, strict, now
        )
        self.check_answer(
            lambda: self.store.create(
                promise_id, now + offset, param=param, tags=tags,
                idempotency_key=key, strict=strict,
            ),
            status,
            record,
        )

    @rule(
        promise_id=st.sampled_from(IDS),
        state=STATES,
        value=VALUES,
        key=KEYS,
        strict=STRICT,
    )
    def complete(self, promise_id, state, value, key, strict):
        status, record = self.model.complete(
            promise_id, state.upper(), value, key, strict, self.clock()
        )
        self.check_answer(
            lambda: self.store.complete(
                promise_id, state, value=value, idempotency_key=key, strict=strict
            ),
            status,
            record,
        )

    @rule(promise_id=st.sampled_from(IDS))
    def get(self, promise_id):
        status, record = self.model.get(promise_id, self.clock())
        if status == 404:
            with pytest.raises(PromiseNotFoundError):
                self.store.get(promise_id)
        else:
            self.check_record(self.store.get(promise_id), record)

    @rule(
        pattern=st.sampled_from(PATTERNS),
        state=st.sampled_from([None, "pending", "resolved", "rejected", "REJECTED"]),
        tags=st.sampled_from([{}, {"env": "test"}, {TIMER_TAG: "true"}]),
        limit=st.sampled_from([None, 0, 1, 2, 100]),
    )
    def search(self, pattern, state, tags, limit):
        expected = self.model.search(
            pattern, state and state.lower(), tags, self.clock()
        )
        page = self.store.search(pattern, state=state, tags=tags, limit=limit)
        found = list(page.promises)
        size = limit or 100
        while page.cursor is not None:
            assert len(page.promises) == size
            page = self.store.search(cursor=page.cursor)
            found.extend(page.promises)
        assert len(page.promises) < size
        assert [promise.id for promise in found] == [r.id for r in expected]
        for promise, record in zip(found, expected):
            self.check_record(promise, record)

    @rule(milliseconds=ADVANCES)
    def advance(self, milliseconds):
        self.clock.advance(milliseconds)

    @invariant()
    def no_promise_is_lost(self):
        # Cheap: ids are few. Every id the model holds, the store holds.
        for promise_id in self.model.records:
            assert self.store.get(promise_id).id == promise_id


TestStoreAgainstModel = StoreAgainstModel.TestCase
TestStoreAgainstModel.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "pattern, text",
    [("a*b*c", "abc"), ("*x*", "yxy"), ("a**", "a"), ("ab*ba", "aba")],
)
def test_the_models_own_matcher_agrees_with_the_rule(pattern, text):
    assert star_match(pattern, text) is pattern_matches(pattern, text)
