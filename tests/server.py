"""A stand-in for the Resonate server v0.8.2, for tests only.

:class:`ResonateApp` maps one request, ``(method, path, query, headers, body)``,
to ``(status, answer)``, where the answer is a JSON value (None for an empty
204) or the plain text of an unknown route. It keeps promises in a
:class:`~resonate_sync.stores.SQLiteStore` and applies the pure rules of
``resonate_sync.promise``; it reproduces the answers recorded in
``../shared/conformance`` (messages, envelope, codes). Locks, schedules,
callbacks and subscriptions live in memory, in the app: they survive a restart
of :class:`TestServer` but not a new app.

:class:`TestServer` serves an app over HTTP on 127.0.0.1 with a background
sweep (expired locks, due schedules), can be stopped and restarted on the same
database file and port, and injects faults (:class:`Fault`) for client tests.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import http.server
import json
import logging
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

import cronsim

from resonate_sync.exceptions import InvalidRequestError, ResonateError
from resonate_sync.promise import EMPTY, State, Value
from resonate_sync.stores import SQLiteStore
from resonate_sync.stores.base import validate_value

__all__ = ["ApiError", "Fault", "OffsetClock", "ResonateApp", "TestServer"]

logger = logging.getLogger(__name__)

VERSION = "0.8.2"
NOT_FOUND_TEXT = "404 page not found"
_ERRORS_URL = "https://docs.resonatehq.io/operate/errors#%d"
_REQUEST_DETAIL = (
    "Request errors are not retryable since they are caused by invalid client requests"
)
_MESSAGES = {
    40000: "The request is invalid",
    40301: "The promise has already been resolved",
    40302: "The promise has already been rejected",
    40303: "The promise has already been canceled",
    40304: "The promise has already been timedout",
    40305: "The lock is already acquired",
    40400: "The specified promise was not found",
    40401: "The specified schedule was not found",
    40402: "The specified lock was not found",
    40900: "The specified promise already exists",
    40901: "The specified schedule already exists",
}
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}

Answer = Tuple[int, Any]


class ApiError(Exception):
    """An error answer: its code, and the detail the envelope carries."""

    def __init__(self, code: int, detail: Optional[str] = None, kind: str = "") -> None:
        super().__init__(detail or _MESSAGES[code])
        self.code = code
        self.detail = detail
        self.kind = kind or (
            "FieldValidationError" if code == 40000 else "RequestError"
        )

    def answer(self) -> Answer:
        """The status and the ``{"error": ...}`` envelope."""
        domain = "server" if self.kind == "ServerError" else "request"
        detail = {
            "@type": self.kind,
            "message": self.detail or _REQUEST_DETAIL,
            "domain": domain,
            "metadata": {"url": _ERRORS_URL % self.code},
        }
        error = {
            "code": self.code,
            "message": _MESSAGES[self.code],
            "details": [detail],
        }
        return self.code // 100, {"error": error}


def invalid(message: str) -> ApiError:
    """A 400 naming the field that failed, as the server words it."""
    return ApiError(40000, message)


class OffsetClock:
    """Wall-clock epoch milliseconds that a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset

    def advance(self, milliseconds: int) -> None:
        """Jump ahead without waiting."""
        with self._lock:
            self.offset += int(milliseconds)


# -- request parsing ------------------------------------------------------


def _json_body(body: Any) -> Dict[str, Any]:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body or ""
    if not text.strip():
        raise invalid("the request body is empty")
    try:
        parsed = json.loads(text)
    except ValueError as err:
        raise invalid(f"the request body is not valid json: {err}") from None
    if not isinstance(parsed, dict):
        raise invalid(f"the request body must be an object, not {parsed!r}")
    return parsed


def _string(
    body: Dict[str, Any], field: str, *, required: bool = True
) -> Optional[str]:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise invalid(f"The field {field.lower()} is required.")
        return None
    if not isinstance(value, str):
        raise invalid(f"the field {field} must be a string, not {value!r}")
    return value


def _integer(body: Dict[str, Any], field: str, *, minimum: Optional[int] = None) -> int:
    value = body.get(field)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"the field {field} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise invalid(
            f"The field {field.lower()} must be be at least length {minimum}."
        )
    return value


