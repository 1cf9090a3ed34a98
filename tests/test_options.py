"""Options of an invocation: validation, merging and defaults."""

from __future__ import annotations

import dataclasses
import math

import pytest

from resonate_sync.exceptions import InvalidRequestError
from resonate_sync.options import DEFAULT_TIMEOUT, Options
from resonate_sync.retry import Constant, Exponential, Never


def test_an_empty_options_sets_nothing():
    options = Options()
    assert all(getattr(options, f.name) is None for f in dataclasses.fields(options))


def test_resolved_fills_every_unset_field_with_its_default():
    resolved = Options().resolved()

    assert resolved.timeout == DEFAULT_TIMEOUT == 24 * 60 * 60
    assert resolved.retry_policy == Exponential()
    assert resolved.tags == {}
    assert resolved.idempotency_key is None  # the runtime uses the invocation id
    assert resolved.non_retryable == ()
    assert resolved.durable is True


def test_resolved_keeps_what_is_set():
    options = Options(
        timeout=5,
        retry_policy=Never(),
        tags={"env": "test"},
        idempotency_key="key",
        non_retryable=(KeyError,),
        durable=False,
    )
    assert options.resolved() == options


def test_merged_replaces_only_the_fields_the_other_sets():
    base = Options(timeout=10, tags={"a": "1"}, retry_policy=Never())
    merged = base.merged(Options(tags={"b": "2"}, durable=False))

    assert merged.timeout == 10
    assert merged.retry_policy == Never()
    assert merged.tags == {"b": "2"}  # replaced, not combined
    assert merged.durable is False


def test_merged_with_none_is_the_same_options():
    base = Options(timeout=3)
    assert base.merged(None) is base


def test_merging_keeps_false_and_empty_values_that_are_set():
    merged = Options(durable=True, tags={"a": "b"}).merged(
        Options(durable=False, tags={})
    )
    assert merged.durable is False and merged.tags == {}


def test_merging_is_layered_call_over_register_over_defaults():
    registered = Options(timeout=60, retry_policy=Constant(interval=1))
    call = Options(timeout=5)
    resolved = Options().merged(registered).merged(call).resolved()

    assert resolved.timeout == 5
    assert resolved.retry_policy == Constant(interval=1)
    assert resolved.durable is True


def test_options_are_immutable_and_tags_are_copied():
    tags = {"env": "test"}
    options = Options(tags=tags)
    tags["env"] = "changed"

    assert options.tags == {"env": "test"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.timeout = 3


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, True, "5", [5]])
def test_bad_timeout_is_refused_naming_the_value(bad):
    with pytest.raises(InvalidRequestError) as caught:
        Options(timeout=bad)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("good", [0.001, 1, 3600.5])
def test_timeout_takes_any_positive_finite_seconds(good):
    assert Options(timeout=good).timeout == good


@pytest.mark.parametrize("bad", [Exponential, "exponential", {"type": "never"}])
def test_retry_policy_must_be_a_policy_instance(bad):
    with pytest.raises(InvalidRequestError) as caught:
        Options(retry_policy=bad)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("bad", [{"k": 1}, {2: "v"}, "env=test"])
def test_bad_tags_are_refused(bad):
    with pytest.raises(InvalidRequestError):
        Options(tags=bad)


@pytest.mark.parametrize("bad", ["", 42, b"key"])
def test_bad_idempotency_key_is_refused_naming_the_value(bad):
    with pytest.raises(InvalidRequestError) as caught:
        Options(idempotency_key=bad)
    assert repr(bad) in str(caught.value)


def test_non_retryable_takes_one_type_or_a_sequence_of_them():
    assert Options(non_retryable=KeyError).non_retryable == (KeyError,)
    assert Options(non_retryable=[KeyError, OSError]).non_retryable == (
        KeyError,
        OSError,
    )


@pytest.mark.parametrize("bad", [[KeyError, "ValueError"], [int], [ValueError()]])
def test_non_retryable_refuses_anything_but_exception_types(bad):
    with pytest.raises(InvalidRequestError, match="non_retryable"):
        Options(non_retryable=bad)


def test_validation_errors_are_value_errors():
    with pytest.raises(ValueError):
        Options(timeout=-5)
