"""The error hierarchy: builtin bases, fields, codes and pickling."""

from __future__ import annotations

import concurrent.futures
import copy
import pickle

import pytest

from resonate_sync import exceptions
from resonate_sync.exceptions import (
    EncodingError,
    FunctionMismatchError,
    InvalidRequestError,
    LockHeldError,
    LockNotFoundError,
    NotRegisteredError,
    PromiseAlreadyCompletedError,
    PromiseAlreadyExistsError,
    PromiseCanceledError,
    PromiseNotFoundError,
    PromiseTimedOutError,
    ResonateError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    StoreError,
    error_for_code,
)
from resonate_sync.promise import State

LEAVES = [
    (InvalidRequestError, ValueError),
    (EncodingError, TypeError),
    (PromiseNotFoundError, LookupError),
    (PromiseTimedOutError, TimeoutError),
    (PromiseCanceledError, concurrent.futures.CancelledError),
    (NotRegisteredError, LookupError),
    (FunctionMismatchError, RuntimeError),
    (ScheduleNotFoundError, LookupError),
    (LockNotFoundError, LookupError),
]


def test_every_public_error_derives_from_resonate_error():
    for name in exceptions.__all__:
        item = getattr(exceptions, name)
        if isinstance(item, type):
            assert issubclass(item, ResonateError), name


@pytest.mark.parametrize("cls, builtin", LEAVES)
def test_leaves_inherit_the_builtin_they_resemble(cls, builtin):
    error = cls("something went wrong")

    assert isinstance(error, builtin)
    assert isinstance(error, ResonateError)
    with pytest.raises(builtin):
        raise error


def test_a_timed_out_invocation_is_no_rejection_nor_cancellation():
    assert not issubclass(PromiseTimedOutError, PromiseCanceledError)
    assert not issubclass(PromiseCanceledError, TimeoutError)


@pytest.mark.parametrize(
    "cls, code",
    [
        (InvalidRequestError, 40000),
        (PromiseAlreadyCompletedError, 40301),
        (LockHeldError, 40305),
        (PromiseNotFoundError, 40400),
        (ScheduleNotFoundError, 40401),
        (LockNotFoundError, 40402),
        (PromiseAlreadyExistsError, 40900),
        (ScheduleAlreadyExistsError, 40901),
        (StoreError, None),
        (ResonateError, None),
    ],
)
def test_default_codes_match_the_server_and_give_the_http_status(cls, code):
    error = cls("m")

    assert error.code == code
    assert error.status_code == (None if code is None else code // 100)


def test_an_explicit_code_overrides_the_default():
    error = PromiseAlreadyCompletedError("m", code=40303)
    assert (error.code, error.status_code) == (40303, 403)


def test_fields_become_attributes_and_the_message_is_str():
    error = PromiseAlreadyCompletedError(
        "promise 'order-42' is already resolved",
        promise_id="order-42",
        state=State.RESOLVED,
    )

    assert str(error) == "promise 'order-42' is already resolved"
    assert error.message == str(error)
    assert error.promise_id == "order-42"
    assert error.state is State.RESOLVED
    assert error.fields == {"promise_id": "order-42", "state": State.RESOLVED}


ALL_CLASSES = [
    getattr(exceptions, name)
    for name in exceptions.__all__
    if isinstance(getattr(exceptions, name), type)
]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_pickles_with_its_message_code_and_fields(cls):
    error = cls("promise 'p' failed", code=40999, promise_id="p", state=State.REJECTED)
    loaded = pickle.loads(pickle.dumps(error))

    assert type(loaded) is cls
    assert str(loaded) == "promise 'p' failed"
    assert loaded.code == 40999
    assert loaded.promise_id == "p" and loaded.state is State.REJECTED
    assert loaded.fields == error.fields


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_pickles_without_fields_keeping_its_default_code(cls):
    loaded = pickle.loads(pickle.dumps(cls("plain")))
    assert (type(loaded), str(loaded), loaded.code) == (cls, "plain", cls("x").code)


def test_errors_copy_with_their_fields():
    error = NotRegisteredError("function 'f' is not registered", name="f")
    assert copy.deepcopy(error).name == "f"


class AppError(ResonateError, KeyError):
    """A subclass defined outside the library pickles as well."""


def test_subclasses_defined_elsewhere_pickle_too():
    loaded = pickle.loads(pickle.dumps(AppError("app failed", order=7)))

    assert type(loaded) is AppError
    assert loaded.order == 7 and str(loaded) == "app failed"


@pytest.mark.parametrize(
    "code, cls",
    [
        (40000, InvalidRequestError),
        (40301, PromiseAlreadyCompletedError),
        (40302, PromiseAlreadyCompletedError),
        (40303, PromiseAlreadyCompletedError),
        (40304, PromiseAlreadyCompletedError),
        (40305, LockHeldError),
        (40400, PromiseNotFoundError),
        (40401, ScheduleNotFoundError),
        (40402, LockNotFoundError),
        (40900, PromiseAlreadyExistsError),
        (40901, ScheduleAlreadyExistsError),
    ],
)
def test_error_for_code_builds_the_matching_leaf(code, cls):
    error = error_for_code(code, "from the server", promise_id="p")

    assert type(error) is cls
    assert error.code == code
    assert str(error) == "from the server" and error.promise_id == "p"


@pytest.mark.parametrize("code", [50000, 40001, 0])
def test_error_for_an_unknown_code_is_a_plain_resonate_error(code):
    error = error_for_code(code, "odd")
    assert type(error) is ResonateError and error.code == code
