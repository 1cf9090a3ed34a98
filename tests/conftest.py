"""Fixtures shared by the test modules: a fake clock, and stores of each kind on it."""

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


# -- stores by kind, and Resonate instances on them (runtime tests) ----------

#: The store kinds the runtime's behaviour tests run against. A kind names a
#: factory below; each call of a factory opens a new store on the same data.
STORE_KINDS = ["sqlite", "remote"]


def _sqlite_factory(request, tmp_path, clock: FakeClock):
    path = str(tmp_path / "runtime.db")
    return lambda: SQLiteStore(path, clock=clock)


def _remote_factory(request, tmp_path, clock: FakeClock):
    # A server of its own per test, on a fresh file and the test's fake clock,
    # so timeouts mean the same on both kinds; starting one takes milliseconds.
    from resonate_sync.stores.remote import RemoteStore
    from server import TestServer

    server = TestServer(str(tmp_path / "server.db"), clock=clock).start()
    request.addfinalizer(server.stop)
    return lambda: RemoteStore(server.url, timeout=(2, 10), retries=3, backoff=0.01)


_STORE_FACTORIES = {"sqlite": _sqlite_factory, "remote": _remote_factory}


@pytest.fixture(params=STORE_KINDS)
def store_kind(request) -> str:
    """The kind of store a runtime test runs against."""
    return request.param


@pytest.fixture
def make_store(request, store_kind: str, tmp_path, clock: FakeClock):
    """A factory of stores of ``store_kind`` that all see the same promises.

    Every store made is closed at teardown.
    """
    factory = _STORE_FACTORIES[store_kind](request, tmp_path, clock)
    opened = []

    def make():
        opened.append(factory())
        return opened[-1]

    yield make
    for made in opened:
        made.close()


class FakeSleep:
    """A ``sleep`` for Resonate that records each wait and moves the clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
        self.clock.advance(int(seconds * 1000))


@pytest.fixture
def fake_sleep(clock: FakeClock) -> FakeSleep:
    """A sleep that returns at once, having moved the fake clock."""
    return FakeSleep(clock)


@pytest.fixture
def make_resonate(make_store, clock: FakeClock, fake_sleep: FakeSleep):
    """A factory of Resonate instances on ``make_store`` stores and the fake clock.

    Keyword arguments go to ``Resonate``; each instance gets its own store
    unless one is given. Every instance is shut down at teardown.
    """
    from resonate_sync import Resonate

    made = []

    def make(**kwargs):
        kwargs.setdefault("clock", lambda: clock() / 1000)
        kwargs.setdefault("sleep", fake_sleep)
        store = kwargs.pop("store", None) or make_store()
        made.append(Resonate(store, **kwargs))
        return made[-1]

    yield make
    for resonate in made:
        resonate.shutdown(wait=True)
