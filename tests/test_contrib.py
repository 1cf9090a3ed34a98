"""resonate_sync.contrib: invocation ids from idempotency keys, and job status."""

from __future__ import annotations

import pickle

import pytest

from resonate_sync import InvalidRequestError, Never, PromiseNotFoundError, Resonate
from resonate_sync import SQLiteStore
from resonate_sync.contrib import (
    IdempotencyKeyError,
    invocation_id_for,
    invocation_id_from_headers,
    promise_status,
)

WAIT = 10.0


def test_the_key_header_is_found_in_any_case_even_in_a_plain_dict():
    assert invocation_id_from_headers({"idempotency-key": "abc"}) == "job-abc"
    assert invocation_id_from_headers({"IDEMPOTENCY-KEY": "a"}, "order") == "order-a"
    assert invocation_id_from_headers({"X-Key": "k1"}, header="x-key") == "job-k1"


def test_a_missing_key_is_a_400_error_that_says_which_header():
    with pytest.raises(IdempotencyKeyError) as raised:
        invocation_id_from_headers({"Content-Type": "application/json"})
    assert raised.value.key is None
    assert raised.value.status_code == 400
    assert "Idempotency-Key" in str(raised.value)
    assert isinstance(raised.value, InvalidRequestError)


@pytest.mark.parametrize(
    "key", ["", "a.1", "a*", "has space", "slash/key", "é", "x" * 129, "line\nbreak"]
)
def test_a_malformed_key_is_refused_showing_it(key):
    """Dots would name a child's id, ``*`` is the search wildcard."""
    with pytest.raises(IdempotencyKeyError) as raised:
        invocation_id_for(key)
    assert raised.value.key == key
    assert repr(key) in str(raised.value)


def test_a_uuid_is_a_good_key_and_the_error_pickles():
    key = "3f2b8c1e-9d4a-4b6e-8f00-1a2b3c4d5e6f"
    assert invocation_id_for(key) == f"job-{key}"
    error = pickle.loads(pickle.dumps(IdempotencyKeyError("bad", key="k")))
    assert (error.key, str(error)) == ("k", "bad")


@pytest.fixture
def resonate(tmp_path):
    resonate = Resonate(SQLiteStore(str(tmp_path / "contrib.db")))
    resonate.register(lambda ctx, n: {"n": n}, name="ok")

    def fails(ctx):
        raise KeyError("no such order")

    resonate.register(fails, retry_policy=Never())
    yield resonate
    resonate.shutdown(wait=False)


def test_status_of_a_resolved_invocation_has_its_result(resonate):
    resonate.invoke_local("ok", "job-1", 7).result(WAIT)
    assert promise_status(resonate, "job-1") == {
        "id": "job-1", "state": "RESOLVED", "result": {"n": 7}
    }


def test_status_of_a_rejected_invocation_has_its_error_without_traceback(resonate):
    resonate.invoke_local("fails", "job-2").exception(WAIT)
    status = promise_status(resonate, "job-2")
    assert status["state"] == "REJECTED"
    assert status["error"] == {"type": "KeyError", "message": "'no such order'"}
    assert "result" not in status


def test_status_of_pending_and_canceled_invocations(resonate):
    resonate.promises.create(
        "job-3", param={"func": "ok", "args": [1], "kwargs": {}},
        tags={"resonate:invocation": "true"},
    )
    assert promise_status(resonate, "job-3") == {"id": "job-3", "state": "PENDING"}
    resonate.promises.cancel("job-3")
    status = promise_status(resonate, "job-3")
    assert status["state"] == "REJECTED_CANCELED"
    assert status["error"]["type"] == "PromiseCanceledError"


def test_unknown_ids_and_promises_that_are_not_invocations_are_not_found(resonate):
    resonate.promises.create("plain")
    for promise_id in ("missing", "plain"):
        with pytest.raises(PromiseNotFoundError):
            promise_status(resonate, promise_id)
