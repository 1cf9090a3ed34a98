"""examples/django_app.py through Django's test client, on SQLite files of its own."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

pytest.importorskip("django")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
WAIT = 10.0


@pytest.fixture(scope="module")
def django_app(tmp_path_factory):
    """The project, imported once (Django's settings are per process)."""
    scratch = tmp_path_factory.mktemp("django")
    saved = dict(os.environ)
    os.environ["RESONATE_DB"] = str(scratch / "import.db")
    sys.path.insert(0, EXAMPLES)
    try:
        import django_app
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sys.path.remove(EXAMPLES)
    yield django_app
    django_app.resonate.shutdown(wait=False)


@pytest.fixture
def log(tmp_path, monkeypatch):
    path = tmp_path / "jobs.log"
    monkeypatch.setenv("JOBS_LOG", str(path))
    monkeypatch.setenv("RESONATE_DB", str(tmp_path / "jobs.db"))
    return path


@pytest.fixture
def client(django_app, log, monkeypatch):
    """A test client whose views use a Resonate on this test's own file."""
    from django.test import Client

    import jobs

    resonate = jobs.create_resonate()
    monkeypatch.setattr(django_app, "resonate", resonate)
    yield Client()
    resonate.shutdown(wait=False)


def post(client, key, body):
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(
        "/jobs", data=json.dumps(body), content_type="application/json",
        headers=headers,
    )


def settled(client, job_id):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        status = client.get(f"/jobs/{job_id}").json()
        if status["state"] != "PENDING":
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id!r} still pending after {WAIT}s")


def test_a_post_answers_202_with_the_id_and_where_to_look(client):
    response = post(client, "order-17", {"input": "three little words"})
    assert response.status_code == 202
    assert response.json() == {"id": "job-order-17"}
    assert response["Location"] == "/jobs/job-order-17"
    assert settled(client, "job-order-17")["result"] == {"words": 3, "characters": 18}


def test_the_same_key_twice_gives_the_same_id_and_runs_the_work_once(client, log):
    first = post(client, "k-1", {"input": "a b"})
    again = post(client, "k-1", {"input": "a b"})
    assert first.json() == again.json() == {"id": "job-k-1"}
    settled(client, "job-k-1")
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["job-k-1"]


def test_a_missing_or_malformed_key_or_body_is_a_400_with_a_json_error(client):
    missing = post(client, None, {"input": "x"})
    assert missing.status_code == 400
    assert "Idempotency-Key" in missing.json()["error"]
    assert post(client, "a*", {"input": "x"}).status_code == 400
    assert post(client, "k", ["input"]).status_code == 400
    assert client.get("/jobs").status_code == 405


def test_pending_rejected_and_unknown_jobs(client):
    post(client, "slow", {"input": "x", "delay": 60})
    assert client.get("/jobs/job-slow").json() == {"id": "job-slow", "state": "PENDING"}

    post(client, "bad", {"input": None})
    assert settled(client, "job-bad")["error"]["type"] == "ValueError"

    assert client.get("/jobs/job-nobody").status_code == 404
