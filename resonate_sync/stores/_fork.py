"""Holding a SQLite store still across ``os.fork()``.

SQLite's locks and mutexes do not survive a fork: a child forked while a
parent thread is inside SQLite, or holds the write lock, may hang or never
write. The store therefore lets a fork wait, briefly, for what is under way.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import TYPE_CHECKING, Iterator, List, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from ._commit import GroupCommit
    from .sqlite import SQLiteStore

_FORK_WAIT = 1.0


class ForkGate:
    """Lets a fork wait until no thread of the store is inside a read.

    SQLite's own mutexes do not survive ``fork()``: a child forked while a
    parent thread was inside SQLite (opening a connection, say) can hang on
    its first call there. Thread-safe.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._inside = 0
        self._forking = False

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Hold off a fork while the block runs; wait while one is under way."""
        with self._condition:
            self._condition.wait_for(lambda: not self._forking)
            self._inside += 1
        try:
            yield
        finally:
            with self._condition:
                self._inside -= 1
                self._condition.notify_all()

    def close(self, timeout: float) -> None:
        """Start no read, and wait up to ``timeout`` seconds for those running."""
        with self._condition:
            self._forking = True
            self._condition.wait_for(lambda: self._inside == 0, timeout)

    def open(self) -> None:
        """Let reads start again (in the parent, after the fork)."""
        with self._condition:
            self._forking = False
            self._condition.notify_all()


def pause_across_fork(store: "SQLiteStore") -> None:
    # A fork waits for the reads and the write transaction in progress (see
    # GroupCommit.pause_for_fork); weak, so the hook does not keep the store
    # alive.
    reference = weakref.ref(store)
    paused: List[Tuple["SQLiteStore", "GroupCommit", bool]] = []

    def before() -> None:
        alive = reference()
        if alive is not None:
            alive._gate.close(_FORK_WAIT)
            commit = alive._commit
            paused.append((alive, commit, commit.pause_for_fork(_FORK_WAIT)))

    def after_in_parent() -> None:
        while paused:
            alive, commit, held = paused.pop()
            if held:
                commit.resume()
            alive._gate.open()

    def after_in_child() -> None:
        while paused:
            alive, commit, held = paused.pop()
            if held:
                commit.resume()
            # Parent threads may have held these: the child starts afresh.
            alive._gate = ForkGate()
            alive._reopen_lock = threading.Lock()

    os.register_at_fork(
        before=before, after_in_parent=after_in_parent, after_in_child=after_in_child
    )
