"""examples/batch.py, unchanged, on a Resonate server chosen by RESONATE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict, Iterator, List

import pytest

from resonate_sync import RemoteStore, State
from server import TestServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = os.path.join(ROOT, "examples", "batch.py")

#: The sources the job summarizes: relative path -> text.
SOURCES = {
    "top.py": "import os\n\n\ndef main():\n    return os.getcwd()\n",
    "pkg/__init__.py": "",
    "pkg/shapes.py": (
        "class Shape:\n    def area(self):\n        raise NotImplementedError\n\n\n"
        "class Square(Shape):\n    def __init__(self, side):\n"
        "        self.side = side\n\n"
        "    def area(self):\n        return self.side ** 2\n"
    ),
    "pkg/deep/tools.py": "async def fetch():\n    pass\n\n\ndef helper():\n    pass\n",
    "pkg/deep/notes.txt": "not python, not analyzed\n",
    "scripts/run.py": "# a comment\nprint('hello')\n",
}


@pytest.fixture
def sources(tmp_path: Any) -> str:
    """A directory holding :data:`SOURCES`."""
    directory = tmp_path / "sources"
    for relative, text in SOURCES.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(directory)


@pytest.fixture
def server(tmp_path: Any) -> Iterator[TestServer]:
    with TestServer(str(tmp_path / "server.db")) as running:
        yield running


def environment(url: str = "") -> Dict[str, str]:
    """The user's environment, with RESONATE_URL set to ``url`` or unset."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    env.pop("RESONATE_URL", None)
    if url:
        env["RESONATE_URL"] = url
        # The server is on this machine: never send its requests to a proxy.
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    return env


def batch(
    args: List[str], env: Dict[str, str], cwd: str
) -> "subprocess.CompletedProcess[str]":
    """Run the example to completion in ``cwd``; fail with its stderr if it fails."""
    result = subprocess.run(
        [sys.executable, BATCH, *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


def analyzed(stderr: str) -> List[str]:
    """The files the run read, from its ``-v`` lines."""
    prefix = "analyzed "
    return sorted(
        line[len(prefix):] for line in stderr.splitlines() if line.startswith(prefix)
    )


def python_files() -> List[str]:
    return sorted(
        os.path.normpath(relative) for relative in SOURCES if relative.endswith(".py")
    )


def test_batch_on_a_server_prints_the_summary_of_a_sqlite_run(
    sources: str, server: TestServer, tmp_path: Any
) -> None:
    """With RESONATE_URL and no --db, the job runs on the server, writes no
    SQLite file, and prints what a SQLite run of the same directory prints."""
    reference = batch(
        [sources, "--db", str(tmp_path / "reference.db")], environment(), str(tmp_path)
    )
    workdir = tmp_path / "remote-run"
    workdir.mkdir()

    remote = batch([sources, "-v"], environment(server.url), str(workdir))

    assert remote.stdout == reference.stdout
    assert "files:" in remote.stdout
    assert analyzed(remote.stderr) == python_files()
    assert os.listdir(workdir) == []  # no resonate.db: the promises are remote
    with RemoteStore(server.url) as store:
        job = store.get(f"summarize:{sources}")
    assert job.state is State.RESOLVED
    # The job, its listing step and one child per file, each created once.
    creates = [key for (operation, key) in server.app.applied if operation == "create"]
    assert len(creates) == 2 + len(python_files())


def test_batch_run_again_on_the_server_returns_the_stored_summary(
    sources: str, server: TestServer, tmp_path: Any
) -> None:
    """A second run of a finished job reads nothing: not even a file added
    since, because the summary comes from the server."""
    env = environment(server.url)
    first = batch([sources, "-v"], env, str(tmp_path))
    writes = sum(server.app.applied.values())
    with open(os.path.join(sources, "late.py"), "w") as late:
        late.write("def late():\n    pass\n")

    second = batch([sources, "-v"], env, str(tmp_path))

    assert analyzed(first.stderr) == python_files()
    assert analyzed(second.stderr) == []
    assert second.stdout == first.stdout
    assert sum(server.app.applied.values()) == writes
