"""What a running function sees: its :class:`Context`.

A child call gets the id ``"<parent id>.<n>"``, where ``n`` counts the
parent's child calls from 1 in the order it makes them. Running the parent
again after a crash makes the same calls in the same order, so each child
finds its own promise: a completed child returns its stored outcome without
running again. That is why a function's child calls must not depend on
anything but its arguments and its children's results.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

from .options import Options

if TYPE_CHECKING:  # pragma: no cover
    from ._runtime import Call, Runtime
    from .handle import InvocationHandle

__all__ = ["Context"]


class Context:
    """The handle a registered function gets as its first argument.

    Not thread-safe: make child calls from the thread that runs the function,
    so their positions, and so their ids, stay deterministic.

    :ivar invocation_id: the id of this invocation's promise.
    :ivar root_id: the id of the top-level invocation this one belongs to.
    :ivar attempt: which attempt this is, from 1.
    """

    def __init__(self, runtime: "Runtime", call: "Call", attempt: int) -> None:
        self.invocation_id = call.id
        self.root_id = call.root
        self.attempt = attempt
        self.value: Any = None
        self.checked = time.monotonic()  # when cancels were last read
        self._runtime = runtime
        self._call = call
        self._position = 0
        self._children: List["InvocationHandle[Any]"] = []

    def invoke_local(
        self,
        function: Union[str, Callable[..., Any]],
        *args: Any,
        options: Optional[Options] = None,
        **kwargs: Any,
    ) -> "InvocationHandle[Any]":
        """Start a child invocation and return its handle at once.

        The child's promise is committed before this returns. ``function`` is
        a registered name or any callable taking a Context first. The child
        inherits no options, but never outlives this invocation's timeout.

        :returns: the child's handle; ``result()`` blocks until it ends.
        :raises EncodingError: when an argument is not JSON.
        :raises FunctionMismatchError: when a re-run calls another function
            at this position than the stored child promise names.
        """
        self._runtime.check_canceled(self._call, self)
        self._position += 1
        handle = self._runtime.invoke_child(
            self._call, self._position, function, args, kwargs, options
        )
        self._children.append(handle)
        return handle

    def run(
        self,
        function: Union[str, Callable[..., Any]],
        *args: Any,
        options: Optional[Options] = None,
        **kwargs: Any,
    ) -> Any:
        """Run a child invocation and return its value: ``invoke_local(...).result()``.

        Blocks until the child ends; raises what the child raised.
        """
        return self.invoke_local(function, *args, options=options, **kwargs).result()

    def sleep(self, seconds: float) -> None:
        """Sleep durably: a restart does not reset the deadline.

        Backed by a timer promise (a child position of its own) whose
        deadline is stored when it is first made. A re-run whose sleep has
        already ended continues at once. Blocks this thread until the
        deadline; a cancel of this invocation ends it within a second.
        :raises PromiseCanceledError: when this invocation is canceled.
        """
        self._runtime.check_canceled(self._call, self)
        self._position += 1
        self._runtime.sleep_step(self._call, self._position, seconds, self)
        self._runtime.check_canceled(self._call, self)

    def promise(
        self,
        id: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
        param: Any = None,
        tags: Optional[Dict[str, str]] = None,
    ) -> "InvocationHandle[Any]":
        """Make a durable promise for someone else to complete, and return its handle.

        Anyone may complete it, from any process or machine, with
        ``resonate.promises.resolve(id, value)``, ``reject`` or ``cancel``.
        ``handle.result()`` blocks until then: at once when it is completed
        through this process, within about a second otherwise (the store is
        polled, backing off to once a second; no busy loop). A cancel of this
        invocation ends the wait with PromiseCanceledError within a second.

        :param id: the promise id; by default ``"<invocation id>.<n>"``, a
            child position like any other, so a re-run finds the same promise.
        :param timeout: seconds until it times out; by default it shares this
            invocation's timeout.
        :param param: a JSON value stored with the promise (what to approve).
        """
        self._runtime.check_canceled(self._call, self)
        self._position += 1
        promise_id = id if id is not None else f"{self.invocation_id}.{self._position}"
        return self._runtime.promise_step(
            self._call, promise_id, timeout, param, tags, self
        )

    def detached(
        self,
        function: Union[str, Callable[..., Any]],
        invocation_id: str,
        *args: Any,
        options: Optional[Options] = None,
        **kwargs: Any,
    ) -> "InvocationHandle[Any]":
        """Start a new top-level invocation that this one does not wait for.

        Like ``resonate.invoke_local``: ``function`` must be registered, and
        the invocation is recovered on its own if its process dies. Its id is
        the caller's to make deterministic.
        """
        self._runtime.check_canceled(self._call, self)
        call = self._runtime.top_level_call(
            function, invocation_id, args, kwargs, options
        )
        return self._runtime.invoke(call)

    def join(self) -> List[BaseException]:
        """Wait for every child started so far and return the errors they ended with.

        The runtime calls this before completing the invocation, so a parent
        completes only after all its children have.
        """
        errors = (child.exception() for child in self._children)
        return [error for error in errors if error is not None]

    def __repr__(self) -> str:
        return f"<Context {self.invocation_id!r} attempt {self.attempt}>"
