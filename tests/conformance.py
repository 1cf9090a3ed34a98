"""Replay the recorded Resonate server conversations against any target.

The recordings live in ``../shared/conformance`` beside the checkout (see its README for the
format and the placeholders). A target is a ``send`` callable::

    send(method, path, query, headers, body) -> (status, answer[, headers])

where ``body`` is a JSON value, a :class:`Raw` text sent as it is, or None, and
``answer`` is the parsed JSON answer (None for an empty body) or, for a
non-JSON answer, its text. The same replay then runs in-process against the
test app and over HTTP against a server. ``clock`` returns now in epoch
milliseconds and ``sleep`` waits a number of milliseconds; a target on an
injected clock passes a ``sleep`` that advances that clock.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "CASES_PATH",
    "Mismatch",
    "Raw",
    "Replay",
    "app_sender",
    "case_ids",
    "http_sender",
    "load_cases",
    "match",
    "replay",
]

_RECORDING = os.path.join("conformance", "resonate-rest-v0.8.2.jsonl")
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cases_path() -> str:
    # The recordings live in the shared folder beside the checkout
    # (../shared), wherever the checkout is; RESONATE_CONFORMANCE_CASES
    # names another file.
    given = os.environ.get("RESONATE_CONFORMANCE_CASES")
    if given:
        return given
    for shared in (os.path.join(_REPOSITORY, "..", "shared"), "/work/shared"):
        candidate = os.path.join(shared, _RECORDING)
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    raise FileNotFoundError(
        f"no conformance recordings at ../shared/{_RECORDING}; "
        "set RESONATE_CONFORMANCE_CASES to the file"
    )


CASES_PATH = _cases_path()

#: Allowed difference between the client's and the server's clock.
TOLERANCE_MS = 1000

Send = Callable[..., Tuple[Any, ...]]


class Raw(str):
    """A request body sent as this exact text, not encoded as JSON."""


class Mismatch(AssertionError):
    """An answer that differs from the recording, with where and why."""


def load_cases(path: str = CASES_PATH) -> List[Dict[str, Any]]:
    """Read the recorded cases, one JSON object per line, in file order."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


# -- matching -------------------------------------------------------------


@dataclasses.dataclass
class _Context:
    """What the placeholders of one step refer to."""

    windows: Dict[int, Tuple[int, int]]
    variables: Dict[str, int]
    step: int
    request_timeout: Any = None
    tolerance: int = TOLERANCE_MS


def match(expected: Any, actual: Any, context: _Context, where: str = "body") -> None:
    """Compare an answer with the recording, placeholders included.

    :raises Mismatch: naming the first differing place.
    """
    if isinstance(expected, dict) and _placeholder(expected):
        _match_placeholder(expected, actual, context, where)
    elif isinstance(expected, dict):
        _match_object(expected, actual, context, where)
    elif isinstance(expected, list):
        _match_list(expected, actual, context, where)
    elif type(expected) is not type(actual) or expected != actual:
        raise Mismatch(f"{where}: expected {expected!r}, got {actual!r}")


def _placeholder(expected: Dict[str, Any]) -> bool:
    return any(key.startswith("$") for key in expected)


def _match_object(expected: Dict, actual: Any, context: _Context, where: str) -> None:
    if not isinstance(actual, dict):
        raise Mismatch(f"{where}: expected an object, got {actual!r}")
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        raise Mismatch(f"{where}: missing keys {missing}, extra keys {extra}")
    for key, value in expected.items():
        match(value, actual[key], context, f"{where}.{key}")


def _match_list(expected: List, actual: Any, context: _Context, where: str) -> None:
    if not isinstance(actual, list) or len(actual) != len(expected):
        raise Mismatch(f"{where}: expected {len(expected)} items, got {actual!r}")
    for index, (want, got) in enumerate(zip(expected, actual)):
        match(want, got, context, f"{where}[{index}]")


