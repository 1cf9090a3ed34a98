"""What a running function sees: its :class:`Context`.

A child call gets the id ``"<parent id>.<n>"``, where ``n`` counts the
parent's child calls from 1 in the order it makes them. Running the parent
again after a crash makes the same calls in the same order, so each child
finds its own promise: a completed child returns its stored outcome without
running again. That is why a function's child calls must not depend on
anything but its arguments and its children's results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Optional, Union

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

    def join(self) -> List[BaseException]:
        """Wait for every child started so far and return the errors they ended with.

        The runtime calls this before completing the invocation, so a parent
        completes only after all its children have.
        """
        errors = (child.exception() for child in self._children)
        return [error for error in errors if error is not None]

    def __repr__(self) -> str:
        return f"<Context {self.invocation_id!r} attempt {self.attempt}>"
