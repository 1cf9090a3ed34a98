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
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

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
    StoreError,
)
from .handle import InvocationHandle, Task
from .options import Options
from .promise import DurablePromise, State
from .retry import policy_from_json
from .stores.base import PromiseStore

__all__ = ["Call", "Runtime", "ShutdownError", "outcome_future"]

logger = logging.getLogger(__name__)

INVOCATION_TAG = "resonate:invocation"
PARENT_TAG = "resonate:parent"
ROOT_TAG = "resonate:root"

# Errors that replay would raise again the same way: retrying cannot help.
_DETERMINISTIC = (
    FunctionMismatchError,
    PromiseCanceledError,
    PromiseTimedOutError,
    EncodingError,
)


class ShutdownError(ResonateError):
    """The runtime shut down before the invocation ended; its promise stays pending."""


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
    __slots__ = ("lock", "handle", "function")

    def __init__(self, function: str) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.handle: Optional[InvocationHandle[Any]] = None
        self.function = function


class Runtime:
    """Runs invocations on a thread pool against a store. Thread-safe.

    :param store: where promises live.
    :param max_workers: threads in the pool (``ThreadPoolExecutor``'s default
        when None).
    :param clock: returns now in seconds since the epoch.
    :param sleep: waits the given seconds between retries; the default wakes
        early on shutdown.
    """

    def __init__(
        self,
        store: PromiseStore,
        *,
        max_workers: Optional[int],
        clock: Callable[[], float],
        sleep: Optional[Callable[[float], Any]] = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.registry = Registry()
        self.stopping = threading.Event()
        self._sleep = sleep or self.stopping.wait
        self._max_workers = max_workers
        self._reset()
        _check_fork_in_child(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._running: Dict[str, _Entry] = {}
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
            handle = self._submit(call, entry, inline)
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
                call.id, call.timeout_ms, param=param, tags=call.tags,
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
        timeout_ms = self.now_ms() + int(resolved.timeout * 1000)  # type: ignore[operator]
        tags = {**resolved.tags, PARENT_TAG: parent.id, ROOT_TAG: parent.root}  # type: ignore[dict-item]
        call = Call(
            f"{parent.id}.{position}", registered, args, kwargs, resolved,
            min(timeout_ms, parent.timeout_ms), tags, parent.root,
        )
        if not resolved.durable:
            # No promise: retries as the policy says, and a re-run runs it again.
            return self._submit(call, None)
        return self.invoke(call)

    # -- running ----------------------------------------------------------

    def _execute(
        self, call: Call, entry: Optional[_Entry], future: "concurrent.futures.Future[Any]"
    ) -> None:
        try:
            state, result = self._attempts(call)
            if entry is None:  # a non-durable child: there is no promise
                settle = functools.partial(_settle_volatile, future, state, result)
            else:
                promise = self._complete(call, state, result)
                settle = functools.partial(_settle, future, promise)
        except _Pending as pending:
            settle = functools.partial(future.set_exception, pending.error)
        except BaseException as error:  # a fault of the runtime itself
            logger.exception("invocation %r failed in the runtime", call.id)
            settle = functools.partial(future.set_exception, error)
        if entry is not None:
            self._release(call.id, entry)
        settle()

    def _attempts(self, call: Call) -> Tuple[State, Any]:
        attempt = 0
        while True:
            attempt += 1
            context = Context(self, call, attempt)
            error = _call_function(call, context)
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
                    "invocation %r failed on attempt %d", call.id, attempt,
                    exc_info=error,
                )
                return State.REJECTED, error
            logger.warning(
                "invocation %r failed on attempt %d, retrying in %.3fs: %r",
                call.id, attempt, delay, error,
            )
            self._pause(delay, call)

    def _retry_delay(self, call: Call, error: BaseException, attempt: int) -> Optional[float]:
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
        if self.stopping.is_set():
            raise _Pending(
                ShutdownError(
                    f"resonate shut down while invocation {call.id!r} waited to retry",
                    promise_id=call.id,
                )
            )

    def _complete(self, call: Call, state: State, result: Any) -> DurablePromise:
        state, value = _encode_outcome(call, state, result)
        delay = 0.05
        for _ in range(8):
            try:
                return self.store.complete(
                    call.id, state, value=value, idempotency_key=call.id
                ).promise
            except PromiseAlreadyCompletedError:
                # Canceled, timed out or completed elsewhere: the store wins.
                return self.store.get(call.id)
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
        body = {
            "func": call.registered.name,
            "args": list(call.args),
            "kwargs": call.kwargs,
            "version": 1,
            "retryPolicy": call.options.retry_policy.to_json(),  # type: ignore[union-attr]
        }
        try:
            return encoding.encode_value(body)
        except EncodingError:
            _raise_for_argument(call)
            raise

    # -- recovery ---------------------------------------------------------

    def recover(self) -> int:
        """Run every pending top-level invocation whose function is registered here.

        Blocks while it searches the store; the invocations run on the pool.
        :returns: how many invocations were started.
        """
        started, cursor = 0, None
        while True:
            page = self.store.search(
                "*", state="pending", tags={INVOCATION_TAG: "true"}, cursor=cursor
            ) if cursor is None else self.store.search(cursor=cursor)
            started += sum(self._recover_one(promise) for promise in page.promises)
            if page.cursor is None:
                return started
            cursor = page.cursor

    def _recover_one(self, promise: DurablePromise) -> int:
        call = self._stored_call(promise)
        if call is None or self.stopping.is_set():
            return 0
        entry, mine = self._reserve(promise.id, call.registered.name)
        if not mine:
            return 0
        try:
            # The search may predate an invocation that has ended here since;
            # read again now that no other run of this id can start here.
            if not self.store.get(promise.id).pending:
                self._release(promise.id, entry)
                return 0
            self._submit(call, entry)
        except BaseException:
            self._release(promise.id, entry)
            raise
        finally:
            entry.lock.release()
        logger.debug("recovering invocation %r", promise.id)
        return 1

    def _stored_call(self, promise: DurablePromise) -> Optional[Call]:
        try:
            body = encoding.decode_value(promise.param, f"param of {promise.id!r}")
            registered = self.registry.find(body["func"])
            if registered is None:
                return None
            options = registered.defaults
            policy = body.get("retryPolicy")
            if policy:
                options = options.merged(Options(retry_policy=policy_from_json(policy)))
            return Call(
                promise.id, registered, tuple(body.get("args") or ()),
                dict(body.get("kwargs") or {}), options, promise.timeout,
                dict(promise.tags), promise.tags.get(ROOT_TAG, promise.id),
            )
        except (ResonateError, KeyError, TypeError, AttributeError) as err:
            logger.warning("cannot recover promise %r: %s", promise.id, err)
            return None

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
        """Stop the pool: drain it when ``wait``, else fail unstarted handles.

        Invocations that had not started stay pending in the store.
        """
        self.stopping.set()
        executor = self._executor
        if executor is None or self._pid != os.getpid():
            return
        if wait:
            executor.shutdown(wait=True)
            return
        with self._lock:
            entries = list(self._running.items())
        for invocation_id, entry in entries:
            handle = entry.handle
            if handle is not None and not handle.done():
                _fail_unstarted(handle, invocation_id)
        executor.shutdown(wait=False, cancel_futures=True)


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


def _fail_inherited(handle: Optional[InvocationHandle[Any]], invocation_id: str) -> None:
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


def _encode_outcome(call: Call, state: State, result: Any) -> Tuple[State, Any]:
    if state is State.REJECTED:
        return state, encoding.encode_error(result)
    try:
        return state, encoding.encode_value(
            result, f"value returned by {call.registered.name!r}"
        )
    except EncodingError as err:
        logger.error("invocation %r returned a value that is not JSON", call.id)
        return State.REJECTED, encoding.encode_error(err)


def outcome_future(promise: DurablePromise) -> "concurrent.futures.Future[Any]":
    """A future already settled with a completed promise's outcome."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    _settle(future, promise)
    return future


def _settle(future: "concurrent.futures.Future[Any]", promise: DurablePromise) -> None:
    try:
        value = _outcome(promise)
    except BaseException as error:
        future.set_exception(error)
    else:
        future.set_result(value)


def _outcome(promise: DurablePromise) -> Any:
    if promise.state is State.RESOLVED:
        return encoding.decode_value(promise.value, f"value of {promise.id!r}")
    if promise.state is State.REJECTED:
        raise encoding.decode_error(promise.value)
    if promise.state is State.REJECTED_CANCELED:
        raise PromiseCanceledError(
            f"promise {promise.id!r} was canceled", promise_id=promise.id
        )
    if promise.state is State.REJECTED_TIMEDOUT:
        raise PromiseTimedOutError(
            f"promise {promise.id!r} timed out", promise_id=promise.id
        )
    raise StoreError(f"promise {promise.id!r} is still pending")


def _settle_volatile(
    future: "concurrent.futures.Future[Any]", state: State, result: Any
) -> None:
    if state is State.RESOLVED:
        future.set_result(result)
    else:
        future.set_exception(result)
