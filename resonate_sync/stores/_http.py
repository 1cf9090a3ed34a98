"""HTTP plumbing for the remote store: one session, retries, error translation.

Everything that touches ``requests`` is here, so that no ``requests`` exception
reaches a caller: transport failures become
:class:`~resonate_sync.exceptions.StoreError` and the server's refusals become
the typed errors of :func:`~resonate_sync.exceptions.error_for_code`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.parse
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    Union,
)

import requests

from ..exceptions import InvalidRequestError, ResonateError, StoreError, error_for_code
from ..promise import State

__all__ = [
    "Answer",
    "Transport",
    "idempotency_key",
    "key_header",
    "quote_id",
    "refusal",
    "search_params",
]

logger = logging.getLogger(__name__)

_VISIBLE = re.compile(r"[\x20-\x7e]+\Z")

Timeout = Union[float, Tuple[float, float]]

#: Statuses worth another attempt: the server or a proxy in front of it failed.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)

_STATES_BY_CODE = {
    40301: State.RESOLVED,
    40302: State.REJECTED,
    40303: State.REJECTED_CANCELED,
    40304: State.REJECTED_TIMEDOUT,
}


class Answer(NamedTuple):
    """A non-transient answer: status, parsed JSON body, and attempts made."""

    status: int
    body: Any
    attempts: int

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300


class Transport:
    """Requests to one Resonate server, retried when they fail transiently.

    :param url: the server's base URL, e.g. ``http://127.0.0.1:8001``.
    :param auth: ``(user, password)`` for HTTP basic authentication.
    :param token: a bearer token, sent as ``Authorization: Bearer ...``.
    :param timeout: seconds to connect and to wait for the answer.
    :param retries: attempts after the first before giving up.
    :param backoff: the first delay in seconds; it doubles per retry.
    :param max_backoff: the longest delay between attempts.
    :param session: a session to use instead of a new one; the caller closes it.
    :param sleep: waits between attempts (injected by tests).

    Thread-safe as far as ``requests.Session`` is: one pool, many threads.
    After ``os.fork()`` the child opens a session of its own, unless the
    session was given.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: Optional[Tuple[str, str]] = None,
        token: Optional[str] = None,
        timeout: Timeout = (5, 30),
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        session: Optional[requests.Session] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if auth is not None and token is not None:
            raise InvalidRequestError("give auth or token, not both")
        if retries < 0 or backoff < 0:
            raise InvalidRequestError(
                f"retries and backoff must be >= 0, not {retries!r} and {backoff!r}"
            )
        self.url = _checked_url(url)
        self.timeout = timeout
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self._sleep = sleep
        self._owns_session = session is None
        self._auth = auth
        self._pid = os.getpid()
        self.session = session or self._new_session()
        if auth is not None:
            self.session.auth = auth
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def close(self) -> None:
        """Close the session's pooled connections, if this transport made it."""
        if self._owns_session:
            self.session.close()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.auth = self._auth
        return session

    def _check_fork(self) -> None:
        # A forked child inherits the pooled keep-alive sockets: parent and
        # child would then write requests into, and read answers from, the
        # same connection. The child leaves them to the parent, unclosed.
        if self._pid != os.getpid() and self._owns_session:
            self._pid = os.getpid()
            self.session = self._new_session()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Optional[List[Tuple[str, str]]] = None,
        body: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Answer:
        """Send a request, retrying transient failures with exponential backoff.

        Blocks for up to the sum of the timeouts and delays.
        :param path: already percent-encoded.
        :returns: the first answer that is not transient, 2xx or not.
        :raises StoreError: when every attempt failed transiently, or the
            server's answer is not the JSON of a Resonate server.
        """
        self._check_fork()
        prepared = self._prepare(method, path, params, body, headers)
        attempt = 0
        while True:
            attempt += 1
            failure = self._attempt(method, path, prepared)
            if isinstance(failure, Answer):
                return failure._replace(attempts=attempt)
            if attempt > self.retries:
                raise StoreError(
                    f"{method} {path} failed after {attempt} attempts: {failure}"
                ) from (failure if isinstance(failure, Exception) else None)
            self._wait(method, path, attempt, failure)

    def _prepare(
        self,
        method: str,
        path: str,
        params: Optional[List[Tuple[str, str]]],
        body: Optional[Mapping[str, Any]],
        headers: Optional[Mapping[str, str]],
    ) -> requests.PreparedRequest:
        request = requests.Request(
            method,
            self.url + path,
            json=body,
            headers={**self._headers, **(headers or {})},
        )
        prepared = self.session.prepare_request(request)
        # requests drops the dot segments of a path and decodes %2E back to
        # '.', so an id such as ".." would address another route: the URL is
        # set here exactly as encoded (RFC 3986, section 5.2.4).
        query = urllib.parse.urlencode(params or [], quote_via=urllib.parse.quote)
        prepared.url = self.url + path + ("?" + query if query else "")
        return prepared

    def _attempt(
        self, method: str, path: str, prepared: requests.PreparedRequest
    ) -> Any:
        # Returns an Answer, or what went wrong (an exception or a status text).
        settings = self.session.merge_environment_settings(
            prepared.url or self.url, {}, None, None, None
        )
        try:
            response = self.session.send(prepared, timeout=self.timeout, **settings)
        except _TRANSIENT as err:
            return err
        except requests.RequestException as err:
            raise StoreError(f"{method} {path} failed: {err}") from err
        except (ValueError, UnicodeError) as err:  # e.g. a header http.client refuses
            raise InvalidRequestError(f"{method} {path} cannot be sent: {err}") from err

        logger.debug("%s %s answered %d", method, path, response.status_code)
        if response.status_code in RETRY_STATUSES:
            return f"status {response.status_code} {response.text[:200]!r}"
        return Answer(response.status_code, _json(method, path, response), 1)

    def _wait(self, method: str, path: str, attempt: int, failure: Any) -> None:
        delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        logger.warning(
            "%s %s failed (%s); retry %d of %d in %.2fs",
            method,
            path,
            failure,
            attempt,
            self.retries,
            delay,
        )
        self._sleep(delay)


