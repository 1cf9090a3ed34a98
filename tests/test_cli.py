"""The ``resonate-sync`` command line: commands, output, errors and exit codes.

Most tests run ``main(argv)`` in this process with captured output and an
injected clock; the last ones run the installed command in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from typing import Any, Iterator, List, Tuple

import pytest

from conftest import EPOCH_MS, FakeClock
from resonate_sync import SQLiteStore, encoding
from resonate_sync.cli import main
from resonate_sync.promise import State
from server import TestServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A timeout no test reaches: the CLI's store reads the real clock.
FAR = 9_999_999_999_999
#: What the CLI's injected clock says: 13 s after the tree's pending child started.
NOW_MS = EPOCH_MS + 13_500


def param(function: str, *args: Any) -> Any:
    body = {"func": function, "args": list(args), "kwargs": {}, "version": 1,
            "retryPolicy": None}
    return encoding.encode_value(body)


@pytest.fixture
def db(tmp_path: Any, clock: FakeClock) -> str:
    """A file holding an invocation tree (``order-1``) and two plain promises."""
    path = str(tmp_path / "cli.db")
    store = SQLiteStore(path, clock=clock)
    invocation = {"resonate:invocation": "true"}
    store.create("order-1", FAR, param=param("process", 1), tags=invocation)
    for number, function in ((1, "charge"), (2, "ship"), (10, "notify")):
        tags = {"resonate:parent": "order-1", "resonate:root": "order-1"}
        store.create(f"order-1.{number}", FAR, param=param(function), tags=tags)
        clock.advance(500)
    store.create("order-1.1.1", FAR, param=param("audit"),
                 tags={"resonate:parent": "order-1.1", "resonate:root": "order-1"})
    store.create("order-1.other", FAR, tags={"team": "b"})  # no parent: not a child
    store.resolve("order-1.1.1", encoding.encode_value(1))
    store.resolve("order-1.1", encoding.encode_value("charged"))
    store.resolve("order-1.10", encoding.encode_value(None))
    clock.advance(500)
    store.resolve("order-1", encoding.encode_value("done"))
    store.create("invoice-7", FAR, param=encoding.encode_value({"n": 7}),
                 tags={"team": "a"})
    store.close()
    return path


def run(*argv: str, capsys: Any) -> Tuple[int, str, str]:
    code = main(list(argv), clock=lambda: NOW_MS / 1000)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(*argv: str, capsys: Any) -> Any:
    code, out, err = run(*argv, "--json", capsys=capsys)
    assert (code, err) == (0, "")
    return json.loads(out)


# -- promises -------------------------------------------------------------


def test_get_shows_the_fields_of_a_promise_and_json_gives_the_server_shape(
    db: str, capsys: Any
) -> None:
    code, out, err = run("promises", "get", "invoice-7", "--db", db, capsys=capsys)

    assert (code, err) == (0, "")
    assert "state      PENDING" in out and "tags       team=a" in out
    assert 'param      {"n": 7}' in out
    body = run_json("--db", db, "promises", "get", "invoice-7", capsys=capsys)
    assert (body["id"], body["state"]) == ("invoice-7", "PENDING")
    assert body["tags"] == {"team": "a"}
    assert encoding.decode_json(body["param"]["data"]) == {"n": 7}


def test_a_missing_promise_is_one_line_on_stderr_and_exit_code_1(
    db: str, capsys: Any
) -> None:
    code, out, err = run("promises", "get", "nope", "--db", db, capsys=capsys)
    assert (code, out) == (1, "")
    assert err == "resonate-sync: error: promise 'nope' not found\n"


def test_search_filters_by_pattern_state_and_tags_and_limits_the_count(
    db: str, capsys: Any
) -> None:
    code, out, _ = run("promises", "search", "order-1.*", "--state", "resolved",
                       "--db", db, capsys=capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "STATE", "CREATED", "FUNCTION"]
    assert sorted(line.split()[0] for line in lines[1:]) == [
        "order-1.1", "order-1.1.1", "order-1.10"
    ]
    tagged = run_json("promises", "search", "*", "--tag", "team=a", "--db", db,
                      capsys=capsys)
    assert [p["id"] for p in tagged] == ["invoice-7"]
    limited = run_json("promises", "search", "*", "--limit", "2", "--db", db,
                       capsys=capsys)
    assert len(limited) == 2


def test_create_makes_a_pending_promise_once(db: str, capsys: Any) -> None:
    body = run_json("promises", "create", "job-1", "--timeout", "60", "--param",
                    '{"x": [1, 2]}', "--tag", "a=1", "--tag", "b=2", "--db", db,
                    capsys=capsys)
    assert (body["state"], body["tags"]) == ("PENDING", {"a": "1", "b": "2"})
    assert encoding.decode_json(body["param"]["data"]) == {"x": [1, 2]}
    assert (body["createdOn"], body["timeout"]) == (NOW_MS, NOW_MS + 60_000)

    code, _, err = run("promises", "create", "job-1", "--db", db, capsys=capsys)
    assert code == 1 and "promise 'job-1' already exists" in err


def test_resolve_reject_and_cancel_complete_once(db: str, capsys: Any) -> None:
    body = run_json("promises", "resolve", "invoice-7", "--value", '{"paid": true}',
                    "--db", db, capsys=capsys)
    assert body["state"] == "RESOLVED"
    assert encoding.decode_json(body["value"]["data"]) == {"paid": True}

    for again in (["resolve", "invoice-7"], ["reject", "invoice-7"]):
        code, _, err = run("promises", *again, "--db", db, capsys=capsys)
        assert code == 1 and "'invoice-7'" in err and "resolved" in err.lower()
    canceled = run_json("promises", "cancel", "order-1.2", "--db", db, capsys=capsys)
    assert canceled["state"] == State.REJECTED_CANCELED.value
    code, _, err = run("promises", "cancel", "nope", "--db", db, capsys=capsys)
    assert code == 1 and "'nope'" in err


@pytest.mark.parametrize(
    "argv, shown",
    [
        (["promises", "get"], "required: id"),
        (["promises", "create", "x", "--param", "{bad"], "not JSON"),
        (["promises", "create", "x", "--tag", "novalue"], "key=value"),
        (["promises", "create", "x", "--timeout", "-3"], "seconds > 0"),
        (["promises", "search", "*", "--state", "done"], "invalid choice"),
        (["promises", "search", "*", "--limit", "0"], "whole number"),
        (["schedules", "create", "s", "--cron", "x y", "--function", "f"],
         "cron expression 'x y'"),
        (["schedules", "create", "s", "--cron", "* * * * *", "--function", "f",
          "--args", "{}"], "not a JSON array"),
        (["nothing"], "invalid choice"),
    ],
)
def test_usage_errors_exit_with_code_2_and_say_what_is_wrong(
    db: str, capsys: Any, argv: List[str], shown: str
) -> None:
    code, out, err = run(*argv, "--db", db, capsys=capsys)
    assert (code, out) == (2, "")
    assert shown in err and "Traceback" not in err


def test_a_store_that_cannot_be_reached_exits_with_code_3(
    tmp_path: Any, capsys: Any
) -> None:
    missing = str(tmp_path / "missing.db")
    code, _, err = run("promises", "get", "x", "--db", missing, capsys=capsys)
    assert code == 3 and f"no database at {missing!r}" in err
    assert not os.path.exists(missing)

    with socket.socket() as probe:  # a port on this machine nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run("promises", "get", "x", "--url", f"http://127.0.0.1:{port}",
                       capsys=capsys)
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err


def test_the_store_defaults_to_the_environment(
    db: str, tmp_path: Any, capsys: Any, monkeypatch: Any
) -> None:
    monkeypatch.delenv("RESONATE_URL", raising=False)
    monkeypatch.setenv("RESONATE_DB", db)
    assert run_json("promises", "get", "invoice-7", capsys=capsys)["id"] == "invoice-7"

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESONATE_DB")
    code, _, err = run("promises", "get", "invoice-7", capsys=capsys)
    assert code == 3 and "'resonate.db'" in err


# -- schedules ------------------------------------------------------------


def test_schedules_create_list_and_delete_on_sqlite(db: str, capsys: Any) -> None:
    created = run_json("schedules", "create", "nightly", "--cron", "0 2 * * *",
                       "--function", "report", "--args", '["ops"]', "--db", db,
                       capsys=capsys)
    assert created["promiseId"] == "nightly.{{.timestamp}}"
    stored = encoding.decode_json(created["promiseParam"]["data"])
    assert (stored["func"], stored["args"]) == ("report", ["ops"])
    assert created["promiseTags"] == {"resonate:invocation": "true"}

    code, _, err = run("schedules", "create", "nightly", "--cron", "0 2 * * *",
                       "--function", "report", "--db", db, capsys=capsys)
    assert code == 1 and "schedule 'nightly' already exists" in err
    code, out, _ = run("schedules", "list", "--db", db, capsys=capsys)
    assert out.splitlines()[1].split()[:6] == ["nightly", "0", "2", "*", "*", "*"]
    assert run("schedules", "delete", "nightly", "--db", db, capsys=capsys)[0] == 0
    assert run_json("schedules", "list", "--db", db, capsys=capsys) == []
    code, _, err = run("schedules", "delete", "nightly", "--db", db, capsys=capsys)
    assert code == 1 and "'nightly'" in err


@pytest.fixture
def server(tmp_path: Any) -> Iterator[TestServer]:
    """A test server whose clock agrees with the one the CLI is given."""
    running = TestServer(str(tmp_path / "server.db"), clock=FakeClock(NOW_MS))
    yield running.start()
    running.stop()


def test_promises_and_schedules_on_a_server_from_resonate_url(
    server: TestServer, capsys: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("RESONATE_URL", server.url)
    monkeypatch.delenv("RESONATE_DB", raising=False)
    assert run_json("promises", "create", "p", capsys=capsys)["state"] == "PENDING"
    resolved = run_json("promises", "resolve", "p", "--value", "3", capsys=capsys)
    assert resolved["state"] == "RESOLVED"
    code, _, err = run("promises", "create", "p", capsys=capsys)
    assert code == 1 and "'p'" in err

    run_json("schedules", "create", "hourly", "--cron", "0 * * * *", "--function",
             "f", capsys=capsys)
    listed = run_json("schedules", "list", "h*", capsys=capsys)
    assert [schedule["id"] for schedule in listed] == ["hourly"]
    assert run("schedules", "delete", "hourly", capsys=capsys)[0] == 0


# -- tree -----------------------------------------------------------------


def test_tree_draws_children_in_call_order_with_state_and_duration(
    db: str, capsys: Any
) -> None:
    code, out, err = run("tree", "order-1", "--db", db, capsys=capsys)

    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "order-1  process  RESOLVED 2.0s",
        "├── order-1.1  charge  RESOLVED 1.5s",
        "│   └── order-1.1.1  audit  RESOLVED 0ms",
        "├── order-1.2  ship  running 13.0s",
        "└── order-1.10  notify  RESOLVED 500ms",
    ]


def test_tree_as_json_nests_children(db: str, capsys: Any) -> None:
    tree = run_json("tree", "order-1", "--db", db, capsys=capsys)
    assert [child["id"] for child in tree["children"]] == [
        "order-1.1", "order-1.2", "order-1.10"
    ]
    assert tree["children"][0]["children"][0]["function"] == "audit"
    assert tree["children"][1]["completedOn"] is None
    assert tree["children"][1]["durationMs"] == 13_000


# -- as installed ---------------------------------------------------------


def _commands() -> List[Any]:
    script = shutil.which("resonate-sync")
    installed = pytest.mark.skipif(script is None, reason="no console script")
    return [
        pytest.param([sys.executable, "-m", "resonate_sync"], id="python -m"),
        pytest.param([script or "resonate-sync"], id="console script", marks=installed),
    ]


@pytest.mark.parametrize("command", _commands())
def test_the_installed_command_runs_and_exits_with_its_codes(
    db: str, command: List[str]
) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("RESONATE_URL", None)
    found = subprocess.run([*command, "promises", "get", "invoice-7", "--db", db],
                           env=env, capture_output=True, text=True, timeout=60)
    missing = subprocess.run([*command, "tree", "nope", "--db", db],
                             env=env, capture_output=True, text=True, timeout=60)

    assert found.returncode == 0 and "invoice-7" in found.stdout
    assert missing.returncode == 1
    assert missing.stderr == "resonate-sync: error: promise 'nope' not found\n"
