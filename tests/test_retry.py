"""Retry policies: their delays, when they stop, validation and JSON."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resonate_sync.encoding import decode_json, encode_json
from resonate_sync.exceptions import InvalidRequestError
from resonate_sync.retry import (
    Constant,
    Exponential,
    Linear,
    Never,
    policy_from_json,
)


def delays(policy, attempts=200):
    """The waits a policy asks for until it stops (at most ``attempts``)."""
    found = []
    for attempt in range(1, attempts + 1):
        delay = policy.delay(attempt)
        if delay is None:
            break
        found.append(delay)
    return found


# -- delays and stops -------------------------------------------------------


def test_default_exponential_doubles_from_a_tenth_of_a_second_for_ten_attempts():
    waits = delays(Exponential())

    assert len(waits) == 9  # nine waits between ten attempts
    assert waits[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert waits[-1] == pytest.approx(25.6)
    assert sum(waits) == pytest.approx(51.1)


def test_exponential_is_capped_at_max_delay():
    policy = Exponential(initial_delay=1, factor=3, max_delay=10, max_attempts=None)
    assert delays(policy, 6) == [1.0, 3.0, 9.0, 10.0, 10.0, 10.0]


def test_exponential_without_attempt_limit_never_stops_nor_overflows():
    policy = Exponential(max_attempts=None)

    assert policy.delay(10**9) == 30.0
    assert policy.delay(2_000) == 30.0


def test_exponential_with_factor_one_waits_the_same_every_time():
    assert delays(Exponential(factor=1, max_attempts=4)) == [0.1, 0.1, 0.1]


def test_linear_waits_grow_by_the_increment():
    assert delays(Linear(increment=2, max_attempts=4)) == [2.0, 4.0, 6.0]


def test_constant_waits_the_same_interval():
    assert delays(Constant(interval=0.5, max_attempts=3)) == [0.5, 0.5]


def test_never_stops_after_the_first_failure():
    assert Never().delay(1) is None
    assert delays(Never()) == []


@pytest.mark.parametrize("policy", [Exponential(), Linear(), Constant()])
def test_default_policies_allow_ten_attempts(policy):
    assert policy.delay(9) is not None
    assert policy.delay(10) is None
    assert policy.delay(11) is None


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_max_attempts_counts_every_attempt_including_the_first(max_attempts):
    assert len(delays(Constant(max_attempts=max_attempts))) == max_attempts - 1


def test_delays_are_floats_even_from_whole_numbers():
    assert isinstance(Linear(increment=1).delay(1), float)
    assert isinstance(Constant(interval=2).delay(1), float)


def test_policies_are_immutable_values():
    policy = Exponential()

    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 3
    assert policy == Exponential() and hash(policy) == hash(Exponential())


# -- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    "make, shown",
    [
        (lambda: Exponential(initial_delay=-0.1), "-0.1"),
        (lambda: Exponential(factor="2"), "'2'"),
        (lambda: Exponential(max_delay=math.nan), "nan"),
        (lambda: Linear(increment=None), "None"),
        (lambda: Constant(interval=True), "True"),
        (lambda: Constant(max_attempts=0), "0"),
        (lambda: Exponential(max_attempts=-3), "-3"),
        (lambda: Linear(max_attempts="10"), "'10'"),
    ],
)
def test_bad_fields_are_refused_naming_the_value(make, shown):
    with pytest.raises(InvalidRequestError) as caught:
        make()

    assert shown in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Exponential(max_delay=math.inf),
        lambda: Constant(interval=math.inf),
        lambda: Linear(increment=-math.inf),
    ],
)
def test_infinite_delays_are_refused_since_json_cannot_store_them(make):
    with pytest.raises(InvalidRequestError, match="inf"):
        make()


@pytest.mark.parametrize("bad", [2.5, 1.0])
def test_max_attempts_must_be_a_whole_number(bad):
    with pytest.raises(InvalidRequestError, match=str(bad)):
        Constant(max_attempts=bad)


# -- JSON -------------------------------------------------------------------


def test_to_json_names_the_type_and_every_field():
    assert Exponential().to_json() == {
        "type": "exponential",
        "max_attempts": 10,
        "initial_delay": 0.1,
        "factor": 2.0,
        "max_delay": 30.0,
    }
    assert Never().to_json() == {"type": "never", "max_attempts": 1}


def test_to_json_answers_a_fresh_dict_each_time():
    policy = Linear()
    policy.to_json()["type"] = "changed"
    assert policy.to_json()["type"] == "linear"


NUMBERS = st.floats(min_value=0, max_value=1e6, allow_nan=False)
ATTEMPTS = st.none() | st.integers(min_value=1, max_value=1_000)
POLICIES = st.one_of(
    st.builds(
        Exponential,
        initial_delay=NUMBERS,
        factor=NUMBERS,
        max_delay=NUMBERS,
        max_attempts=ATTEMPTS,
    ),
    st.builds(Linear, increment=NUMBERS, max_attempts=ATTEMPTS),
    st.builds(Constant, interval=NUMBERS, max_attempts=ATTEMPTS),
    st.builds(Never),
)


@given(POLICIES)
def test_every_policy_survives_storage_as_json(policy):
    stored = decode_json(encode_json(policy.to_json()))
    assert policy_from_json(stored) == policy


@given(POLICIES, st.integers(min_value=1, max_value=5_000))
def test_delays_are_finite_and_not_negative(policy, attempt):
    delay = policy.delay(attempt)
    assert delay is None or (math.isfinite(delay) and delay >= 0)


@pytest.mark.parametrize("kind", ["retry", None, "Exponential ", 3])
def test_unknown_policy_type_is_refused_naming_it(kind):
    with pytest.raises(InvalidRequestError, match="unknown retry policy type"):
        policy_from_json({"type": kind})


def test_json_without_type_is_refused():
    with pytest.raises(InvalidRequestError, match="None"):
        policy_from_json({"max_attempts": 3})


def test_unknown_policy_field_is_refused():
    with pytest.raises(InvalidRequestError, match="jitter"):
        policy_from_json({"type": "constant", "jitter": 0.5})


def test_bad_policy_field_from_json_is_refused_naming_the_value():
    with pytest.raises(InvalidRequestError, match="'fast'"):
        policy_from_json({"type": "linear", "increment": "fast"})


def test_json_with_missing_fields_takes_the_defaults():
    assert policy_from_json({"type": "exponential"}) == Exponential()


def test_policy_from_json_leaves_its_argument_unchanged():
    body = {"type": "constant", "interval": 3}
    policy_from_json(body)
    assert body == {"type": "constant", "interval": 3}
