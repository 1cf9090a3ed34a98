"""The watcher: completions in this process wake at once; others are polled, boundedly."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import pytest

from resonate_sync._watch import Watcher
from resonate_sync._runtime import ShutdownError
from resonate_sync.exceptions import PromiseNotFoundError
from resonate_sync.promise import State

WAIT = 5
FAR = 9_999_999_999_999


class CountingStore:
    """Counts ``get`` calls of the store it wraps."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.gets = 0

    def get(self, promise_id: str) -> Any:
        self.gets += 1
        return self._store.get(promise_id)


@pytest.fixture
def stopping():
    event = threading.Event()
    yield event
    event.set()


def collect(into: List[Any], done: threading.Event) -> Any:
    def on_complete(outcome: Any) -> None:
        into.append(outcome)
        done.set()

    return on_complete


def test_a_completion_notified_in_this_process_wakes_the_watch_at_once(store, stopping):
    watcher = Watcher(store, stopping)
    store.create("p-1", FAR)
    seen: List[Any] = []
    done = threading.Event()
    watcher.watch("p-1", collect(seen, done))
    watcher.notify(store.resolve("p-1").promise)
    assert done.is_set() and seen[0].state is State.RESOLVED


def test_a_completion_made_elsewhere_is_found_by_polling(store, stopping):
    watcher = Watcher(store, stopping, max_interval=0.1)
    store.create("p-2", FAR)
    seen: List[Any] = []
    done = threading.Event()
    watcher.watch("p-2", collect(seen, done))
    store.reject("p-2")  # no notify: as from another process
    assert done.wait(WAIT) and seen[0].state is State.REJECTED


def test_polls_back_off_and_many_waiters_share_one_read(store, stopping):
    counting = CountingStore(store)
    watcher = Watcher(counting, stopping, max_interval=0.2)
    store.create("p-3", FAR)
    seen: List[Any] = []
    done = threading.Event()
    for _ in range(10):
        watcher.watch("p-3", collect(seen, done))
    time.sleep(1.0)
    # 50 ms, then half again each time up to 0.2 s: about 7 reads in a second.
    assert counting.gets <= 9
    watcher.notify(store.resolve("p-3").promise)
    assert len(seen) == 10


def test_a_watch_ends_when_its_pending_callback_says_so(store, stopping):
    watcher = Watcher(store, stopping, max_interval=0.05)
    store.create("p-4", FAR)
    asked = threading.Event()

    def on_pending(promise: Any) -> bool:
        asked.set()
        return True

    seen: List[Any] = []
    watcher.watch("p-4", collect(seen, threading.Event()), on_pending)
    assert asked.wait(WAIT)
    watcher.notify(store.resolve("p-4").promise)
    assert seen == []


def test_a_promise_that_disappears_ends_the_watch_with_not_found(stopping):
    class Empty:
        def get(self, promise_id: str) -> Any:
            raise PromiseNotFoundError(f"promise {promise_id!r} not found")

    watcher = Watcher(Empty(), stopping)
    seen: List[Any] = []
    done = threading.Event()
    watcher.watch("gone", collect(seen, done))
    assert done.wait(WAIT) and isinstance(seen[0], PromiseNotFoundError)


def test_fail_all_ends_every_watch_with_the_error_given(store, stopping):
    watcher = Watcher(store, stopping)
    seen: Dict[str, Any] = {}
    for name in ("a", "b"):
        store.create(name, FAR)
        watcher.watch(name, lambda outcome, name=name: seen.setdefault(name, outcome))
    watcher.fail_all(lambda promise_id: ShutdownError(f"stop {promise_id}"))
    assert sorted(seen) == ["a", "b"]
    assert all(isinstance(error, ShutdownError) for error in seen.values())
