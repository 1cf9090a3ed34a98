"""What a caller holds: the handle of an invocation.

When :meth:`Resonate.invoke_local` returns a handle, the durable promise is
committed and the function is submitted to the executor. The handle wraps a
``concurrent.futures.Future`` that settles with the function's outcome as the
store recorded it.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable, Generic, Optional, TypeVar

__all__ = ["InvocationHandle", "Task"]

T = TypeVar("T")


class Task:
    """Work that runs once: on an executor thread, or inline in a waiting one.

    Whoever claims it first runs it. A thread that blocks on a handle whose
    task nobody has claimed yet runs the task itself, so a parent waiting on a
    child can never starve a bounded pool: every wait is either on work that
    is running or on work the waiter does.
    """

    __slots__ = ("_function", "_claim")

    def __init__(self, function: Callable[[], None]) -> None:
        self._function = function
        self._claim = threading.Lock()

    def __call__(self) -> None:
        """Run the work unless another thread has claimed it."""
        if self._claim.acquire(blocking=False):
            self._function()

    @property
    def claimed(self) -> bool:
        """True once some thread has started (or finished) the work."""
        return self._claim.locked()


class InvocationHandle(Generic[T]):
    """The handle of one invocation: its id and the future of its outcome.

    Thread-safe: any number of threads may wait on one handle.

    :ivar invocation_id: the id of the invocation's durable promise.
    """

    __slots__ = ("invocation_id", "_future", "_task")

    def __init__(
        self,
        invocation_id: str,
        future: "concurrent.futures.Future[T]",
        task: Optional[Task] = None,
    ) -> None:
        self.invocation_id = invocation_id
        self._future = future
        self._task = task

    @property
    def future(self) -> "concurrent.futures.Future[T]":
        """The ``concurrent.futures.Future`` behind this handle."""
        return self._future

    def result(self, timeout: Optional[float] = None) -> T:
        """Block until the invocation ends and return its value.

        With no timeout, a wait on an invocation that no thread has started
        yet runs it in the calling thread instead of waiting for a worker.

        :param timeout: seconds to wait at most; None waits as long as it takes.
        :returns: the value the function returned, as stored (JSON).
        :raises TimeoutError: when ``timeout`` passes first.
        :raises PromiseCanceledError: when the promise was canceled.
        :raises PromiseTimedOutError: when the promise timed out.
        :raises Exception: the function's own exception, rebuilt from the store.
        """
        self._run_unclaimed(timeout)
        return self._future.result(timeout)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """Block like :meth:`result`, and return the error instead of raising it."""
        self._run_unclaimed(timeout)
        return self._future.exception(timeout)

    def done(self) -> bool:
        """True when the invocation has ended. Never blocks."""
        return self._future.done()

    def add_done_callback(
        self, callback: Callable[["InvocationHandle[T]"], Any]
    ) -> None:
        """Call ``callback(handle)`` when the invocation ends (at once if it has)."""
        self._future.add_done_callback(lambda _: callback(self))

    def _run_unclaimed(self, timeout: Optional[float]) -> None:
        task = self._task
        if timeout is None and task is not None and not self._future.done():
            task()
        if self._future.done():
            self._task = None  # let the finished work be collected

    def __repr__(self) -> str:
        state = "done" if self._future.done() else "running"
        return f"<InvocationHandle {self.invocation_id!r} {state}>"
