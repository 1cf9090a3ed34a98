"""The engine under :class:`~resonate_sync.Resonate`: invoke, run, complete, recover.

The invoke path: encode the arguments (refused before any write), create the
durable promise, submit a :class:`~resonate_sync.handle.Task` to the executor
and return the handle. The create is the only thing a caller waits for.

The invocation cache maps an id to the handle of the invocation running in
this process, so one id never runs twice at once here; an entry leaves when
the invocation ends. The store is the truth: a handle settles with the
outcome the store recorded, not with what this process computed.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import threading
import weakref
from typing import (
    Any,
    Callable,
    Dict,
    NamedTuple,
    Optional,
    Set,
    Tuple,
    Union,
    cast,
)

from . import encoding
from ._registry import Registered, Registry
from .context import Context
from .exceptions import (
    EncodingError,
    FunctionMismatchError,
    PromiseAlreadyCompletedError,
    PromiseAlreadyExistsError,
    PromiseCanceledError,
    PromiseTimedOutError,
    ResonateError,
    ShutdownError,
    StoreError,
)
from ._lease import OWNER_TAG, Leases
from ._outcome import encode_outcome, outcome_future, settle, settle_volatile
from ._recovery import RecoveryMixin
from ._steps import (
    StepsMixin,
    abandoned_wait,
    canceled_error,
    canceled_in,
    settle_watched,
)
from ._tags import INVOCATION_TAG, PARENT_TAG, ROOT_TAG
from ._watch import Watcher
from .handle import InvocationHandle, Task
from .options import Options
from .promise import validate_id
from .promise import DurablePromise, State, Value
from .stores.base import PromiseStore

__all__ = [
    "INVOCATION_TAG",
    "Call",
    "Runtime",
    "ShutdownError",
    "outcome_future",
]

logger = logging.getLogger(__name__)

# Errors that replay would raise again the same way: retrying cannot help.
_DETERMINISTIC = (
    FunctionMismatchError,
    PromiseCanceledError,
    PromiseTimedOutError,
    EncodingError,
)


class _Pending(Exception):
    """Leave the promise pending (to be recovered) and fail the handle with ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Call(NamedTuple):
    """One invocation to run: what, with which arguments, under which promise."""

    id: str
    registered: Registered
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    options: Options
    timeout_ms: int
    tags: Dict[str, str]
    root: str


class _Entry:
    # The creator holds ``lock`` until the handle exists; a second caller
    # with the same id waits on it and gets the same handle, if it calls
    # the same function.
    __slots__ = ("lock", "handle", "function", "leased")

    def __init__(self, function: str) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.handle: Optional[InvocationHandle[Any]] = None
        self.function = function
        self.leased = False  # runs under a lease taken over from a dead process