def _checked_url(url: Any) -> str:
    # Refused here, once, rather than as a requests error on every call.
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequestError(
            f"server url must look like http://host:port, not {url!r}"
        )
    checked: str = url.rstrip("/")
    return checked


def _json(method: str, path: str, response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError) as err:
        raise StoreError(
            f"{method} {path} answered {response.status_code} with"
            f" {response.text[:200]!r}, not the JSON of a Resonate server"
        ) from err


def refusal(answer: Answer, subject: str, **fields: Any) -> ResonateError:
    """The typed error for a server's non-2xx answer about ``subject``.

    :param subject: what was refused, e.g. ``"promise 'order-42'"``.
    :param fields: carried by the error (``promise_id``, ``schedule_id``...).
    """
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return StoreError(
            f"{subject}: unexpected answer {answer.status} {answer.body!r}",
            status=answer.status,
        )
    code = error["code"]
    if code in _STATES_BY_CODE:
        fields.setdefault("state", _STATES_BY_CODE[code])
    return error_for_code(code, f"{subject}: {_detail(error)}", **fields)


def _detail(error: Dict[str, Any]) -> str:
    # A 400 names the bad field in its first detail; other codes say it all.
    message = str(error.get("message") or "refused")
    details = error.get("details") or []
    if error.get("code") == 40000 and details and isinstance(details[0], dict):
        message = str(details[0].get("message") or message)
    return (message[:1].lower() + message[1:]).rstrip(".")


# -- encoding requests ----------------------------------------------------


def quote_id(identifier: str) -> str:
    """An id as one percent-encoded UTF-8 path segment."""
    # Ids may hold '/', '.', spaces, '%', '?', '#' and any Unicode (recorded
    # create/id-* cases). An id of only dots would be a dot segment, which
    # URL handling anywhere on the way may remove, so its dots go encoded.
    if identifier in (".", ".."):
        return "%2E" * len(identifier)
    return urllib.parse.quote(identifier, safe="")


def idempotency_key(given: Optional[str], identifier: str) -> str:
    """The key to send: ``given``, or by default the id, percent-encoded.

    :raises InvalidRequestError: when ``given`` is not printable ASCII.
    """
    # A header value is ASCII (RFC 9110, section 5.5); percent-encoding
    # leaves a plain ASCII id unchanged.
    if given is None:
        return urllib.parse.quote(identifier, safe="")
    if not isinstance(given, str) or not _VISIBLE.match(given):
        raise InvalidRequestError(
            f"idempotency key must be non-empty printable ascii, not {given!r}"
        )
    return given


def key_header(key: str, strict: bool) -> Dict[str, str]:
    """The ``idempotency-key`` and ``strict`` headers of a create or complete."""
    return {"idempotency-key": key, "strict": "true" if strict else "false"}


def search_params(
    pattern: Optional[str],
    tags: Optional[Mapping[str, str]],
    limit: Optional[int],
    cursor: Optional[str],
) -> List[Tuple[str, str]]:
    """The query of a search; with a cursor, the cursor alone."""
    if cursor is not None:
        return [("cursor", cursor)]
    params = [] if pattern is None else [("id", pattern)]
    params.extend((f"tags[{key}]", value) for key, value in (tags or {}).items())
    if limit is not None:
        params.append(("limit", str(limit)))
    return params
