"""SQLiteStore under concurrency: many threads, several processes, fork().

Every wait here is on an event, a pipe or a process, with a timeout: a hang
fails the test instead of stalling the suite.
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import subprocess
import sys
import textwrap
import threading
import traceback

import pytest

from conftest import EPOCH_MS, ROOT
from resonate_sync.exceptions import (
    PromiseAlreadyCompletedError,
    StoreError,
)
from resonate_sync.promise import State
from resonate_sync.stores.sqlite import SQLiteStore

LATER = EPOCH_MS + 3_600_000
WAIT = 60.0  # seconds: generous, only reached when something hangs


def run_threads(count, work, timeout=WAIT):
    """Run ``work(index)`` on ``count`` threads released together.

    :returns: what each call returned, by index.
    :raises AssertionError: when a thread raised or did not finish in time.
    """
    start = threading.Barrier(count)
    results, errors = [None] * count, []

    def body(index):
        try:
            start.wait(timeout)
            results[index] = work(index)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors[0]
    return results


def all_ids(store, pattern):
    """Every id matching ``pattern``, following the cursors."""
    page = store.search(pattern)
    found = [promise.id for promise in page.promises]
    while page.cursor is not None:
        page = store.search(cursor=page.cursor)
        found.extend(promise.id for promise in page.promises)
    return found


# -- threads ----------------------------------------------------------------


def test_many_threads_creating_and_completing_apply_every_write_once(store):
    per_thread = 150

    def work(index):
        for number in range(per_thread):
            promise_id = f"t{index}.{number}"
            assert store.create(promise_id, LATER, idempotency_key=promise_id).created
            assert store.resolve(promise_id, idempotency_key=promise_id).created
        return per_thread

    assert sum(run_threads(16, work)) == 16 * per_thread

    for index in range(16):
        found = all_ids(store, f"t{index}.*")
        assert sorted(found) == sorted(f"t{index}.{n}" for n in range(per_thread))
    assert store.search("t*", state="pending").promises == []


def test_threads_racing_on_the_same_ids_create_and_complete_each_once(store):
    shared = [f"shared.{number}" for number in range(100)]

    def create_all(index):
        return [store.create(i, LATER, idempotency_key="k").created for i in shared]

    created = run_threads(12, create_all)
    assert [sum(column) for column in zip(*created)] == [1] * len(shared)

    def complete_all(index):
        wins = []
        for promise_id in shared:
            try:
                written = store.resolve(promise_id, idempotency_key=f"thread-{index}")
                wins.append(written.created)
            except PromiseAlreadyCompletedError:
                wins.append(False)
        return wins

    completed = run_threads(12, complete_all)
    assert [sum(column) for column in zip(*completed)] == [1] * len(shared)

    winners = collections.Counter(
        store.get(i).idempotency_key_for_complete for i in shared
    )
    assert sum(winners.values()) == len(shared)


def test_readers_are_never_disturbed_by_writers(store):
    store.create("seen", LATER)

    def work(index):
        for number in range(100):
            if index % 2:
                store.create(f"w{index}.{number}", LATER)
            else:
                assert store.get("seen").id == "seen"
                store.search("w*", limit=5)
        return True

    assert all(run_threads(8, work))


def test_refusals_in_a_shared_transaction_leave_the_other_writes_applied(store):
    # Completions refused with 403 share commits with creates of other threads.
    store.create("p", LATER)

    def work(index):
        won = 0
        for number in range(50):
            try:
                written = store.resolve("p", idempotency_key=f"k{index}")
                won += written.created
            except PromiseAlreadyCompletedError:
                pass
            store.create(f"x{index}.{number:02}", LATER)
        return won

    assert sum(run_threads(8, work)) == 1
    assert len(all_ids(store, "x*")) == 8 * 50


# -- processes --------------------------------------------------------------


def spawn(script: str, *args: str) -> subprocess.Popen:
    """Start a fresh Python process running ``script`` with this checkout."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(process: subprocess.Popen, timeout: float = WAIT) -> str:
    """The next line the process prints, waiting at most ``timeout`` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            process.kill()
            raise AssertionError(f"no output within {timeout}s")
    line = process.stdout.readline()
    if not line:
        process.wait(timeout)
        raise AssertionError(f"process ended early: {process.stderr.read()}")
    return line.strip()


def send(process: subprocess.Popen, line: str) -> None:
    process.stdin.write(line + "\n")
    process.stdin.flush()


def finish(process: subprocess.Popen, timeout: float = WAIT) -> str:
    """Wait for the process to end successfully and return what remains of stdout."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError("process did not finish in time") from None
    assert process.returncode == 0, err
    return out