def _match_placeholder(
    expected: Dict[str, Any], actual: Any, context: _Context, where: str
) -> None:
    if "$time" in expected:
        _match_time(expected, actual, context, where)
    elif "$cursor" in expected:
        _require(isinstance(actual, str) and actual != "", where, expected, actual)
    elif "$string" in expected:
        _require(isinstance(actual, str), where, expected, actual)
    elif "$regex" in expected:
        found = isinstance(actual, str) and re.search(expected["$regex"], actual)
        _require(bool(found), where, expected, actual)
    else:
        raise Mismatch(f"{where}: unknown placeholder {expected!r}")


def _require(ok: bool, where: str, expected: Any, actual: Any) -> None:
    if not ok:
        raise Mismatch(f"{where}: {actual!r} does not match {expected!r}")


def _match_time(
    expected: Dict[str, Any], actual: Any, context: _Context, where: str
) -> None:
    integer = isinstance(actual, int) and not isinstance(actual, bool)
    _require(integer, where, expected, actual)
    kind = expected["$time"]
    if kind == "any":
        return
    if kind == "request-timeout":
        _require(actual == context.request_timeout, where, expected, actual)
    elif kind.startswith("var:"):
        wanted = context.variables.get(kind[4:])
        _require(actual == wanted, where, {**expected, "value": wanted}, actual)
    elif kind == "during-step":
        _match_during(expected, actual, context, where)
    else:
        raise Mismatch(f"{where}: unknown time placeholder {expected!r}")


def _match_during(
    expected: Dict[str, Any], actual: int, context: _Context, where: str
) -> None:
    step = expected.get("step", context.step)
    if step not in context.windows:
        raise Mismatch(f"{where}: step {step} has no recorded time window")
    start, end = context.windows[step]
    plus = expected.get("plus", 0)
    low, high = start + plus - context.tolerance, end + plus + context.tolerance
    ok = low <= actual <= high
    _require(ok, where, {**expected, "window": [start + plus, end + plus]}, actual)


# -- replaying ------------------------------------------------------------


@dataclasses.dataclass
class Replay:
    """The state of one case's replay: time windows, variables and answers."""

    name: str
    windows: Dict[int, Tuple[int, int]] = dataclasses.field(default_factory=dict)
    variables: Dict[str, int] = dataclasses.field(default_factory=dict)
    answers: Dict[int, Any] = dataclasses.field(default_factory=dict)


def replay(
    case: Dict[str, Any],
    send: Send,
    clock: Callable[[], int],
    sleep: Callable[[int], None],
    *,
    wait: Optional[Callable[[int], None]] = None,
    tolerance: int = TOLERANCE_MS,
) -> Replay:
    """Replay every step of ``case`` through ``send``, stopping at the first mismatch.

    :param clock: now in epoch milliseconds, as the target sees it.
    :param sleep: waits the given milliseconds (or advances an injected clock).
    :param wait: waits between the attempts of a ``repeat_until_match`` step;
        ``sleep`` when None.
    :raises Mismatch: naming the case, the step and the difference.
    """
    wait = wait or sleep
    state = Replay(case["name"])
    for number, step in enumerate(case["steps"]):
        if "sleep_ms" in step:
            sleep(step["sleep_ms"])
            continue
        try:
            _replay_step(number, step, state, send, clock, wait, tolerance)
        except Mismatch as mismatch:
            raise Mismatch(f"{case['name']} step {number}: {mismatch}") from None
    return state


def _replay_step(
    number: int,
    step: Dict[str, Any],
    state: Replay,
    send: Send,
    clock: Callable[[], int],
    sleep: Callable[[int], None],
    tolerance: int,
) -> None:
    repeat = step.get("repeat_until_match")
    waited = 0
    while True:
        try:
            _exchange(number, step, state, send, clock, tolerance)
            return
        except Mismatch:
            if repeat is None or waited >= repeat["max_ms"]:
                raise
        sleep(repeat["interval_ms"])
        waited += repeat["interval_ms"]


