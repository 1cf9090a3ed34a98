"""examples/approval.py: a person approves from the command line; the workflow continues."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "approval.py")


def test_the_printed_command_approves_the_expense(tmp_path):
    database = str(tmp_path / "expenses.db")
    example = subprocess.Popen(
        [sys.executable, EXAMPLE, "--db", database, "--id", "expense-9"],
        stdout=subprocess.PIPE, text=True, cwd=str(tmp_path),
    )
    try:
        assert example.stdout.readline() == "waiting for approval; to approve, run:\n"
        command = shlex.split(example.stdout.readline())
        assert command[:3] == ["resonate-sync", "--db", database]
        assert command[3:] == [
            "promises", "resolve", "expense-9.approval", "--value", '{"approved": true}'
        ]

        cli = shutil.which("resonate-sync")
        program = [cli] if cli else [sys.executable, "-m", "resonate_sync"]
        approved = subprocess.run(
            program + command[1:], capture_output=True, text=True, timeout=30
        )
        assert approved.returncode == 0, approved.stderr
        began = time.monotonic()
        assert example.stdout.readline() == "expense expense-9: approved\n"
        assert time.monotonic() - began < 3
        assert example.wait(10) == 0
    finally:
        if example.poll() is None:
            example.kill()
        example.wait(10)
        example.stdout.close()