WRITER = """
    import json, sys, threading
    from resonate_sync.exceptions import PromiseAlreadyCompletedError
    from resonate_sync.stores.sqlite import SQLiteStore

    path, name = sys.argv[1], sys.argv[2]
    count, shared = int(sys.argv[3]), int(sys.argv[4])
    store = SQLiteStore(path)
    print("ready", flush=True)
    sys.stdin.readline()

    report = {"own": 0, "created": [], "resolved": []}
    lock = threading.Lock()

    def own(part):
        for number in range(part, count, 4):
            assert store.create(f"{name}.{number}", 2**62).created
            with lock:
                report["own"] += 1

    def contended():
        for number in range(shared):
            promise_id = f"shared.{number}"
            if store.create(promise_id, 2**62, idempotency_key="k").created:
                report["created"].append(promise_id)
            try:
                if store.resolve(promise_id, idempotency_key=name).created:
                    report["resolved"].append(promise_id)
            except PromiseAlreadyCompletedError:
                pass

    threads = [threading.Thread(target=own, args=(part,)) for part in range(4)]
    threads.append(threading.Thread(target=contended))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    print(json.dumps(report), flush=True)
"""


def test_two_processes_writing_one_file_lose_nothing_and_never_fail(db_path):
    count, shared = 2_000, 300
    SQLiteStore(db_path).close()  # the schema exists before the race
    writers = [
        spawn(WRITER, db_path, name, str(count), str(shared)) for name in ("a", "b")
    ]
    for writer in writers:
        assert read_line(writer) == "ready"
    for writer in writers:
        send(writer, "go")
    reports = [json.loads(finish(writer).strip()) for writer in writers]

    assert [report["own"] for report in reports] == [count, count]
    created = reports[0]["created"] + reports[1]["created"]
    resolved = reports[0]["resolved"] + reports[1]["resolved"]
    assert sorted(created) == sorted(set(created)) and len(created) == shared
    assert sorted(resolved) == sorted(set(resolved)) and len(resolved) == shared

    store = SQLiteStore(db_path)
    try:
        for name in ("a", "b"):
            found = all_ids(store, f"{name}.*")
            assert sorted(found) == sorted(f"{name}.{n}" for n in range(count))
        assert store.get("shared.0").state is State.RESOLVED
    finally:
        store.close()


def test_two_processes_opening_a_new_file_at_once_both_succeed(db_path):
    opener = """
        import sys
        from resonate_sync.stores.sqlite import SQLiteStore
        print("ready", flush=True)
        sys.stdin.readline()
        store = SQLiteStore(sys.argv[1])
        store.create(sys.argv[2], 2**62)
        store.close()
    """
    openers = [spawn(opener, db_path, name) for name in ("one", "two")]
    for process in openers:
        assert read_line(process) == "ready"
    for process in openers:
        send(process, "go")
    for process in openers:
        finish(process)

    store = SQLiteStore(db_path)
    try:
        assert {store.get("one").id, store.get("two").id} == {"one", "two"}
    finally:
        store.close()


LOCK_HOLDER = """
    import sqlite3, sys
    connection = sqlite3.connect(sys.argv[1], isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    connection.execute("COMMIT")
    print("released", flush=True)
"""


def in_thread(call):
    """Start ``call`` on a thread; returns (done event, result list)."""
    done, outcome = threading.Event(), []

    def body():
        try:
            outcome.append(call())
        except BaseException as err:
            outcome.append(err)
        done.set()

    threading.Thread(target=body, daemon=True).start()
    return done, outcome


