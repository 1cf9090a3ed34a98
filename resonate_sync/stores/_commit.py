"""Group commit: the writes of many threads share one SQLite transaction.

Every write goes through :meth:`GroupCommit.run`. A caller queues its write;
if no thread is committing, it leads: it drains the queue, commits every
queued write in one transaction and wakes their callers. Otherwise it sleeps
until a leader has committed its write, or until the leader hands the lead to
it because writes queued up meanwhile. Each waiting caller is woken exactly
once, so there is no convoy on a lock. Alone, a caller commits its own write
with no hand-off to another thread; under load, one commit pays for many
writes.

A write is a function of the connection. It reads, decides by the rules of
``promise.py`` and writes; it may raise a
:class:`~resonate_sync.exceptions.ResonateError` after writing (a lazy timeout
is stored even when the request is then refused). A ``sqlite3.Error`` aborts
the whole transaction: every write in it fails with
:class:`~resonate_sync.exceptions.StoreError` and none of them is stored.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from typing import Any, Callable, Deque, List, Optional

from ..exceptions import ResonateError, StoreError

__all__ = ["GroupCommit"]

logger = logging.getLogger(__name__)

Write = Callable[[sqlite3.Connection], Any]

# Writes per transaction at most: bounds the time one leader holds the lead.
_MAX_BATCH = 1000


#: Called by the committing thread with what the write returned or raised.
Callback = Callable[[Any, Optional[BaseException]], None]


class _Slot:
    __slots__ = ("write", "done", "value", "error", "wake", "callback")

    def __init__(self, write: Write, callback: Optional[Callback] = None) -> None:
        self.write = write
        self.done = False
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.callback = callback
        self.wake = threading.Lock()  # a caller waits on it, unless a callback
        self.wake.acquire()

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class GroupCommit:
    """Runs writes on one connection, many per transaction. Thread-safe.

    :param connection: returns the write connection (opened in autocommit
        mode, ``isolation_level=None``); called only by the leader.
    :param locked_for: seconds to keep retrying while another process holds
        the database's write lock, beyond SQLite's own busy timeout.
    """

    def __init__(
        self, connection: Callable[[], sqlite3.Connection], locked_for: float = 60.0
    ) -> None:
        self._connection = connection
        self._locked_for = locked_for
        self._reset()

    def _reset(self) -> None:
        self._guard = threading.Lock()
        self._transacting = threading.Lock()  # held for each transaction
        self._queue: Deque[_Slot] = collections.deque()
        self._leading = False
        self._leader: Optional[int] = None  # the thread running callbacks

    def run(self, write: Write) -> Any:
        """Run ``write`` in a committed transaction and return what it returned.

        Blocks until the transaction holding the write has committed.
        :raises StoreError: when the database failed; nothing was written.
        """
        slot = _Slot(write)
        if self._leader == threading.get_ident():
            # A callback writing from the leading thread, between two
            # transactions: it cannot wait for a leader, it is the leader.
            self._commit_batch([slot])
            return slot.result()
        with self._guard:
            self._queue.append(slot)
            leads = not self._leading
            self._leading = True
        if not leads:
            slot.wake.acquire()  # woken once: committed, or handed the lead
        if not slot.done:
            # A leader's slot heads the queue: it took the lead when the
            # queue was empty, or was handed it as the head. So one batch
            # always commits it.
            self._lead()
        return slot.result()

    def submit(self, write: Write, callback: Callback) -> None:
        """Queue ``write`` and return; ``callback(value, error)`` runs once it commits.

        Blocks only when no other thread is committing: then this one commits
        the queue itself, callback included. Otherwise the committing thread
        runs the callback, so keep it short and let it not raise.
        """
        slot = _Slot(write, callback)
        with self._guard:
            self._queue.append(slot)
            leads = not self._leading
            self._leading = True
        if leads:
            self._lead()

    def reset_after_fork(self) -> None:
        """Forget a queue and a leader that belonged to the parent's threads."""
        self._reset()

    def pause_for_fork(self, timeout: float) -> bool:
        """Wait until no transaction runs, and start none until :meth:`resume`.

        Call it right before ``os.fork()``. SQLite keeps the locks of all of a
        process's connections to one file in one table (``unixInodeInfo`` in
        os_unix.c). A child forked while a transaction holds the write lock
        inherits an entry saying that one of its connections holds it, and
        none of its own connections can ever release it: every write in the
        child would wait out the busy timeout and fail. A transaction still
        waiting for another process's lock after ``timeout`` seconds is not
        waited for: it holds nothing yet, and the fork must not hang on it.

        :returns: True when paused; only then call :meth:`resume`.
        """
        # TODO: a transaction that wins the lock at the very instant of a fork
        # that gave up waiting still leaves the child unable to write; closing
        # that needs BEGIN retried here with SQLite's busy timeout at 0.
        return self._transacting.acquire(timeout=timeout)

    def resume(self) -> None:
        """End :meth:`pause_for_fork`; call it after the fork in both processes."""
        self._transacting.release()

    def _lead(self) -> None:
        while True:
            with self._guard:
                batch = [
                    self._queue.popleft()
                    for _ in range(min(len(self._queue), _MAX_BATCH))
                ]
            self._commit_batch(batch)
            self._leader = threading.get_ident()
            try:
                _run_callbacks(batch)
            finally:
                self._leader = None
            with self._guard:
                if not self._queue:
                    self._leading = False
                    return
                head = self._queue[0]
                if head.callback is None:
                    head.wake.release()  # a waiting caller leads next
                    return
            # Queued by callers that did not wait: nobody else will commit
            # them, so this thread leads on.

    def _commit_batch(self, batch: List[_Slot]) -> None:
        try:
            self._transaction(batch)
        except BaseException as err:
            # Every caller in the batch must wake with an error, or a caller
            # whose write was drained would wait for a commit that never comes.
            failure = _store_error(err)
            for slot in batch:
                slot.value, slot.error = None, failure
        for slot in batch:
            slot.done = True
            if slot.wake.locked():
                slot.wake.release()

    def _transaction(self, batch: List[_Slot]) -> None:
        with self._transacting:
            connection = self._connection()
            self._begin(connection)
            try:
                for slot in batch:
                    slot.value, slot.error = _apply(slot.write, connection)
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise

    def _begin(self, connection: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock up front, so a transaction never
        # fails later upgrading a read lock (sqlite.org/lang_transaction.html).
        # busy_timeout waits inside SQLite; this loop outlasts a long writer.
        deadline = time.monotonic() + self._locked_for
        delay = 0.005
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as err:
                if not _is_busy(err) or time.monotonic() >= deadline:
                    raise
                logger.warning("database is locked, retrying in %.3fs", delay)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)


def _run_callbacks(batch: List[_Slot]) -> None:
    for slot in batch:
        if slot.callback is not None:
            try:
                slot.callback(slot.value, slot.error)
            except Exception:
                logger.exception("a commit callback failed")


def _apply(write: Write, connection: sqlite3.Connection) -> Any:
    try:
        return write(connection), None
    except ResonateError as err:
        return None, err


def _store_error(err: BaseException) -> BaseException:
    if not isinstance(err, sqlite3.Error):
        return err
    failure = StoreError(f"sqlite write failed: {err}")
    failure.__cause__ = err
    return failure


def _rollback(connection: sqlite3.Connection) -> None:
    try:
        connection.execute("ROLLBACK")
    except sqlite3.Error:
        logger.debug("rollback failed; the transaction was already closed")


def _is_busy(err: sqlite3.OperationalError) -> bool:
    text = str(err).lower()
    return "locked" in text or "busy" in text