class Runtime(StepsMixin, RecoveryMixin):
    """Runs invocations on a thread pool against a store. Thread-safe.

    :param store: where promises live.
    :param max_workers: threads in the pool (``ThreadPoolExecutor``'s default
        when None).
    :param clock: returns now in seconds since the epoch.
    :param sleep: waits the given seconds between retries and durable sleeps;
        the default wakes early on ``shutdown(wait=False)``.
    :param lease_ttl: seconds a process keeps its leases without a heartbeat.
    """

    def __init__(
        self,
        store: PromiseStore,
        *,
        max_workers: Optional[int],
        clock: Callable[[], float],
        sleep: Optional[Callable[[float], Any]] = None,
        lease_ttl: float = 30.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.registry = Registry()
        # stopping: no new top-level work. abandon: stop waiting, leave work
        # pending. closed: the heartbeat and the watcher end.
        self.stopping = threading.Event()
        self.abandon = threading.Event()
        self.closed = threading.Event()
        self._sleep = sleep or self.abandon.wait
        self._max_workers = max_workers
        self.leases = Leases(store, lease_ttl, self.closed)
        self.watcher = Watcher(store, self.closed)
        self._reset()
        _check_fork_in_child(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._running: Dict[str, _Entry] = {}
        self._canceled: Set[str] = set()
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def now_ms(self) -> int:
        """Now in epoch milliseconds, by the injected clock."""
        return int(self.clock() * 1000)

    # -- invoking ---------------------------------------------------------

    def invoke(self, call: Call, inline: bool = False) -> InvocationHandle[Any]:
        """Create ``call``'s promise, submit it and return its handle.

        Same id already running here: the same handle. Promise already
        completed: a handle done with the stored outcome. With ``inline``,
        the function runs in the calling thread instead of the pool, and the
        handle returned is done.
        :raises EncodingError: when an argument is not JSON; nothing is written.
        :raises FunctionMismatchError: when the stored promise is another call.
        :raises StoreError: when the store failed; nothing may have been written.
        """
        if call.id == call.root and self.stopping.is_set():
            raise ShutdownError(
                f"cannot start invocation {call.id!r}: resonate is shut down",
                promise_id=call.id,
            )
        param = self._encode_param(call)
        if call.id == call.root:
            call = call._replace(tags={**call.tags, OWNER_TAG: self.leases.ensure()})
        while True:
            entry, mine = self._reserve(call.id, call.registered.name)
            if mine:
                return self._create_and_submit(call, param, entry, inline)
            with entry.lock:
                if entry.handle is not None:
                    _check_running_function(call, entry.function)
                    return entry.handle

    def _reserve(self, invocation_id: str, function: str) -> Tuple[_Entry, bool]:
        self._check_fork()
        with self._lock:
            entry = self._running.get(invocation_id)
            if entry is not None:
                return entry, False
            entry = self._running[invocation_id] = _Entry(function)
            return entry, True

    def _release(self, invocation_id: str, entry: _Entry) -> None:
        with self._lock:
            if self._running.get(invocation_id) is entry:
                del self._running[invocation_id]

    def _create_and_submit(
        self, call: Call, param: Any, entry: _Entry, inline: bool
    ) -> InvocationHandle[Any]:
        try:
            promise, created = self._create_promise(call, param)
            if not created:
                # Before the outcome too: a stored outcome of another
                # function is not this call's outcome.
                call = _stored_arguments(call, promise)
            if not promise.pending:
                self._release(call.id, entry)
                entry.handle = InvocationHandle(call.id, outcome_future(promise))
                return entry.handle
            if created or call.id != call.root or self._may_run(promise, entry):
                handle = self._submit(call, entry, inline)
            else:
                handle = self._wait_elsewhere(call, entry)
        except BaseException:
            self._release(call.id, entry)
            raise
        finally:
            entry.lock.release()
        if inline:
            handle.exception()  # claims the task and runs it here
        return handle

    def _create_promise(self, call: Call, param: Any) -> Tuple[DurablePromise, bool]:
        key = call.options.idempotency_key or call.id
        try:
            written = self.store.create(
                call.id,
                call.timeout_ms,
                param=param,
                tags=call.tags,
                idempotency_key=key,
            )
        except PromiseAlreadyExistsError:
            # Made by someone else under another key: the stored promise is
            # the truth, and the function check below guards against misuse.
            return self.store.get(call.id), False
        return written.promise, written.created

    def _submit(
        self, call: Call, entry: Optional[_Entry], inline: bool = False
    ) -> InvocationHandle[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        task = Task(functools.partial(self._execute, call, entry, future))
        handle = InvocationHandle(call.id, future, task)
        if entry is not None:
            entry.handle = handle
        if inline:
            return handle
        try:
            self._executor_for_submit().submit(task)
        except RuntimeError as err:  # the executor is shut down
            if call.id != call.root:
                # A running parent finishes after shutdown, and so must its
                # children: the one that waits on a child runs it.
                return handle
            raise ShutdownError(
                f"cannot start invocation {call.id!r}: resonate is shut down",
                promise_id=call.id,
            ) from err
        return handle

    def _may_run(self, promise: DurablePromise, entry: _Entry) -> bool:
        # A pending top-level invocation made elsewhere runs here only when
        # its owner is gone and this process wins its lease (see _lease.py).
        owner = promise.tags.get(OWNER_TAG)
        if owner == self.leases.process_id:
            return True
        if self.leases.owner_alive(owner) or not self.leases.take(promise.id):
            return False
        entry.leased = True
        return True

    def _wait_elsewhere(self, call: Call, entry: _Entry) -> InvocationHandle[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        handle = entry.handle = InvocationHandle(call.id, future)

        def completed(result: Union[DurablePromise, ResonateError]) -> None:
            self._release(call.id, entry)
            settle_watched(future, result)

        def pending(promise: DurablePromise) -> bool:
            if self.stopping.is_set() or not self._may_run(promise, entry):
                return False
            task = Task(functools.partial(self._execute, call, entry, future))
            handle._task = task
            try:
                self._executor_for_submit().submit(task)
            except RuntimeError:
                pass  # shut down: whoever waits on the handle runs it
            return True

        logger.debug("invocation %r runs in another process; waiting", call.id)
        self.watcher.watch(call.id, completed, pending)
        return handle

    def invoke_child(
        self,
        parent: Call,
        position: int,
        function: Any,
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
        options: Optional[Options],
    ) -> InvocationHandle[Any]:
        """Start child number ``position`` of ``parent``; see :class:`Context`."""
        registered = self.registry.for_child(function)
        resolved = registered.defaults.merged(options)
        timeout_ms = self.now_ms() + int(resolved.timeout * 1000)
        tags = {**resolved.tags, PARENT_TAG: parent.id, ROOT_TAG: parent.root}
        call = Call(
            f"{parent.id}.{position}",
            registered,
            args,
            kwargs,
            resolved,
            min(timeout_ms, parent.timeout_ms),
            tags,
            parent.root,
        )
        if not resolved.durable:
            # No promise: retries as the policy says, and a re-run runs it again.
            return self._submit(call, None)
        return self.invoke(call)

    def top_level_call(
        self,
        function: Any,
        invocation_id: str,
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
        options: Optional[Options],
    ) -> Call:
        """The call of a top-level invocation: registered function, resolved options."""
        registered = self.registry.lookup(function)
        resolved = registered.defaults.merged(options)
        timeout_ms = self.now_ms() + int(resolved.timeout * 1000)
        return Call(
            validate_id(invocation_id),
            registered,
            args,
            kwargs,
            resolved,
            timeout_ms,
            {**resolved.tags, INVOCATION_TAG: "true"},
            invocation_id,
        )

    # -- running ----------------------------------------------------------

    def _execute(
        self,
        call: Call,
        entry: Optional[_Entry],
        future: "concurrent.futures.Future[Any]",
    ) -> None:
        try:
            state, result = self._attempts(call)
            if entry is None:  # a non-durable child: there is no promise
                finish = functools.partial(settle_volatile, future, state, result)
            else:
                state, value = encode_outcome(
                    call.id, call.registered.name, state, result
                )
                if self._complete_later(call, entry, future, state, value):
                    return  # the commit finishes it
                promise = self._complete(call, state, value)
                finish = functools.partial(self._settle, future, promise)
        except _Pending as pending:
            finish = functools.partial(future.set_exception, pending.error)
        except BaseException as error:  # a fault of the runtime itself
            logger.exception("invocation %r failed in the runtime", call.id)
            finish = functools.partial(future.set_exception, error)
        self._finish(call, entry, finish)

    def _finish(
        self, call: Call, entry: Optional[_Entry], finish: Callable[[], Any]
    ) -> None:
        if entry is not None:
            self._release(call.id, entry)
            self._canceled.discard(call.id)
            if entry.leased:
                self.leases.release(call.id)
        finish()

    def _complete_later(
        self,
        call: Call,
        entry: _Entry,
        future: "concurrent.futures.Future[Any]",
        state: State,
        value: Value,
    ) -> bool:
        # A store that can commit completions without the worker waiting
        # (SQLite's group commit) frees the worker for its next invocation;
        # the handle still settles only once the completion is committed.
        complete_later = getattr(self.store, "complete_later", None)
        if complete_later is None:
            return False

        def committed(written: Any, error: Optional[BaseException]) -> None:
            if error is None:
                self._finish(
                    call,
                    entry,
                    functools.partial(self._settle, future, written.promise),
                )
                return
            # Refused or failed: what follows reads and may wait to retry, so
            # not on the committing thread; and not on the pool either, which
            # may be full of parents waiting for this very invocation.
            retry = functools.partial(
                self._finish_completion, call, entry, future, state, value
            )
            threading.Thread(
                target=retry, name="resonate-complete", daemon=True
            ).start()

        complete_later(call.id, state, committed, value=value, idempotency_key=call.id)
        return True

    def _finish_completion(
        self,
        call: Call,
        entry: _Entry,
        future: "concurrent.futures.Future[Any]",
        state: State,
        value: Value,
    ) -> None:
        try:
            promise = self._complete(call, state, value)
            finish = functools.partial(self._settle, future, promise)
        except _Pending as pending:
            finish = functools.partial(future.set_exception, pending.error)
        except BaseException as error:
            logger.exception("completing invocation %r failed in the runtime", call.id)
            finish = functools.partial(future.set_exception, error)
        self._finish(call, entry, finish)

    def _settle(
        self, future: "concurrent.futures.Future[Any]", promise: DurablePromise
    ) -> None:
        settle(future, promise)
        self.watcher.notify(promise)

    def _attempts(self, call: Call) -> Tuple[State, Any]:
        attempt = 0
        while True:
            attempt += 1
            context = Context(self, call, attempt)
            error = _start_unless_canceled(self._canceled, call, context)
            for child_error in context.join():
                if _stays_pending(child_error):
                    raise _Pending(child_error)
            if error is None:
                return State.RESOLVED, context.value
            if _stays_pending(error):
                raise _Pending(error)

            delay = self._retry_delay(call, error, attempt)
            if delay is None:
                logger.error(
                    "invocation %r failed on attempt %d",
                    call.id,
                    attempt,
                    exc_info=error,
                )
                return State.REJECTED, error
            logger.warning(
                "invocation %r failed on attempt %d, retrying in %.3fs: %r",
                call.id,
                attempt,
                delay,
                error,
            )
            self._pause(delay, call)

    def _retry_delay(
        self, call: Call, error: BaseException, attempt: int
    ) -> Optional[float]:
        if isinstance(error, call.options.non_retryable or ()) or isinstance(
            error, _DETERMINISTIC
        ):
            return None
        delay = call.options.retry_policy.delay(attempt)  # type: ignore[union-attr]
        # Never retry past the promise's timeout: a late attempt could only
        # find the promise timed out.
        if delay is None or self.now_ms() + delay * 1000 >= call.timeout_ms:
            return None
        return delay

    def _pause(self, delay: float, call: Call) -> None:
        self._sleep(delay)
        if self.abandon.is_set():
            raise _Pending(
                ShutdownError(
                    f"resonate shut down while invocation {call.id!r} waited to retry",
                    promise_id=call.id,
                )
            )

    def _complete(self, call: Call, state: State, value: Value) -> DurablePromise:
        delay = 0.05
        for _ in range(8):
            try:
                return cast(
                    DurablePromise,
                    self.store.complete(
                        call.id, state, value=value, idempotency_key=call.id
                    ).promise,
                )
            except PromiseAlreadyCompletedError:
                # Canceled, timed out or completed elsewhere: the store wins.
                return cast(DurablePromise, self.store.get(call.id))
            except StoreError as err:
                failure: BaseException = err
                logger.warning(
                    "completing %r failed, retrying in %.2fs: %s", call.id, delay, err
                )
            except ResonateError as err:
                raise _Pending(err) from err
            self._pause(delay, call)
            delay = min(delay * 2, 2.0)
        raise _Pending(failure)

    # -- encoding ---------------------------------------------------------

    def _encode_param(self, call: Call) -> Any:
        policy = call.options.retry_policy
        try:
            return encoding.encode_invocation(
                call.registered.name,
                call.args,
                call.kwargs,
                None if policy is None else policy.to_json(),
            )
        except EncodingError:
            _raise_for_argument(call)
            raise

    # -- lifecycle --------------------------------------------------------

    def _executor_for_submit(self) -> concurrent.futures.ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                if self.stopping.is_set():
                    raise RuntimeError("cannot start a pool after shutdown")
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        self._max_workers, thread_name_prefix="resonate"
                    )
                executor = self._executor
        return executor

    def _check_fork(self) -> None:
        # After os.fork() only the forking thread exists in the child: the
        # parent's pool threads, locks held by them and running invocations
        # are gone. Start afresh; the store reopens its own connections. The
        # inherited handles fail: nothing here would settle them, and running
        # their work here too would run it in both processes.
        if self._pid != os.getpid():
            inherited = list(self._running.items())
            self._reset()
            for invocation_id, entry in inherited:
                _fail_inherited(entry.handle, invocation_id)

    def shutdown(self, wait: bool = True) -> None:
        """Stop: drain the pool when ``wait``, else abandon what has not ended.

        ``wait=True`` blocks until every submitted invocation has ended, its
        retries and durable sleeps included. ``wait=False`` returns at once:
        unstarted invocations fail their handles, waits for retries and sleeps
        end, and their promises stay pending for recovery. Either way, this
        process then gives back its leases.
        """
        self.stopping.set()
        if not wait:
            self.abandon.set()
            # Workflows blocked on a ctx.promise would hold their threads, and
            # so the interpreter's exit, until someone completes it.
            self.watcher.fail_all(abandoned_wait)
        executor = self._executor
        if executor is not None and self._pid == os.getpid():
            if wait:
                executor.shutdown(wait=True)
            else:
                self._fail_all_unstarted()
                executor.shutdown(wait=False, cancel_futures=True)
        self._fail_waiting()
        self.closed.set()
        self.leases.close()

    def _fail_all_unstarted(self) -> None:
        with self._lock:
            entries = list(self._running.items())
        for invocation_id, entry in entries:
            handle = entry.handle
            if handle is not None and not handle.done():
                _fail_unstarted(handle, invocation_id)

    def _fail_waiting(self) -> None:
        # Handles waiting on an invocation that runs in another process have
        # no work here to drain; once the watcher stops, nothing would settle
        # them.
        with self._lock:
            entries = list(self._running.items())
        for invocation_id, entry in entries:
            handle = entry.handle
            if handle is not None and handle._task is None and not handle.done():
                error = ShutdownError(
                    f"resonate shut down while invocation {invocation_id!r}"
                    " ran in another process",
                    promise_id=invocation_id,
                )
                try:
                    handle.future.set_exception(error)
                except concurrent.futures.InvalidStateError:
                    pass  # settled meanwhile by the watcher


def _start_unless_canceled(
    canceled: Set[str], call: Call, context: Context
) -> Optional[BaseException]:
    # A child queued before its tree (or its parent) was canceled does not start.
    canceled_id = canceled_in(canceled, call)
    if canceled_id is not None:
        return canceled_error(call, canceled_id)
    return _call_function(call, context)


def _call_function(call: Call, context: Context) -> Optional[BaseException]:
    try:
        context.value = call.registered.function(context, *call.args, **call.kwargs)
    except BaseException as error:
        return error
    return None


def _stays_pending(error: BaseException) -> bool:
    # A store failure or an interpreter exit says nothing about the user's
    # function: the promise must stay pending, to be recovered.
    return isinstance(error, (StoreError, ShutdownError)) or not isinstance(
        error, Exception
    )


def _fail_unstarted(handle: InvocationHandle[Any], invocation_id: str) -> None:
    task = handle._task
    if task is not None and not task.claimed and task._claim.acquire(blocking=False):
        handle.future.set_exception(
            ShutdownError(
                f"resonate shut down before invocation {invocation_id!r} started;"
                " its promise stays pending",
                promise_id=invocation_id,
            )
        )


def _check_fork_in_child(runtime: Runtime) -> None:
    # At the fork itself, so that a handle the child already holds fails
    # instead of waiting forever; weak, so the hook does not keep the
    # runtime alive.
    reference = weakref.ref(runtime)

    def after_in_child() -> None:
        alive = reference()
        if alive is not None:
            alive._check_fork()

    os.register_at_fork(after_in_child=after_in_child)


def _fail_inherited(
    handle: Optional[InvocationHandle[Any]], invocation_id: str
) -> None:
    if handle is None or handle.done():
        return
    task = handle._task
    if task is not None:
        task._claim.acquire(blocking=False)  # it must not run in this process
    handle.future.set_exception(
        ShutdownError(
            f"invocation {invocation_id!r} belongs to the process this one was"
            " forked from; its promise stays pending there",
            promise_id=invocation_id,
        )
    )


def _stored_arguments(call: Call, promise: DurablePromise) -> Call:
    # A duplicate create ignores the request's param and timeout: the
    # invocation runs with the arguments it was first made with, and its
    # retries and children stay within the stored timeout, as on recovery.
    try:
        body = encoding.decode_value(promise.param)
        stored, args, kwargs = body.get("func"), body["args"], body["kwargs"]
    except (EncodingError, AttributeError, KeyError, TypeError):
        stored, args, kwargs = None, None, None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        stored = None
    if stored != call.registered.name:
        reason = (
            f"was made for function {stored!r}, not {call.registered.name!r}:"
            " the program changed since it ran"
            if stored is not None
            else f"exists and is not an invocation of {call.registered.name!r}"
        )
        raise FunctionMismatchError(
            f"promise {call.id!r} {reason}",
            promise_id=call.id,
            stored=stored,
            called=call.registered.name,
        )
    return call._replace(
        args=tuple(args), kwargs=dict(kwargs), timeout_ms=promise.timeout
    )


def _check_running_function(call: Call, running: str) -> None:
    if running != call.registered.name:
        raise FunctionMismatchError(
            f"invocation {call.id!r} is running function {running!r} here,"
            f" not {call.registered.name!r}",
            promise_id=call.id,
            stored=running,
            called=call.registered.name,
        )


def _raise_for_argument(call: Call) -> None:
    name = call.registered.name
    for position, argument in enumerate(call.args, 1):
        encoding.encode_json(argument, f"argument {position} of {name!r}")
    for keyword, argument in call.kwargs.items():
        encoding.encode_json(argument, f"argument {keyword!r} of {name!r}")