def test_another_process_holding_the_write_lock_delays_writes_not_reads(store, db_path):
    store.create("existing", LATER)
    holder = spawn(LOCK_HOLDER, db_path)
    try:
        assert read_line(holder) == "locked"

        # WAL readers do not wait for the writer (sqlite.org/wal.html).
        assert store.get("existing").state is State.PENDING
        done, outcome = in_thread(lambda: store.create("during-lock", LATER))
        assert not done.wait(1.0), "the write did not wait for the lock"

        send(holder, "release")
        assert read_line(holder) == "released"
        assert done.wait(WAIT)
        assert outcome[0].created
    finally:
        finish(holder)
    assert store.get("during-lock").state is State.PENDING


def test_a_write_lock_held_past_the_busy_timeout_gives_a_store_error(db_path, clock):
    impatient = SQLiteStore(db_path, clock=clock, busy_timeout=0.2)
    holder = spawn(LOCK_HOLDER, db_path)
    try:
        assert read_line(holder) == "locked"
        with pytest.raises(StoreError, match="locked") as caught:
            impatient.create("p", LATER)
        assert type(caught.value.__cause__).__module__ == "sqlite3"

        send(holder, "release")
        assert read_line(holder) == "released"
        assert impatient.create("p", LATER).created
    finally:
        finish(holder)
        impatient.close()


# -- fork -------------------------------------------------------------------


def run_in_fork(child_work, timeout=WAIT):
    """Run ``child_work()`` in a forked child; returns the lines it reported.

    The child writes one line per ``report(...)`` call to a pipe and exits
    with ``os._exit``, so nothing of the parent's test session runs twice.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        status = 0
        try:
            for line in child_work():
                os.write(write_end, (line + "\n").encode())
        except BaseException:
            os.write(write_end, ("error " + traceback.format_exc()).encode())
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def collect(pid, read_end, timeout=WAIT):
    """Everything the forked child wrote, once it exits; fails on a hang."""
    chunks = []
    with selectors.DefaultSelector() as selector:
        selector.register(read_end, selectors.EVENT_READ)
        while True:
            if not selector.select(timeout):
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise AssertionError(f"forked child hung; said {b''.join(chunks)!r}")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text.splitlines()


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")


@needs_fork
def test_a_forked_child_uses_the_store_and_the_parent_keeps_working(store):
    store.create("before-fork", LATER)
    store.get("before-fork")  # the parent has a reader and a writer open

    def child():
        assert store.get("before-fork").state is State.PENDING
        assert store.create("from-child", LATER).created
        assert store.resolve("before-fork", idempotency_key="child").created
        yield " ".join(sorted(p.id for p in store.search("*").promises))
        store.close()

    lines = collect(*run_in_fork(child))

    assert lines == ["before-fork from-child"]
    assert store.get("from-child").state is State.PENDING
    assert store.get("before-fork").idempotency_key_for_complete == "child"
    assert store.create("after-fork", LATER).created
    assert len(store.search("*").promises) == 3


@needs_fork
def test_a_fork_while_a_parent_thread_is_mid_write_does_not_block_the_child(
    store, db_path
):
    store.create("existing", LATER)
    holder = spawn(LOCK_HOLDER, db_path)
    try:
        assert read_line(holder) == "locked"
        # This thread now waits for the lock inside the store's commit path,
        # holding the store's own commit lock while the process forks.
        done, outcome = in_thread(lambda: store.create("parent-thread", LATER))
        assert not done.wait(0.5)

        def child():
            yield "started"
            assert store.create("from-child", LATER).created
            yield "written"

        pid, read_end = run_in_fork(child)
        send(holder, "release")
        assert read_line(holder) == "released"
        assert collect(pid, read_end) == ["started", "written"]
        assert done.wait(WAIT) and outcome[0].created
    finally:
        finish(holder)

    assert store.get("from-child").id == "from-child"
    assert store.get("parent-thread").id == "parent-thread"