def _string_map(body: Dict[str, Any], field: str) -> Dict[str, str]:
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"the field {field} must be an object, not {value!r}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid(f"the field {field}[{key}] must be a string, not {item!r}")
    return value


def _value(body: Dict[str, Any], field: str) -> Value:
    value = body.get(field)
    if value is None:
        return EMPTY
    if not isinstance(value, dict):
        raise invalid(f"the field {field} must be an object, not {value!r}")
    data = value.get("data")
    if data is not None and not isinstance(data, str):
        raise invalid(f"the field {field}.data must be a string, not {data!r}")
    parsed = Value(_string_map(value, "headers") or None, data or None)
    try:
        return validate_value(parsed, field)
    except InvalidRequestError as err:
        raise invalid(str(err)) from None


def _strict(headers: Dict[str, str]) -> bool:
    text = headers.get("strict")
    if text is None or text in _FALSE:
        return False
    if text in _TRUE:
        return True
    raise invalid(f"the header strict must be a boolean, not {text!r}")


def _limit(query: Dict[str, str]) -> int:
    text = query.get("limit")
    if text is None:
        return 0
    try:
        limit = int(text)
    except ValueError:
        raise invalid(f"the field limit must be a number, not {text!r}") from None
    if limit > 100:
        raise invalid("The field limit must be less than or equal to 100.")
    if limit < 0:
        raise invalid("The field limit must be greater than or equal to 0.")
    return limit


def _pattern(query: Dict[str, str]) -> str:
    pattern = query.get("id")
    if pattern is None:
        raise invalid("the field id is required")
    if pattern == "":
        raise invalid("The field id must be be at least length 1.")
    return pattern


def _tags(pairs: List[Tuple[str, str]]) -> Dict[str, str]:
    tags = {}
    for name, value in pairs:
        if name.startswith("tags[") and name.endswith("]"):
            tags.setdefault(name[5:-1], value)
    return tags


# -- schedules ------------------------------------------------------------


def next_run(cron: str, after_ms: int) -> int:
    """The first time strictly after ``after_ms`` that ``cron`` names (UTC).

    :raises ApiError: when ``cron`` is not 5 fields, or 6 with leading seconds.
    """
    start = datetime.datetime.fromtimestamp(after_ms / 1000, datetime.timezone.utc)
    try:
        return int(next(cronsim.CronSim(cron, start)).timestamp() * 1000)
    except (cronsim.CronSimError, StopIteration, ValueError):
        raise invalid("the field cron must be a valid cron expression") from None


def _schedule_json(schedule: Dict[str, Any], row: bool = False) -> Dict[str, Any]:
    # Search rows carry fewer fields than a GET: recorded v0.8.2 behaviour.
    body: Dict[str, Any] = {"id": schedule["id"]}
    if schedule["desc"] and not row:
        body["desc"] = schedule["desc"]
    body["cron"] = schedule["cron"]
    body["tags"] = dict(schedule["tags"])
    body["promiseId"] = "" if row else schedule["promiseId"]
    body["promiseTimeout"] = 0 if row else schedule["promiseTimeout"]
    body["promiseParam"] = {} if row else schedule["promiseParam"].to_json()
    if schedule["promiseTags"] and not row:
        body["promiseTags"] = dict(schedule["promiseTags"])
    for key in ("lastRunTime", "nextRunTime", "idempotencyKey", "createdOn"):
        if schedule.get(key) is not None:
            body[key] = schedule[key]
    return body


def _encode_cursor(query: Dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(query).encode()).decode("ascii")


def _decode_cursor(cursor: str) -> Dict[str, Any]:
    try:
        query = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        return {key: query[key] for key in ("id", "tags", "limit", "before")}
    except (ValueError, KeyError, TypeError, UnicodeError) as err:
        raise invalid(f"the cursor {cursor!r} is not valid: {err}") from None


# -- the app --------------------------------------------------------------