def _exchange(
    number: int,
    step: Dict[str, Any],
    state: Replay,
    send: Send,
    clock: Callable[[], int],
    tolerance: int,
) -> None:
    request = step["request"]
    start = clock()
    body = _fill(request.get("body"), state, start)
    if "raw_body" in request:
        body = Raw(request["raw_body"])
    query = [
        (name, _fill(value, state, start)) for name, value in request.get("query", [])
    ]
    headers = dict(request.get("headers", {}))
    answer = send(request["method"], request["path"], query, headers, body)
    state.windows[number] = (start, clock())
    state.answers[number] = answer[1]

    timeout = body.get("timeout") if isinstance(body, dict) else None
    context = _Context(state.windows, state.variables, number, timeout, tolerance)
    _check_answer(step, answer, context)


def _check_answer(
    step: Dict[str, Any], answer: Sequence[Any], context: _Context
) -> None:
    response = step["response"]
    status, payload = answer[0], answer[1]
    if status != response["status"]:
        raise Mismatch(
            f"status: expected {response['status']}, got {status} {payload!r}"
        )
    if "body_text" in response:
        match(response["body_text"], payload, context, "body_text")
    else:
        match(response["body"], payload, context)
    version = step.get("server_version")
    if version is not None and len(answer) > 2:
        got = _header(answer[2], "resonate-version")
        match(version, got, context, "header Resonate-Version")


def _header(headers: Dict[str, str], name: str) -> Optional[str]:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _fill(template: Any, state: Replay, now: int) -> Any:
    """Replace the request placeholders: ``$now+`` and ``$cursor-from-step``."""
    if isinstance(template, dict) and "$now+" in template:
        value = now + template["$now+"]
        if "as" in template:
            state.variables[template["as"]] = value
        return value
    if isinstance(template, dict) and "$cursor-from-step" in template:
        answer = state.answers.get(template["$cursor-from-step"])
        return answer.get("cursor") if isinstance(answer, dict) else None
    if isinstance(template, dict):
        return {key: _fill(value, state, now) for key, value in template.items()}
    if isinstance(template, list):
        return [_fill(value, state, now) for value in template]
    return template


def case_ids(cases: Sequence[Dict[str, Any]]) -> List[str]:
    """Test ids named after the cases."""
    return [case["name"] for case in cases]


# -- targets --------------------------------------------------------------


def _encode(body: Any) -> Optional[bytes]:
    if isinstance(body, Raw):
        return body.encode("utf-8")
    return None if body is None else json.dumps(body).encode("utf-8")


def app_sender(app: Callable[..., Tuple[int, Any]]) -> Send:
    """A ``send`` that calls an in-process app with the request as on the wire.

    The body goes as UTF-8 bytes and the answer comes back through JSON, so
    the app sees and returns what an HTTP exchange would carry.
    """

    def send(method: str, path: str, query: Any, headers: Any, body: Any) -> Tuple:
        status, answer = app(method, path, list(query), dict(headers), _encode(body))
        if isinstance(answer, str):
            return status, answer
        return status, json.loads(json.dumps(answer))

    return send


def http_sender(base_url: str, timeout: float = 30.0) -> Send:
    """A ``send`` that makes one HTTP request per call to ``base_url``.

    The path goes unchanged, the query is percent-encoded, a body goes with
    ``Content-Type: application/json``. Returns status, answer and headers.
    """
    parts = urllib.parse.urlsplit(base_url)
    connection_class = (
        http.client.HTTPSConnection
        if parts.scheme == "https"
        else http.client.HTTPConnection
    )

    def send(method: str, path: str, query: Any, headers: Any, body: Any) -> Tuple:
        target = parts.path.rstrip("/") + path
        if query:
            target += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        data, headers = _encode(body), dict(headers)
        if data is not None:
            headers["Content-Type"] = "application/json"

        connection = connection_class(parts.netloc, timeout=timeout)
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            return _parse(response.status, response.read(), dict(response.getheaders()))
        finally:
            connection.close()

    return send


def _parse(status: int, raw: bytes, headers: Dict[str, str]) -> Tuple:
    kind = _header(headers, "content-type") or ""
    if "json" not in kind:
        return status, raw.decode("utf-8", "replace"), headers
    return status, (json.loads(raw) if raw else None), headers
