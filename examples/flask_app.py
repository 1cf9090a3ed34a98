"""Durable jobs behind a Flask app, keyed by the client's ``Idempotency-Key``.

``POST /jobs`` with ``{"input": "some text", "delay": 2}`` and an
``Idempotency-Key`` header starts ``summarize`` (see ``jobs.py``) under the id
``job-<key>`` and answers 202 with ``{"id": ...}`` and a ``Location``. The same
request again, on any worker, answers with the same id: the job runs once.
``GET /jobs/<id>`` answers with the job's state and its result or error.

    RESONATE_DB=jobs.db flask --app examples/flask_app run
    RESONATE_DB=jobs.db gunicorn --workers 4 --preload \\
        --chdir examples 'flask_app:create_app()'

Each worker process recovers jobs that a dead worker left pending.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from flask import Flask, request, url_for

from jobs import create_resonate
from resonate_sync import PromiseNotFoundError, Resonate
from resonate_sync.contrib import (
    IdempotencyKeyError,
    invocation_id_from_headers,
    promise_status,
)

Response = Tuple[Any, ...]


def create_app(resonate: Optional[Resonate] = None) -> Flask:
    """The app; with no ``resonate``, one on the environment's store, started."""
    if resonate is None:
        resonate = create_resonate()
        resonate.start()  # also in each worker forked from this process
    app = Flask(__name__)
    app.extensions["resonate"] = resonate

    @app.post("/jobs")
    def start_job() -> Response:
        try:
            job_id = invocation_id_from_headers(request.headers)
        except IdempotencyKeyError as err:
            return {"error": str(err)}, 400
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "input" not in body:
            return {"error": 'the body must be a JSON object with an "input"'}, 400

        handle = resonate.invoke_local(
            "summarize", job_id, body["input"], body.get("delay", 0)
        )
        location = url_for("job_status", job_id=handle.invocation_id)
        return {"id": handle.invocation_id}, 202, {"Location": location}

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str) -> Response:
        try:
            return (promise_status(resonate, job_id), 200)
        except PromiseNotFoundError as err:
            return {"error": str(err)}, 404

    return app
