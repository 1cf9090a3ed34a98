"""Schedules on both stores: cron times, the SQLite table and its firing loop,
the server's own firing, and the nightly example.

SQLite tests move a fake clock and fire with ``resonate.schedules.fire_due()``
(or wait on an event for the loop thread); remote tests move the test
server's clock, whose sweep fires the schedule, and wait for recovery to run it.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
from typing import Any, Callable, Iterator, List

import pytest

from conftest import EPOCH_MS, FakeClock
from resonate_sync import (
    Exponential,
    InvalidRequestError,
    NotRegisteredError,
    Options,
    Resonate,
    SQLiteStore,
)
from resonate_sync import _cron, encoding
from resonate_sync.exceptions import ScheduleAlreadyExistsError, ScheduleNotFoundError
from resonate_sync.promise import State
from resonate_sync.stores.remote import RemoteStore
from resonate_sync.stores.sqlite import SCHEMA_VERSION
from server import TestServer

MINUTE = 60_000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- cron times -----------------------------------------------------------


def test_cron_times_for_five_fields_and_for_six_with_leading_seconds() -> None:
    """The next run is strictly after a time; the latest is at or before it."""
    assert _cron.next_after("* * * * *", EPOCH_MS) == EPOCH_MS + MINUTE
    assert _cron.latest_at_or_before("* * * * *", EPOCH_MS) == EPOCH_MS
    assert _cron.latest_at_or_before("* * * * *", EPOCH_MS + MINUTE - 1) == EPOCH_MS
    assert _cron.next_after("*/5 * * * * *", EPOCH_MS) == EPOCH_MS + 5_000
    assert _cron.latest_at_or_before("*/5 * * * * *", EPOCH_MS + 4_999) == EPOCH_MS
    assert _cron.next_after("0 2 * * *", EPOCH_MS) == EPOCH_MS + 2 * 3_600_000


@pytest.mark.parametrize(
    "cron", ["bad", "* * * *", "1 2 3 4 5 6 7", "61 * * * *", "0 0 30 2 *"]
)
def test_an_invalid_cron_is_an_invalid_request_naming_the_expression(cron: str) -> None:
    expected = re.escape(f"cron expression '{cron}'")
    with pytest.raises(InvalidRequestError, match=expected):
        _cron.validate(cron)


# -- the SQLite table -----------------------------------------------------


def make_schedule(store: Any, schedule_id: str = "nightly", **fields: Any) -> Any:
    fields.setdefault("tags", {"team": "a"})
    return store.create_schedule(
        schedule_id, fields.pop("cron", "0 2 * * *"), "{{.id}}.{{.timestamp}}",
        MINUTE, **fields,
    )


def test_sqlite_schedules_create_get_search_and_delete(store: SQLiteStore) -> None:
    """The same contract as the server: the id is the default key, a duplicate
    create answers with the stored schedule, another key is refused."""
    created = make_schedule(store, description="report", promise_tags={"k": "v"})
    make_schedule(store, "hourly", cron="0 * * * *", tags={})

    assert created.next_run_time == EPOCH_MS + 2 * 3_600_000
    assert created.idempotency_key == "nightly" and created.last_run_time is None
    assert make_schedule(store, cron="5 * * * *") == created
    assert store.get_schedule("nightly") == created
    found = store.search_schedules("*ly").schedules
    assert [s.id for s in found] == ["hourly", "nightly"]
    found = store.search_schedules("*", tags={"team": "a"}).schedules
    assert [s.id for s in found] == ["nightly"]
    with pytest.raises(ScheduleAlreadyExistsError, match="'nightly'"):
        make_schedule(store, idempotency_key="other")

    store.delete_schedule("nightly")
    with pytest.raises(ScheduleNotFoundError, match="'nightly'"):
        store.get_schedule("nightly")
    with pytest.raises(ScheduleNotFoundError):
        store.delete_schedule("nightly")


def test_sqlite_schedule_search_pages_newest_first(store: SQLiteStore) -> None:
    for number in range(5):
        make_schedule(store, f"s{number}")
    page = store.search_schedules("s*", limit=2)
    seen = [s.id for s in page.schedules]
    while page.cursor is not None:
        page = store.search_schedules(cursor=page.cursor)
        seen += [s.id for s in page.schedules]
    assert seen == ["s4", "s3", "s2", "s1", "s0"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"cron": "nope"}, "cron expression 'nope'"),
        ({"promise_timeout": -1}, "promise timeout"),
        ({"schedule_id": ""}, "schedule id"),
    ],
)
def test_sqlite_create_schedule_refuses_bad_fields(
    store: SQLiteStore, fields: dict, message: str
) -> None:
    request = {"schedule_id": "s", "cron": "* * * * *", "promise_id": "p",
               "promise_timeout": 1, **fields}
    with pytest.raises(InvalidRequestError, match=message):
        store.create_schedule(**request)


def test_a_version_1_file_gets_the_schedules_table_and_keeps_its_promises(
    db_path: str, clock: FakeClock
) -> None:
    SQLiteStore(db_path, clock=clock).close()
    with sqlite3.connect(db_path) as connection:
        connection.execute("DROP TABLE schedules")
        connection.execute(
            "INSERT INTO promises (id, sort_id, state, timeout, created_on)"
            " VALUES ('old', 1, 'PENDING', 9999999999999, 0)"
        )
        connection.execute("PRAGMA user_version = 1")
    connection.close()

    store = SQLiteStore(db_path, clock=clock)
    make_schedule(store)
    assert store.get("old").state is State.PENDING
    store.close()
    with sqlite3.connect(db_path) as connection:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION == 2
    connection.close()


def test_fire_schedule_lets_one_of_two_stores_on_a_file_fire_a_run(
    db_path: str, clock: FakeClock
) -> None:
    """Both read the schedule due; the compare-and-set lets one fire; the run's
    promise is pending, keyed by its id and tagged as an invocation."""
    first, second = SQLiteStore(db_path, clock=clock), SQLiteStore(db_path, clock=clock)
    make_schedule(first, cron="* * * * *")
    now = clock.advance(MINUTE)
    due_first, due_second = first.due_schedules(now), second.due_schedules(now)

    written = first.fire_schedule(due_first[0], now, now + MINUTE)
    assert second.fire_schedule(due_second[0], now, now + MINUTE) is None

    promise = written.promise
    assert promise.id == f"nightly.{now}" and promise.pending
    assert promise.timeout == now + MINUTE
    assert promise.idempotency_key_for_create == promise.id
    assert promise.tags == {
        "resonate:schedule": "nightly", "resonate:invocation": "true"
    }
    assert [p.id for p in second.search("nightly.*").promises] == [promise.id]
    assert second.get_schedule("nightly").next_run_time == now + MINUTE
    assert first.due_schedules(now) == []
    first.close()
    second.close()


# -- the runtime on SQLite ------------------------------------------------


@pytest.fixture
def make_resonate(db_path: str, clock: FakeClock) -> Iterator[Callable[..., Resonate]]:
    """Resonate instances on one SQLite file, all on the fake clock."""
    made: List[Resonate] = []

    def make(**kwargs: Any) -> Resonate:
        kwargs.setdefault("recovery_interval", 60.0)
        kwargs.setdefault("schedule_interval", 0.01)
        store = SQLiteStore(db_path, clock=clock)
        made.append(Resonate(store, clock=lambda: clock() / 1000, **kwargs))
        return made[-1]

    yield make
    for resonate in made:
        resonate.shutdown()
        resonate.store.close()


class Reports:
    """A registered function that counts its runs and signals each one."""

    def __init__(self) -> None:
        self.runs: List[str] = []
        self.ran = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, ctx: Any, team: str, *, late: bool = False) -> str:
        with self._lock:
            self.runs.append(ctx.invocation_id)
        self.ran.set()
        return f"report for {team}"


def registered(resonate: Resonate, reports: Reports) -> Reports:
    resonate.register(reports, name="report")
    return reports


def test_a_due_run_is_an_invocation_named_after_the_schedule_and_its_time(
    make_resonate: Callable[..., Resonate], clock: FakeClock
) -> None:
    resonate = make_resonate()
    reports = registered(resonate, Reports())
    schedule = resonate.schedule("every-minute", "* * * * *", "report", "ops")

    assert schedule.promise_id == "every-minute.{{.timestamp}}"
    assert resonate.schedules.fire_due() == 0
    clock.advance(MINUTE)
    assert resonate.schedules.fire_due() == 1

    run_id = f"every-minute.{EPOCH_MS + MINUTE}"
    assert resonate.invoke_local("report", run_id, "ops").result(timeout=10) == (
        "report for ops"
    )
    assert reports.runs == [run_id]
    assert resonate.promises.get(run_id).tags["resonate:schedule"] == "every-minute"


def test_a_run_carries_the_param_invoke_local_writes(
    make_resonate: Callable[..., Resonate], clock: FakeClock
) -> None:
    """Same {func, args, kwargs, version, retryPolicy}: recovery reads both alike."""
    resonate = make_resonate()
    registered(resonate, Reports())
    policy = Options(retry_policy=Exponential(max_attempts=3), tags={"env": "test"})
    schedule = resonate.schedule(
        "s", "* * * * *", "report", "ops", options=policy, late=True
    )
    direct = resonate.invoke_local("report", "direct", "ops", options=policy, late=True)
    direct.result(timeout=10)

    written = encoding.decode_value(resonate.promises.get("direct").param)
    assert encoding.decode_value(schedule.promise_param) == written
    assert schedule.promise_tags == {"env": "test", "resonate:invocation": "true"}
    assert schedule.promise_timeout == 24 * 3_600_000


def test_missed_runs_fire_only_the_latest_one(
    make_resonate: Callable[..., Resonate], clock: FakeClock
) -> None:
    resonate = make_resonate()
    registered(resonate, Reports())
    resonate.schedule("every-minute", "* * * * *", "report", "ops")
    now = clock.advance(10 * MINUTE + 30_000)

    assert resonate.schedules.fire_due() == 1
    assert resonate.schedules.fire_due() == 0
    latest = EPOCH_MS + 10 * MINUTE
    runs = [p.id for p in resonate.promises.search("every-minute.*")]
    assert runs == [f"every-minute.{latest}"]
    stored = resonate.schedules.get("every-minute")
    assert (stored.last_run_time, stored.next_run_time) == (latest, latest + MINUTE)
    assert stored.next_run_time > now


def test_processes_sharing_a_file_fire_each_run_once(
    make_resonate: Callable[..., Resonate], clock: FakeClock
) -> None:
    """Two instances fire at the same moment; one run, run once."""
    first, second = make_resonate(), make_resonate()
    reports = Reports()
    for resonate in (first, second):
        registered(resonate, reports)
    first.schedule("every-minute", "* * * * *", "report", "ops")
    second.schedule("every-minute", "* * * * *", "report", "ops")
    clock.advance(MINUTE)

    barrier, fired = threading.Barrier(2), []

    def fire(resonate: Resonate) -> None:
        barrier.wait(timeout=10)
        fired.append(resonate.schedules.fire_due())

    threads = [threading.Thread(target=fire, args=(r,)) for r in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    run_id = f"every-minute.{EPOCH_MS + MINUTE}"
    assert sorted(fired) == [0, 1]
    assert first.invoke_local("report", run_id, "ops").result(timeout=10)
    assert second.invoke_local("report", run_id, "ops").result(timeout=10)
    assert reports.runs == [run_id]


def test_start_fires_on_a_loop_thread_that_shutdown_stops(
    make_resonate: Callable[..., Resonate], clock: FakeClock
) -> None:
    resonate = make_resonate()
    reports = registered(resonate, Reports())
    resonate.schedule("every-minute", "* * * * *", "report", "ops")
    resonate.start()
    clock.advance(MINUTE)

    assert reports.ran.wait(timeout=10)
    resonate.shutdown()
    names = [thread.name for thread in threading.enumerate()]
    assert "resonate-schedules" not in names


def test_scheduling_again_returns_the_stored_schedule_and_refuses_a_changed_one(
    make_resonate: Callable[..., Resonate],
) -> None:
    resonate = make_resonate()
    registered(resonate, Reports())
    first = resonate.schedule("nightly", "0 2 * * *", "report", "ops")

    assert resonate.schedule("nightly", "0 2 * * *", "report", "ops") == first
    with pytest.raises(ScheduleAlreadyExistsError, match="with cron '0 2 \\* \\* \\*'"):
        resonate.schedule("nightly", "0 3 * * *", "report", "ops")
    with pytest.raises(ScheduleAlreadyExistsError, match="promise_param"):
        resonate.schedule("nightly", "0 2 * * *", "report", "dev")


def test_schedule_refuses_unknown_functions_bad_cron_and_per_run_options(
    make_resonate: Callable[..., Resonate],
) -> None:
    resonate = make_resonate()
    registered(resonate, Reports())
    with pytest.raises(NotRegisteredError, match="'nope'"):
        resonate.schedule("s", "* * * * *", "nope")
    with pytest.raises(InvalidRequestError, match="cron expression '0 25 \\* \\* \\*'"):
        resonate.schedule("s", "0 25 * * *", "report", "ops")
    with pytest.raises(InvalidRequestError, match="idempotency_key"):
        resonate.schedule("s", "* * * * *", "report", "ops",
                          options=Options(idempotency_key="k"))
    assert list(resonate.schedules.search()) == []


def test_the_schedules_facade_searches_and_deletes(
    make_resonate: Callable[..., Resonate],
) -> None:
    resonate = make_resonate()
    registered(resonate, Reports())
    for name in ("a-1", "a-2", "b-1"):
        resonate.schedule(name, "0 2 * * *", "report", name)

    assert [s.id for s in resonate.schedules.search("a-*", limit=1)] == ["a-2", "a-1"]
    resonate.schedules.delete("a-1")
    assert [s.id for s in resonate.schedules.search()] == ["b-1", "a-2"]
    with pytest.raises(ScheduleNotFoundError):
        resonate.schedules.get("a-1")


# -- on a Resonate server -------------------------------------------------


@pytest.fixture
def server(tmp_path: Any, clock: FakeClock) -> Iterator[TestServer]:
    """A test server on the fake clock, sweeping (and so firing) every 20 ms."""
    running = TestServer(str(tmp_path / "server.db"), clock=clock, sweep_interval=0.02)
    yield running.start()
    running.stop()


@pytest.fixture
def remote(server: TestServer, clock: FakeClock) -> Iterator[Resonate]:
    store = RemoteStore(server.url, retries=2, backoff=0.01)
    resonate = Resonate(store, clock=lambda: clock() / 1000, recovery_interval=0.02)
    yield resonate
    resonate.shutdown()
    store.close()


def test_the_server_fires_a_schedule_and_recovery_runs_the_run(
    remote: Resonate, clock: FakeClock
) -> None:
    reports = registered(remote, Reports())
    schedule = remote.schedule("every-minute", "* * * * *", "report", "ops")
    remote.start()
    clock.advance(MINUTE)

    assert reports.ran.wait(timeout=10)
    run_id = f"every-minute.{schedule.next_run_time}"
    assert reports.runs == [run_id]
    assert remote.invoke_local("report", run_id, "ops").result(timeout=10) == (
        "report for ops"
    )
    tags = remote.promises.get(run_id).tags
    assert tags["resonate:schedule"] == "every-minute"
    assert remote.schedules.fire_due() == 0  # the server fires; the loop stays idle


def test_remote_schedules_are_created_once_read_searched_and_deleted(
    remote: Resonate,
) -> None:
    registered(remote, Reports())
    first = remote.schedule("nightly", "0 2 * * *", "report", "ops")

    assert remote.schedule("nightly", "0 2 * * *", "report", "ops") == first
    with pytest.raises(ScheduleAlreadyExistsError, match="cron"):
        remote.schedule("nightly", "0 3 * * *", "report", "ops")
    with pytest.raises(InvalidRequestError, match="cron expression 'x'"):
        remote.schedule("other", "x", "report", "ops")
    assert remote.schedules.get("nightly") == first
    assert [s.id for s in remote.schedules.search("night*")] == ["nightly"]
    remote.schedules.delete("nightly")
    with pytest.raises(ScheduleNotFoundError):
        remote.schedules.get("nightly")


# -- the example ----------------------------------------------------------


def test_the_nightly_example_fires_and_exits_after_the_runs_asked_for(
    tmp_path: Any,
) -> None:
    """A real process on a once-a-second cron: it writes one report line."""
    report = tmp_path / "report.txt"
    command = [
        sys.executable, os.path.join(ROOT, "examples", "nightly.py"),
        "--cron", "* * * * * *", "--runs", "1", "--db", str(tmp_path / "n.db"),
        "--directory", str(tmp_path), "--report", str(report),
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("RESONATE_URL", None)
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            timeout=60, check=True)

    assert "schedule 'custom-report'" in result.stdout
    assert "custom-report." in result.stdout
    assert len(report.read_text().splitlines()) == 1
