"""Helpers for web apps that start invocations from HTTP requests.

A request handler turns the client's ``Idempotency-Key`` header into an
invocation id, so that a retried request finds the invocation the first one
started instead of starting another; a status route turns the invocation's
durable promise into a JSON-ready dict. Both work on plain mappings and
import no web framework: Flask's ``request.headers``, Django's
``request.headers`` or a ``dict`` all do. ``examples/flask_app.py`` and
``examples/django_app.py`` use them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from .._outcome import outcome
from .._tags import INVOCATION_TAG
from ..exceptions import InvalidRequestError, PromiseNotFoundError
from ..promise import State

if TYPE_CHECKING:  # pragma: no cover
    from ..resonate import Resonate

__all__ = [
    "IDEMPOTENCY_KEY_HEADER",
    "IdempotencyKeyError",
    "invocation_id_for",
    "invocation_id_from_headers",
    "promise_status",
]

#: The request header that carries the client's key (IETF draft
#: "The Idempotency-Key HTTP Header Field").
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"

# No "." (children are "<parent id>.<n>": a key "a.1" would name the first
# child of "a"), no "*" (the search wildcard) and nothing that needs quoting
# in a URL path, so that the id can go into a Location header as it is.
_KEY = re.compile(r"[A-Za-z0-9_\-]{1,128}")


class IdempotencyKeyError(InvalidRequestError):
    """The request's idempotency key is missing or malformed: answer 400.

    :ivar key: the key as received, or None when the header was missing.
    """


def invocation_id_for(key: Optional[str], prefix: str = "job") -> str:
    """The invocation id for an idempotency key: ``"<prefix>-<key>"``.

    A key is 1 to 128 letters, digits, ``-`` or ``_`` (a UUID fits). Pure;
    thread-safe.

    :param key: the client's key, or None when the request had none.
    :param prefix: keeps the ids of one kind of job apart from others.
    :returns: the invocation id.
    :raises IdempotencyKeyError: when the key is missing or malformed.
    """
    if key is None:
        raise IdempotencyKeyError(
            f"the {IDEMPOTENCY_KEY_HEADER} header is required", key=None
        )
    if not _KEY.fullmatch(key):
        raise IdempotencyKeyError(
            f"{IDEMPOTENCY_KEY_HEADER} must be 1 to 128 letters, digits, '-' or '_',"
            f" not {key!r}",
            key=key,
        )
    return f"{prefix}-{key}"


def invocation_id_from_headers(
    headers: Mapping[str, str],
    prefix: str = "job",
    header: str = IDEMPOTENCY_KEY_HEADER,
) -> str:
    """The invocation id for a request's ``Idempotency-Key`` header.

    Looks the header up without regard to case, as HTTP requires, even in a
    plain ``dict``. Pure; thread-safe.

    :param headers: the request's headers.
    :param prefix: see :func:`invocation_id_for`.
    :param header: the header to read.
    :returns: ``"<prefix>-<key>"``.
    :raises IdempotencyKeyError: when the header is missing or malformed.
    """
    return invocation_id_for(_header(headers, header), prefix)


def promise_status(resonate: "Resonate", invocation_id: str) -> Dict[str, Any]:
    """The JSON-ready status of a top-level invocation, read from the store.

    ``{"id", "state"}`` plus ``"result"`` once resolved, or ``"error"``
    (``{"type", "message"}``, no traceback) once rejected, canceled or timed
    out. Any process on the same store gives the same answer. Blocks on one
    store read; thread-safe.

    :param invocation_id: the id the invocation was started under.
    :returns: the status, with ``state`` spelled as the server spells it.
    :raises PromiseNotFoundError: when no invocation has that id; the
        promises of children and other promises are not shown either.
    :raises StoreError: when the store failed.
    """
    promise = resonate.promises.get(invocation_id)
    if promise.tags.get(INVOCATION_TAG) != "true":
        raise PromiseNotFoundError(
            f"no invocation {invocation_id!r}", promise_id=invocation_id
        )

    status: Dict[str, Any] = {"id": promise.id, "state": promise.state.value}
    if promise.state is State.PENDING:
        return status
    try:
        status["result"] = outcome(promise)
    except Exception as error:
        status["error"] = {"type": type(error).__name__, "message": str(error)}
    return status


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None
