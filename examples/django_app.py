"""Durable jobs behind a one-file Django project, keyed by ``Idempotency-Key``.

The same routes as ``flask_app.py``: ``POST /jobs`` starts ``summarize`` (see
``jobs.py``) under ``job-<key>`` and answers 202 with ``{"id": ...}`` and a
``Location``; ``GET /jobs/<id>`` answers with the job's state and its result
or error.

    RESONATE_DB=jobs.db python examples/django_app.py runserver
    RESONATE_DB=jobs.db gunicorn --workers 4 --chdir examples django_app

Each worker process recovers jobs that a dead worker left pending.
"""

from __future__ import annotations

import json
import os
import sys

from django.conf import settings

settings.configure(
    DEBUG=os.environ.get("DJANGO_DEBUG") == "1",
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret"),
    ALLOWED_HOSTS=os.environ.get("DJANGO_HOSTS", "127.0.0.1,localhost").split(","),
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATABASES={},
)

import django  # noqa: E402

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path, reverse  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_GET, require_POST  # noqa: E402

from jobs import create_resonate  # noqa: E402
from resonate_sync import PromiseNotFoundError  # noqa: E402
from resonate_sync.contrib import (  # noqa: E402
    IdempotencyKeyError,
    invocation_id_from_headers,
    promise_status,
)

resonate = create_resonate()
resonate.start()  # also in each worker forked from this process


@csrf_exempt  # an API for clients that send no cookies
@require_POST
def start_job(request: HttpRequest) -> JsonResponse:
    try:
        job_id = invocation_id_from_headers(request.headers)
    except IdempotencyKeyError as err:
        return JsonResponse({"error": str(err)}, status=400)
    try:
        body = json.loads(request.body)
    except ValueError:
        body = None
    if not isinstance(body, dict) or "input" not in body:
        error = 'the body must be a JSON object with an "input"'
        return JsonResponse({"error": error}, status=400)

    handle = resonate.invoke_local(
        "summarize", job_id, body["input"], body.get("delay", 0)
    )
    response = JsonResponse({"id": handle.invocation_id}, status=202)
    response["Location"] = reverse("job_status", args=[handle.invocation_id])
    return response


@require_GET
def job_status(request: HttpRequest, job_id: str) -> JsonResponse:
    try:
        return JsonResponse(promise_status(resonate, job_id))
    except PromiseNotFoundError as err:
        return JsonResponse({"error": str(err)}, status=404)


urlpatterns = [
    path("jobs", start_job, name="start_job"),
    path("jobs/<str:job_id>", job_status, name="job_status"),
]

application = get_wsgi_application()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
