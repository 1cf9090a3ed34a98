"""The recorded Resonate server conversations, replayed against our targets.

(a) in-process: the test app on a SQLiteStore whose clock the replay moves;
(b) over HTTP: the test server on 127.0.0.1;
(c) over HTTP: a real Resonate server, when ``RESONATE_TEST_URL`` is set.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any, Dict, Iterator

import pytest

from conformance import (
    Mismatch,
    app_sender,
    case_ids,
    http_sender,
    load_cases,
    match,
    replay,
    _Context,
)
from resonate_sync.stores import SQLiteStore
from server import OffsetClock, ResonateApp, TestServer

CASES = load_cases()
STORE_CASES = [
    case
    for case in CASES
    if case["name"].split("/")[0] in ("create", "get", "complete", "search")
]
SURFACE_CASES = [case for case in CASES if case not in STORE_CASES]
REAL_URL = os.environ.get("RESONATE_TEST_URL")


class FakeClock:
    """Epoch milliseconds that move only when told to."""

    def __init__(self) -> None:
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now

    def advance(self, milliseconds: int) -> None:
        self.now += milliseconds


def real_sleep(milliseconds: int) -> None:
    time.sleep(milliseconds / 1000)


@pytest.fixture
def app(tmp_path: Any) -> Iterator[ResonateApp]:
    store = SQLiteStore(tmp_path / "promises.db", clock=FakeClock())
    yield ResonateApp(store)
    store.close()


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: Any) -> Iterator[TestServer]:
    path = str(tmp_path_factory.mktemp("conformance") / "promises.db")
    with TestServer(path, clock=OffsetClock(), sweep_interval=0.5) as server:
        yield server


def test_all_recorded_cases_are_loaded() -> None:
    assert len(CASES) == 74
    assert len(set(case_ids(CASES))) == 74
    assert len(STORE_CASES) == 52


@pytest.mark.parametrize("case", STORE_CASES, ids=case_ids(STORE_CASES))
def test_store_case_in_process(case: Dict[str, Any], app: ResonateApp) -> None:
    """Promise cases, through the app on SQLiteStore, on an injected clock."""
    clock = app.store.clock

    def advance(milliseconds: int) -> None:
        clock.advance(milliseconds)
        app.tick()

    replay(case, app_sender(app), clock, advance, tolerance=0)


@pytest.mark.parametrize("case", SURFACE_CASES, ids=case_ids(SURFACE_CASES))
def test_surface_case_in_process(case: Dict[str, Any], app: ResonateApp) -> None:
    """Locks, schedules, callbacks and errors, with time moved by the replay."""
    clock = app.store.clock

    def advance(milliseconds: int) -> None:
        clock.advance(milliseconds)
        app.tick()

    replay(case, app_sender(app), clock, advance, tolerance=0)


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_case_over_http(case: Dict[str, Any], http_server: TestServer) -> None:
    """Every case over real HTTP; pauses are real, cron waits jump the clock."""
    clock = http_server.clock

    def jump(milliseconds: int) -> None:
        clock.advance(milliseconds)
        http_server.app.tick()

    replay(case, http_sender(http_server.url), clock, real_sleep, wait=jump)


# Defined only when RESONATE_TEST_URL names a server to check against:
# without one there is nothing to run, and nothing is reported as skipped.
if REAL_URL:

    @pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
    def test_case_against_real_server(case: Dict[str, Any]) -> None:
        """Every case against a real Resonate server, on the wall clock."""
        assert REAL_URL is not None
        clock = OffsetClock()
        replay(case, http_sender(REAL_URL), clock, real_sleep)


# -- the matcher can fail -------------------------------------------------


def _context() -> _Context:
    # Step 0 ran from ...000 to ...050; T1 was 5; the request's timeout was 7.
    return _Context({0: (1_000_000_000_000, 1_000_000_000_050)}, {"T1": 5}, 0, 7)


@pytest.mark.parametrize(
    "expected, actual",
    [
        ({"a": 1}, {"a": 1, "b": 2}),
        ({"a": 1, "b": 2}, {"a": 1}),
        ({"a": 1}, {"a": True}),
        ({"a": 1}, {"a": 1.0}),
        ([1, 2], [2, 1]),
        ({"$time": "during-step"}, 1_000_000_002_000),
        ({"$time": "during-step", "plus": 30000}, 1_000_000_000_000),
        ({"$time": "var:T1"}, 6),
        ({"$time": "request-timeout"}, 8),
        ({"$time": "any"}, "12"),
        ({"$cursor": True}, ""),
        ({"$cursor": True}, None),
        ({"$string": "any"}, 3),
        ({"$regex": "^a\\.[0-9]{3}$"}, "a.12"),
        ("404 page not found", "404 page not found\n"),
    ],
)
def test_matcher_reports_mismatches(expected: Any, actual: Any) -> None:
    with pytest.raises(Mismatch):
        match(expected, actual, _context())


@pytest.mark.parametrize(
    "expected, actual",
    [
        ({"$time": "during-step"}, 1_000_000_000_900),
        ({"$time": "during-step", "plus": 300}, 1_000_000_000_350),
        ({"$time": "var:T1"}, 5),
        ({"$time": "request-timeout"}, 7),
        ({"$cursor": True}, "abc"),
        ({"$regex": "^a\\.[0-9]{3}$"}, "a.123"),
        ({"x": [{"$string": "any"}]}, {"x": ["anything"]}),
    ],
)
def test_matcher_accepts_placeholders(expected: Any, actual: Any) -> None:
    match(expected, actual, _context())


def test_a_wrong_answer_fails_the_replay(app: ResonateApp) -> None:
    """A target that answers one field wrong is reported, naming the place."""
    case = next(c for c in CASES if c["name"] == "complete/resolve-with-value")
    honest = app_sender(app)

    def lying(*request: Any) -> Any:
        status, body = honest(*request)
        if isinstance(body, dict) and body.get("state") == "RESOLVED":
            body = {**body, "state": "REJECTED"}
        return status, body

    clock = app.store.clock
    with pytest.raises(Mismatch, match="step 1: body.state"):
        replay(case, lying, clock, clock.advance)


def test_a_wrong_status_fails_the_replay(app: ResonateApp) -> None:
    case = copy.deepcopy(next(c for c in CASES if c["name"] == "get/not-found"))
    case["steps"][0]["response"]["status"] = 200
    clock = app.store.clock
    with pytest.raises(Mismatch, match="status: expected 200, got 404"):
        replay(case, app_sender(app), clock, clock.advance)
