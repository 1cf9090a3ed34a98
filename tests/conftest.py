"""Fixtures shared by the test modules: a fake clock and SQLite stores on it."""

from __future__ import annotations

import os
import sys
import threading
from typing import Iterator

import pytest

# The tests import the package from this checkout, installed or not.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from resonate_sync.stores.sqlite import SQLiteStore  # noqa: E402

#: A fixed start time in epoch milliseconds: 2024-01-01T00:00:00Z.
EPOCH_MS = 1_704_067_200_000


class FakeClock:
    """A clock in epoch milliseconds that only moves when a test moves it.

    Thread-safe, so stores shared by many threads can read it.
    """

    def __init__(self, now: int = EPOCH_MS) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self._now

    def advance(self, milliseconds: int) -> int:
        """Move the clock forward and return the new time."""
        with self._lock:
            self._now += milliseconds
            return self._now


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at :data:`EPOCH_MS`."""
    return FakeClock()


@pytest.fixture
def db_path(tmp_path) -> str:
    """A path for a fresh SQLite database file."""
    return str(tmp_path / "promises.db")


@pytest.fixture
def store(db_path: str, clock: FakeClock) -> Iterator[SQLiteStore]:
    """A SQLite store on a fresh file, driven by the fake clock."""
    opened = SQLiteStore(db_path, clock=clock)
    yield opened
    opened.close()
