"""examples/flask_app.py served by gunicorn: two workers, --preload, one SQLite file.

The Resonate is made (and started) in the master, before gunicorn forks the
workers. The same request is retried over separate connections, so both
workers are likely to see it; the work must run once.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("gunicorn")
pytest.importorskip("flask")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(port, method, path, body=None, headers=None):
    """One request on a connection of its own: (status, headers, JSON body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        data = None if body is None else json.dumps(body)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def gunicorn_command(port):
    from gunicorn.config import Config

    command = [
        sys.executable, "-m", "gunicorn", "--workers", "2", "--preload",
        "--bind", f"127.0.0.1:{port}", "--chdir", os.path.join(ROOT, "examples"),
        "--graceful-timeout", "5",
    ]
    if "control_socket_disable" in Config().settings:
        command.append("--no-control-socket")  # nothing outside the test's files
    return [*command, "flask_app:create_app()"]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    log = tmp_path / "jobs.log"
    environment = dict(
        os.environ, PYTHONPATH=ROOT, RESONATE_DB=str(tmp_path / "jobs.db"),
        JOBS_LOG=str(log),
    )
    environment.pop("RESONATE_URL", None)
    process = subprocess.Popen(
        gunicorn_command(port), env=environment, cwd=str(tmp_path),
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "gunicorn.err", "w"),
    )
    try:
        wait_until_answering(port, process, tmp_path)
        yield port, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail("gunicorn did not stop on SIGTERM")


def wait_until_answering(port, process, tmp_path):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("gunicorn exited: " + (tmp_path / "gunicorn.err").read_text())
        try:
            request(port, "GET", "/jobs/job-none")
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail("gunicorn did not answer in time")


def test_a_retried_request_runs_the_work_once_across_two_preloaded_workers(server):
    port, log = server
    headers = {"Idempotency-Key": "retry-7"}
    answers = [
        request(port, "POST", "/jobs", {"input": "one two three"}, headers)
        for _ in range(6)
    ]
    for status, response_headers, body in answers:
        assert (status, body) == (202, {"id": "job-retry-7"})
        assert response_headers["Location"].endswith("/jobs/job-retry-7")

    deadline = time.monotonic() + WAIT
    while True:
        status, _, body = request(port, "GET", "/jobs/job-retry-7")
        if body["state"] != "PENDING" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    result = {"words": 3, "characters": 13}
    assert (status, body) == (
        200, {"id": "job-retry-7", "state": "RESOLVED", "result": result}
    )
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["job-retry-7"]


def test_missing_key_and_unknown_job_over_http(server):
    port, _ = server
    assert request(port, "POST", "/jobs", {"input": "x"})[0] == 400
    assert request(port, "GET", "/jobs/job-unknown")[0] == 404