class ResonateApp:
    """The REST surface of the Resonate server over a SQLite store.

    :param store: where promises live; its ``clock`` is the app's clock.

    Thread-safe: one lock serialises the in-memory state.
    """

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.locks: Dict[str, Dict[str, Any]] = {}
        self.schedules: Dict[str, Dict[str, Any]] = {}
        self.callbacks: Dict[str, Dict[str, Any]] = {}
        self.applied: collections.Counter = collections.Counter()
        self._mutex = threading.RLock()
        self._order = 0

    def clock(self) -> int:
        """Now, in epoch milliseconds, as the store sees it."""
        return self.store.clock()

    def __call__(
        self,
        method: str,
        path: str,
        query: List[Tuple[str, str]],
        headers: Dict[str, str],
        body: Any,
    ) -> Answer:
        """Answer one request; see the module docstring."""
        handler, argument = self._route(method.upper(), path)
        if handler is None:
            return 404, NOT_FOUND_TEXT
        request = _Request(
            argument, query, {k.lower(): v for k, v in headers.items()}, body
        )
        try:
            with self._mutex:
                return handler(request)
        except ApiError as err:
            return err.answer()
        except ResonateError as err:
            return _store_error(err).answer()

    def _route(self, method: str, path: str) -> Tuple[Optional[Callable], str]:
        routes = {
            ("POST", "/promises"): self._create,
            ("GET", "/promises"): self._search,
            ("POST", "/locks/acquire"): self._acquire,
            ("POST", "/locks/release"): self._release,
            ("POST", "/locks/heartbeat"): self._heartbeat,
            ("POST", "/schedules"): self._create_schedule,
            ("GET", "/schedules"): self._search_schedules,
        }
        if (method, path) in routes:
            return routes[method, path], ""
        prefixes = [
            ("POST", "/promises/callback/", self._callback),
            ("POST", "/promises/subscribe/", self._subscribe),
            ("GET", "/promises/", self._get),
            ("PATCH", "/promises/", self._complete),
            ("GET", "/schedules/", self._get_schedule),
            ("DELETE", "/schedules/", self._delete_schedule),
        ]
        for verb, prefix, handler in prefixes:
            if method == verb and path.startswith(prefix):
                return handler, urllib.parse.unquote(path[len(prefix) :])
        return None, ""

    # -- promises ---------------------------------------------------------

    def _create(self, request: "_Request") -> Answer:
        body = request.json()
        promise_id = _string(body, "id")
        timeout = _integer(body, "timeout")
        param, tags = _value(body, "param"), _string_map(body, "tags")
        key, strict = request.headers.get("idempotency-key"), _strict(request.headers)

        written = self.store.create(
            promise_id,
            timeout,
            param=param,
            tags=tags,
            idempotency_key=key,
            strict=strict,
        )
        return self._written("create", written)

    def _complete(self, request: "_Request") -> Answer:
        body = request.json()
        state = _completion_state(body.get("state"))
        value = _value(body, "value")
        key, strict = request.headers.get("idempotency-key"), _strict(request.headers)
        if not request.argument:
            raise ApiError(40400)

        written = self.store.complete(
            request.argument, state, value=value, idempotency_key=key, strict=strict
        )
        return self._written("complete", written)

    def _written(self, operation: str, written: Any) -> Answer:
        if written.created:
            self.applied[operation, written.promise.id] += 1
        return (201 if written.created else 200), written.promise.to_json()

    def _get(self, request: "_Request") -> Answer:
        if not request.argument:
            raise ApiError(40400)
        return 200, self.store.get(request.argument).to_json()

    def _search(self, request: "_Request") -> Answer:
        query = request.query()
        if query.get("cursor"):
            page = self.store.search(cursor=query["cursor"])
        else:
            pattern, state = _pattern(query), query.get("state")
            if state is not None and state.lower() not in (
                "pending",
                "resolved",
                "rejected",
            ):
                raise invalid(
                    "The field state must be one of pending, resolved, or rejected."
                )
            tags, limit = _tags(request.pairs), _limit(query)
            page = self.store.search(pattern, state=state, tags=tags, limit=limit)
        promises = [promise.to_json() for promise in page.promises]
        return 200, {"cursor": page.cursor, "promises": promises}

    # -- callbacks and subscriptions --------------------------------------

    def _callback(self, request: "_Request") -> Answer:
        body = request.json()
        root = _string(body, "rootPromiseId")
        _required(body, "recv")
        timeout = _integer(body, "timeout")
        if root == request.argument:
            raise ApiError(
                40000, "promise and root promise must be different", "ServerError"
            )
        callback_id = f"__resume:{root}:{request.argument}"
        return self._register(request.argument, callback_id, timeout)

    def _subscribe(self, request: "_Request") -> Answer:
        body = request.json()
        subscription = _string(body, "id")
        _required(body, "recv")
        timeout = _integer(body, "timeout")
        callback_id = f"__notify:{request.argument}:{subscription}"
        return self._register(request.argument, callback_id, timeout)

    def _register(self, promise_id: str, callback_id: str, timeout: int) -> Answer:
        if not promise_id:
            raise ApiError(40400)
        promise = self.store.get(promise_id)
        answer: Dict[str, Any] = {"callback": None, "promise": promise.to_json()}
        if not promise.pending or callback_id in self.callbacks:
            return 200, answer
        callback = {
            "id": callback_id,
            "promiseId": promise_id,
            "rootPromiseId": "",
            "timeout": timeout,
            "createdOn": self.clock(),
        }
        self.callbacks[callback_id] = callback
        return 201, {**answer, "callback": dict(callback)}

    # -- locks ------------------------------------------------------------

    def _acquire(self, request: "_Request") -> Answer:
        body = request.json()
        resource = _string(body, "resourceId")
        execution, process = _string(body, "executionId"), _string(body, "processId")
        ttl = _integer(body, "ttl", minimum=0)
        held = self.locks.get(resource)
        if held is not None and held["executionId"] != execution:
            raise ApiError(40305)

        lock = {
            "resourceId": resource,
            "executionId": execution,
            "processId": process,
            "ttl": ttl,
            "expiresAt": self.clock() + ttl,
        }
        self.locks[resource] = lock
        return 201, dict(lock)

    def _release(self, request: "_Request") -> Answer:
        body = request.json()
        resource, execution = _string(body, "resourceId"), _string(body, "executionId")
        held = self.locks.get(resource)
        if held is None or held["executionId"] != execution:
            raise ApiError(40402)
        del self.locks[resource]
        return 204, None

    def _heartbeat(self, request: "_Request") -> Answer:
        process = _string(request.json(), "processId")
        now, affected = self.clock(), 0
        for lock in self.locks.values():
            if lock["processId"] == process:
                lock["expiresAt"] = now + lock["ttl"]
                affected += 1
        return 200, {"locksAffected": affected}

    # -- schedules --------------------------------------------------------

    def _create_schedule(self, request: "_Request") -> Answer:
        schedule = self._parse_schedule(request)
        stored = self.schedules.get(schedule["id"])
        if stored is not None:
            key = schedule["idempotencyKey"]
            if key is None or key != stored["idempotencyKey"]:
                raise ApiError(40901)
            return 200, _schedule_json(stored)

        self._order += 1
        schedule.update(order=self._order, createdOn=self.clock(), lastRunTime=None)
        schedule["nextRunTime"] = next_run(schedule["cron"], self.clock())
        self.schedules[schedule["id"]] = schedule
        return 201, _schedule_json(schedule)

    def _parse_schedule(self, request: "_Request") -> Dict[str, Any]:
        body = request.json()
        schedule = {
            "id": _string(body, "id"),
            "desc": _string(body, "desc", required=False),
            "cron": _string(body, "cron"),
            "tags": _string_map(body, "tags"),
            "promiseId": _string(body, "promiseId"),
            "promiseTimeout": _integer(body, "promiseTimeout", minimum=0),
            "promiseParam": _value(body, "promiseParam"),
            "promiseTags": _string_map(body, "promiseTags"),
            "idempotencyKey": request.headers.get("idempotency-key"),
        }
        next_run(schedule["cron"], self.clock())
        return schedule

    def _get_schedule(self, request: "_Request") -> Answer:
        schedule = self.schedules.get(request.argument)
        if schedule is None:
            raise ApiError(40401)
        return 200, _schedule_json(schedule)

    def _delete_schedule(self, request: "_Request") -> Answer:
        if self.schedules.pop(request.argument, None) is None:
            raise ApiError(40401)
        return 204, None

    def _search_schedules(self, request: "_Request") -> Answer:
        query = request.query()
        if query.get("cursor"):
            search = _decode_cursor(query["cursor"])
        else:
            search = {
                "id": _pattern(query),
                "tags": _tags(request.pairs),
                "limit": _limit(query) or 100,
                "before": None,
            }
        rows = [s for s in self.schedules.values() if _schedule_matches(s, search)]
        rows = sorted(rows, key=lambda s: s["order"], reverse=True)[: search["limit"]]
        cursor = None
        if len(rows) == search["limit"]:
            cursor = _encode_cursor({**search, "before": rows[-1]["order"]})
        return 200, {
            "cursor": cursor,
            "schedules": [_schedule_json(s, True) for s in rows],
        }

    # -- background work --------------------------------------------------

    def tick(self) -> None:
        """Drop expired locks and fire due schedules, as the server's sweep does."""
        with self._mutex:
            now = self.clock()
            for resource in [r for r, l in self.locks.items() if l["expiresAt"] <= now]:
                logger.debug("lock on %r expired", resource)
                del self.locks[resource]
            for schedule in list(self.schedules.values()):
                if schedule["nextRunTime"] <= now:
                    self._fire(schedule, now)

    def _fire(self, schedule: Dict[str, Any], now: int) -> None:
        run = schedule["nextRunTime"]
        promise_id = (
            schedule["promiseId"]
            .replace("{{.id}}", schedule["id"])
            .replace("{{.timestamp}}", str(run))
        )
        tags = {
            **schedule["promiseTags"],
            "resonate:schedule": schedule["id"],
            "resonate:invocation": "true",
        }
        try:
            self.store.create(
                promise_id,
                run + schedule["promiseTimeout"],
                param=schedule["promiseParam"],
                tags=tags,
            )
        except ResonateError as err:
            logger.debug(
                "schedule %r could not create %r: %s", schedule["id"], promise_id, err
            )
        schedule["lastRunTime"] = run
        schedule["nextRunTime"] = next_run(schedule["cron"], max(run, now))


