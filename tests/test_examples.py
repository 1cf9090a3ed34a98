"""The examples, run as a user runs them: real subprocesses, real SIGKILL."""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
from typing import List, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
STDLIB = sysconfig.get_paths()["stdlib"]


def _command(script: str, *args: str) -> List[str]:
    return [sys.executable, os.path.join(EXAMPLES, script), *args]


def _environment() -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    env.pop("RESONATE_URL", None)
    return env


def _resolved_files(database: str) -> Set[str]:
    """The files whose analyze child is RESOLVED in the database right now."""
    if not os.path.exists(database):
        return set()
    connection = sqlite3.connect(database, timeout=30)
    try:
        rows = connection.execute(
            "SELECT param_data FROM promises WHERE state = 'RESOLVED'"
        ).fetchall()
    except sqlite3.OperationalError:  # the schema is not created yet
        return set()
    finally:
        connection.close()
    files = set()
    for (data,) in rows:
        param = json.loads(base64.b64decode(data))
        if param["func"] == "analyze":
            files.add(param["args"][1])
    return files


def _analyzed(stderr: str) -> List[str]:
    prefix = "analyzed "
    return [line[len(prefix):] for line in stderr.splitlines() if line.startswith(prefix)]


def test_batch_resumes_after_sigkill_without_reprocessing(tmp_path):
    """Killed midway with SIGKILL, the same command finishes the job: no file
    analyzed before the kill is analyzed again, and the summary equals an
    uninterrupted run's."""
    env = _environment()
    reference = subprocess.run(
        _command("batch.py", STDLIB, "--db", str(tmp_path / "reference.db")),
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )
    assert "files:" in reference.stdout

    database = str(tmp_path / "killed.db")
    command = _command("batch.py", STDLIB, "--db", database, "--workers", "2", "-v")
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(_resolved_files(database)) < 100:
        assert first.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL

    done_before = _resolved_files(database)
    second = subprocess.run(command, env=env, capture_output=True, text=True,
                            timeout=300, check=True)
    analyzed_again = set(_analyzed(second.stderr))
    all_files = _resolved_files(database)

    assert second.stdout == reference.stdout
    assert len(done_before) < len(all_files), "the kill came after the job ended"
    assert not (analyzed_again & done_before)
    assert analyzed_again | done_before == all_files


def test_batch_run_again_after_completion_returns_stored_summary(tmp_path):
    """A finished job run again prints the stored summary and analyzes nothing."""
    source = tmp_path / "src"
    source.mkdir()
    for number in range(5):
        (source / f"module{number}.py").write_text(f"def f{number}():\n    pass\n")
    command = _command("batch.py", str(source), "--db", str(tmp_path / "b.db"), "-v")
    env = _environment()

    first = subprocess.run(command, env=env, capture_output=True, text=True,
                           timeout=120, check=True)
    (source / "module9.py").write_text("class Late:\n    pass\n")
    second = subprocess.run(command, env=env, capture_output=True, text=True,
                            timeout=120, check=True)

    assert len(_analyzed(first.stderr)) == 5
    assert "functions:" in first.stdout and "5" in first.stdout
    assert second.stdout == first.stdout
    assert _analyzed(second.stderr) == []


def test_batch_refuses_a_missing_directory(tmp_path):
    """A directory that does not exist is a clear usage error, not a traceback."""
    missing = str(tmp_path / "nowhere")
    result = subprocess.run(_command("batch.py", missing, "--db", str(tmp_path / "x.db")),
                            env=_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "not a directory" in result.stderr and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("database", [None, "seed.db"])
def test_seed_example_prints_in_order(tmp_path, database):
    """The seed's example prints Hello, PENDING, World, RESOLVED in that order."""
    args = ["--db", str(tmp_path / database)] if database else []
    result = subprocess.run(_command("seed.py", *args), env=_environment(),
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["Hello", "PENDING", "World", "RESOLVED"]
