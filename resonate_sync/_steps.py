"""Durable steps other than child calls: cancel checks, sleep, and ctx.promise.

Mixed into :class:`~resonate_sync._runtime.Runtime`; the state they use (the
store, the clock, the watcher, the set of canceled ids) is the runtime's.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Optional,
    Set,
    Tuple,
    Union,
    cast,
)

from . import encoding
from ._outcome import outcome, settle
from ._tags import PARENT_TAG, ROOT_TAG
from .context import Context
from .exceptions import (
    PromiseAlreadyExistsError,
    PromiseCanceledError,
    ResonateError,
    ShutdownError,
)
from .handle import InvocationHandle
from .promise import EMPTY, TIMER_TAG, DurablePromise, State, Value

if TYPE_CHECKING:  # pragma: no cover
    from ._runtime import Call

__all__ = [
    "StepsMixin",
    "abandoned_wait",
    "canceled_error",
    "canceled_in",
    "lineage",
    "settle_watched",
]

#: Seconds between two reads of an invocation's promise for cancels made
#: elsewhere, and the longest a durable sleep waits without looking.
_CANCEL_CHECK_INTERVAL = 1.0

#: Seconds a durable sleep first waits for a timer still pending past its
#: deadline by our clock, doubling up to the interval above.
_FIRST_TIMER_POLL = 0.05


class StepsMixin:
    """Cancel checks, durable sleep and waits on outside promises."""

    store: Any
    watcher: Any
    abandon: Any
    _canceled: Set[str]
    _running: Dict[str, Any]
    _sleep: Any
    now_ms: Callable[[], int]

    def check_canceled(self, call: Call, context: Context) -> None:
        """Raise PromiseCanceledError if ``call``, its parent or its root was canceled.

        Cancels made in this process are known at once; the store is read at
        most once a second per invocation for cancels made elsewhere.
        """
        canceled_id = canceled_in(self._canceled, call)
        if canceled_id is None:
            now = time.monotonic()
            if now - context.checked < _CANCEL_CHECK_INTERVAL:
                return
            context.checked = now
            canceled_id = self._canceled_in_store(call)
        if canceled_id is not None:
            # The rest of the tree, this call's own children included, sees
            # it at once.
            self._canceled.update((canceled_id, call.id))
            raise canceled_error(call, canceled_id)

    def _canceled_in_store(self, call: Call) -> Optional[str]:
        for promise_id in lineage(call):
            if self.store.get(promise_id).state is State.REJECTED_CANCELED:
                return promise_id
        return None

    def sleep_step(
        self, parent: Call, position: int, seconds: float, context: Context
    ) -> None:
        """Durable sleep: a timer promise whose deadline survives a restart.

        :raises PromiseCanceledError: when ``parent`` is canceled meanwhile,
            here or elsewhere (seen within about a second).
        """
        timer_id = f"{parent.id}.{position}"
        deadline = self.now_ms() + max(0, int(seconds * 1000))
        tags = {TIMER_TAG: "true", PARENT_TAG: parent.id, ROOT_TAG: parent.root}
        promise = self._create_step(timer_id, deadline, EMPTY, tags)
        poll = 0.0  # past the deadline: read at once, then back off
        while promise.pending:
            remaining = (promise.timeout - self.now_ms()) / 1000
            if remaining <= 0:
                # The store resolves the timer by its own clock, which may lag
                # ours: poll rather than spin.
                remaining = poll
                poll = min(max(poll * 2, _FIRST_TIMER_POLL), _CANCEL_CHECK_INTERVAL)
            if remaining > 0:
                self._sleep(min(remaining, _CANCEL_CHECK_INTERVAL))
                if self.abandon.is_set():
                    raise ShutdownError(
                        f"resonate shut down while {parent.id!r} slept",
                        promise_id=parent.id,
                    )
            self.check_canceled(parent, context)
            promise = self.store.get(timer_id)  # a timer resolves at its timeout
        outcome(promise)

    def promise_step(
        self,
        parent: Call,
        promise_id: str,
        timeout: Optional[float],
        param: Any,
        tags: Optional[Dict[str, str]],
        context: Context,
    ) -> InvocationHandle[Any]:
        """A durable promise completed from outside; its handle waits for it.

        A cancel of ``parent`` ends the wait with PromiseCanceledError, within
        about a second; the promise itself stays as it is.
        """
        deadline = parent.timeout_ms
        if timeout is not None:
            deadline = self.now_ms() + int(timeout * 1000)
        data = EMPTY if param is None else encoding.encode_value(param, "param")
        all_tags = {**(tags or {}), PARENT_TAG: parent.id, ROOT_TAG: parent.root}
        promise = self._create_step(promise_id, deadline, data, all_tags)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if not promise.pending:
            settle(future, promise)
            return InvocationHandle(promise_id, future)

        def pending(_: DurablePromise) -> bool:
            try:
                self.check_canceled(parent, context)
            except PromiseCanceledError as error:
                settle_watched(future, error)
                return True  # nobody waits for it any more
            return False

        self.watcher.watch(
            promise_id, functools.partial(settle_watched, future), pending
        )
        return InvocationHandle(promise_id, future)

    def _create_step(
        self, promise_id: str, deadline: int, param: Value, tags: Dict[str, str]
    ) -> DurablePromise:
        try:
            return cast(
                DurablePromise,
                self.store.create(
                    promise_id,
                    deadline,
                    param=param,
                    tags=tags,
                    idempotency_key=promise_id,
                ).promise,
            )
        except PromiseAlreadyExistsError:
            return cast(DurablePromise, self.store.get(promise_id))

    def notify(self, promise: DurablePromise) -> None:
        """A promise was completed through this process: wake whoever waits on it."""
        if promise.state is State.REJECTED_CANCELED and promise.id in self._running:
            self._canceled.add(promise.id)
        self.watcher.notify(promise)


def canceled_error(call: Call, canceled_id: str) -> PromiseCanceledError:
    if canceled_id == call.id:
        message = f"invocation {call.id!r} was canceled"
    else:
        message = f"invocation {call.id!r} stopped: {canceled_id!r} was canceled"
    return PromiseCanceledError(message, promise_id=canceled_id)


def abandoned_wait(promise_id: str) -> ShutdownError:
    return ShutdownError(
        f"resonate shut down while waiting for promise {promise_id!r};"
        " it stays pending",
        promise_id=promise_id,
    )


def settle_watched(
    future: "concurrent.futures.Future[Any]",
    result: Union[DurablePromise, ResonateError],
) -> None:
    if isinstance(result, DurablePromise):
        settle(future, result)
    elif not future.done():
        future.set_exception(result)


def lineage(call: Call) -> Tuple[str, ...]:
    # A cancel of any of these stops ``call``; a grandparent's reaches it
    # through the parent, which marks itself canceled when it stops.
    ids = (call.id, call.tags.get(PARENT_TAG), call.root)
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def canceled_in(canceled: Set[str], call: Call) -> Optional[str]:
    return next((i for i in lineage(call) if i in canceled), None)