@dataclasses.dataclass
class _Request:
    argument: str
    pairs: List[Tuple[str, str]]
    headers: Dict[str, str]
    body: Any

    def json(self) -> Dict[str, Any]:
        return _json_body(self.body)

    def query(self) -> Dict[str, str]:
        first: Dict[str, str] = {}
        for name, value in self.pairs:
            first.setdefault(name, value)
        return first


def _required(body: Dict[str, Any], field: str) -> None:
    if body.get(field) in (None, ""):
        raise invalid(f"The field {field.lower()} is required.")


def _completion_state(text: Any) -> State:
    if text is None or text == "":
        raise invalid("The field state is required.")
    if not isinstance(text, str) or text.upper() not in State.__members__:
        raise invalid(f"invalid state '{text}'")
    state = State(text.upper())
    if state in (State.PENDING, State.REJECTED_TIMEDOUT):
        raise invalid(
            "the field state must be one of resolved, rejected, rejected_canceled"
        )
    return state


def _schedule_matches(schedule: Dict[str, Any], search: Dict[str, Any]) -> bool:
    from resonate_sync.promise import pattern_matches

    if search["before"] is not None and schedule["order"] >= search["before"]:
        return False
    if not pattern_matches(search["id"], schedule["id"]):
        return False
    return all(schedule["tags"].get(k) == v for k, v in search["tags"].items())


