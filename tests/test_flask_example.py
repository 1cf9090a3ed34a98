"""examples/flask_app.py through Flask's test client, on a SQLite file of its own."""

from __future__ import annotations

import os
import sys
import time

import pytest

flask = pytest.importorskip("flask")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)

import flask_app  # noqa: E402
import jobs  # noqa: E402

WAIT = 10.0


@pytest.fixture
def log(tmp_path, monkeypatch):
    """The file the job's record step appends a line to, one per run."""
    path = tmp_path / "jobs.log"
    monkeypatch.setenv("JOBS_LOG", str(path))
    monkeypatch.setenv("RESONATE_DB", str(tmp_path / "jobs.db"))
    return path


@pytest.fixture
def client(log):
    resonate = jobs.create_resonate()
    yield flask_app.create_app(resonate).test_client()
    resonate.shutdown(wait=False)  # a job sleeping durably stays pending


def post(client, key, body):
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post("/jobs", json=body, headers=headers)


def settled(client, job_id):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        status = client.get(f"/jobs/{job_id}").get_json()
        if status["state"] != "PENDING":
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id!r} still pending after {WAIT}s")


def test_a_post_answers_202_with_the_id_and_where_to_look(client):
    response = post(client, "order-17", {"input": "three little words"})
    assert response.status_code == 202
    assert response.get_json() == {"id": "job-order-17"}
    assert response.headers["Location"] == "/jobs/job-order-17"
    assert settled(client, "job-order-17") == {
        "id": "job-order-17",
        "state": "RESOLVED",
        "result": {"words": 3, "characters": 18},
    }


def test_the_same_key_twice_gives_the_same_id_and_runs_the_work_once(client, log):
    first = post(client, "k-1", {"input": "a b"})
    again = post(client, "k-1", {"input": "a b"})
    assert first.get_json() == again.get_json() == {"id": "job-k-1"}
    settled(client, "job-k-1")
    assert post(client, "k-1", {"input": "a b"}).status_code == 202  # after it ended
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["job-k-1"]


def test_a_missing_or_malformed_key_is_a_400_with_a_json_error(client):
    missing = post(client, None, {"input": "x"})
    assert missing.status_code == 400
    assert "Idempotency-Key" in missing.get_json()["error"]
    assert post(client, "a.b", {"input": "x"}).status_code == 400
    assert post(client, "k", {"no input": 1}).status_code == 400
    garbled = client.post("/jobs", data="{", headers={"Idempotency-Key": "k"})
    assert garbled.status_code == 400


def test_a_job_that_sleeps_durably_is_pending(client):
    post(client, "slow", {"input": "x", "delay": 60})
    response = client.get("/jobs/job-slow")
    assert response.status_code == 200
    assert response.get_json() == {"id": "job-slow", "state": "PENDING"}


def test_input_that_is_not_text_rejects_the_job_at_once(client):
    post(client, "bad", {"input": 42})
    status = settled(client, "job-bad")
    assert status["state"] == "REJECTED"
    message = "input must be a string, not 42"
    assert status["error"] == {"type": "ValueError", "message": message}


def test_unknown_ids_and_child_promises_are_404(client):
    assert client.get("/jobs/job-nobody").status_code == 404
    post(client, "parent", {"input": "x y"})
    settled(client, "job-parent")
    response = client.get("/jobs/job-parent.1")  # the word count, a child
    assert response.status_code == 404
    assert "job-parent.1" in response.get_json()["error"]