def _store_error(err: ResonateError) -> ApiError:
    if err.code is None:
        raise err
    if err.code == 40000 or err.code not in _MESSAGES:
        return invalid(str(err))
    return ApiError(err.code)


# -- over HTTP ------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    """A failure the server injects into the next matching request.

    :ivar kind: ``"status"`` answers ``status`` without applying the request;
        ``"drop-before"`` closes the connection without applying it;
        ``"drop-after"`` applies it, then closes without answering;
        ``"delay-after"`` applies it, then answers ``delay`` seconds late.
    :ivar method: the method to match, or None for any.
    :ivar path: a prefix the path must start with.
    """

    kind: str
    method: Optional[str] = None
    path: str = "/"
    status: int = 503
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        """True when this fault applies to a request."""
        return self.method in (None, method) and path.startswith(self.path)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body of an answer go out in two sends; with Nagle's
    # algorithm on, the body waits for the client's delayed ACK of the headers,
    # about 40 ms per request on Linux (RFC 896, RFC 1122 section 4.2.3.2).
    disable_nagle_algorithm = True
    server: "_HTTPServer"

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        self.server.owner.requests.append((self.command, self.path, headers))
        fault = self.server.owner.take_fault(self.command, path)

        if fault is not None and fault.kind in ("status", "drop-before"):
            self._fail(fault)
            return
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        try:
            status, answer = self.server.owner.app(
                self.command, path, pairs, headers, body
            )
        except Exception as err:  # a 500, like a server whose database failed
            logger.debug("test server failed on %s %s: %s", self.command, path, err)
            status, answer = 500, f"internal error: {err}"
        if fault is not None and self._delay_or_drop(fault):
            return
        self._answer(status, answer)

    def _fail(self, fault: Fault) -> None:
        if fault.kind == "drop-before":
            self.close_connection = True
            return
        self._answer(fault.status, f"injected {fault.status}")

    def _delay_or_drop(self, fault: Fault) -> bool:
        if fault.kind == "drop-after":
            self.close_connection = True
            return True
        self.server.owner.stopping.wait(fault.delay)
        return False

    def _answer(self, status: int, answer: Any) -> None:
        self.send_response(status)
        if isinstance(answer, str):
            payload = answer.encode("utf-8")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        else:
            payload = b"" if answer is None else json.dumps(answer).encode("utf-8")
            self.send_header("Content-Type", "application/json")
            self.send_header("Resonate-Version", VERSION)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("test server: " + format, *args)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: "TestServer"

    def __init__(self, owner: "TestServer", port: int) -> None:
        self.owner = owner
        self.open_sockets: set = set()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection cut by stop() or by a dropped-connection fault.
        logger.debug("test server: connection from %s ended", client_address)


class TestServer:
    """A :class:`ResonateApp` over HTTP on 127.0.0.1, on an ephemeral port.

    :param path: the SQLite file holding the promises.
    :param clock: now in epoch ms for the store, the locks and the schedules.
    :param sweep_interval: seconds between background sweeps.

    ``stop()`` closes the listening socket and every open connection;
    ``start()`` again serves the same file on the same port.
    """

    __test__ = False

    def __init__(
        self,
        path: str,
        *,
        clock: Optional[Callable[[], int]] = None,
        sweep_interval: float = 0.5,
    ) -> None:
        self.path = path
        self.clock = clock or OffsetClock()
        self.sweep_interval = sweep_interval
        self.port = 0
        self.app = ResonateApp(SQLiteStore(path, clock=self.clock))
        self.faults: collections.deque = collections.deque()
        #: (method, raw path, lower-case headers) of recent requests, oldest first.
        self.requests: collections.deque = collections.deque(maxlen=1000)
        self.stopping = threading.Event()
        self._httpd: Optional[_HTTPServer] = None
        self._threads: List[threading.Thread] = []
        self._faults_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "TestServer":
        """Serve (again) in background threads; returns self."""
        if self.app.store is None:
            self.app.store = SQLiteStore(self.path, clock=self.clock)
        self.stopping.clear()
        self._httpd = _HTTPServer(self, self.port)
        self.port = self._httpd.server_address[1]
        self._threads = [
            threading.Thread(
                target=self._httpd.serve_forever, args=(0.05,), daemon=True
            ),
            threading.Thread(target=self._sweep, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and close the store."""
        if self._httpd is None:
            return
        self.stopping.set()
        self._httpd.shutdown()
        for connection in list(self._httpd.open_sockets):
            _cut(connection)
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._httpd = None
        # Under the app's mutex: a request thread still answering must not
        # find its store closed under a running statement.
        with self.app._mutex:
            self.app.store.close()
            self.app.store = None  # type: ignore[assignment]

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each hits the next request it matches, once."""
        with self._faults_lock:
            self.faults.extend(faults)

    def take_fault(self, method: str, path: str) -> Optional[Fault]:
        """Remove and return the first queued fault matching a request."""
        with self._faults_lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    self.faults.remove(fault)
                    return fault
        return None

    def _sweep(self) -> None:
        while not self.stopping.wait(self.sweep_interval):
            try:
                self.app.tick()
            except Exception:  # the sweep must outlive one bad tick
                logger.exception("test server sweep failed")

    def __enter__(self) -> "TestServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def _cut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
