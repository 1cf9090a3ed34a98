"""Registered functions: the names recovery and replay find them by."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, NamedTuple, Optional, Union

from .exceptions import InvalidRequestError, NotRegisteredError
from .options import Options

__all__ = ["Registered", "Registry", "function_name"]

_DEFAULTS = Options().resolved()


class Registered(NamedTuple):
    """A function under its name, with the options it runs with by default.

    ``defaults`` are resolved: every field is set.
    """

    name: str
    function: Callable[..., Any]
    defaults: Options


def function_name(function: Callable[..., Any]) -> str:
    """The name an unregistered child is stored under: its qualified name."""
    return getattr(function, "__qualname__", None) or repr(function)


class Registry:
    """Names to functions, and functions back to their registration. Thread-safe."""

    def __init__(self) -> None:
        self._by_name: Dict[str, Registered] = {}
        self._by_function: Dict[Any, Registered] = {}
        self._lock = threading.Lock()

    def add(
        self, function: Callable[..., Any], name: Optional[str], defaults: Options
    ) -> Registered:
        """Register ``function`` under ``name`` (its ``__name__`` by default).

        :raises InvalidRequestError: when the name is empty or already taken
            by another function.
        """
        if not callable(function):
            raise InvalidRequestError(f"cannot register {function!r}: not callable")
        name = name if name is not None else getattr(function, "__name__", None)
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(
                f"function name must be a non-empty string, not {name!r}"
            )

        entry = Registered(name, function, defaults.resolved())
        with self._lock:
            taken = self._by_name.get(name)
            if taken is not None and taken.function is not function:
                raise InvalidRequestError(
                    f"name {name!r} is already registered to {taken.function!r}"
                )
            self._by_name[name] = entry
            self._by_function[function] = entry
        return entry

    def find(self, name: str) -> Optional[Registered]:
        """The registration under ``name``, or None."""
        return self._by_name.get(name)

    def lookup(self, function_or_name: Union[str, Callable[..., Any]]) -> Registered:
        """The registration of a name or a registered function.

        :raises NotRegisteredError: naming what was looked up.
        """
        if isinstance(function_or_name, str):
            found = self._by_name.get(function_or_name)
        else:
            found = self._by_function.get(function_or_name)
        if found is None:
            shown = getattr(function_or_name, "__qualname__", function_or_name)
            raise NotRegisteredError(
                f"function {shown!r} is not registered; register it with "
                "@resonate.register first",
                name=str(shown),
            )
        return found

    def for_child(self, function_or_name: Union[str, Callable[..., Any]]) -> Registered:
        """A child's registration; an unregistered callable runs under its qualname.

        :raises NotRegisteredError: for a name that is not registered.
        """
        if not isinstance(function_or_name, str):
            found = self._by_function.get(function_or_name)
            if found is not None:
                return found
            if not callable(function_or_name):
                raise InvalidRequestError(f"{function_or_name!r} is not callable")
            return Registered(
                function_name(function_or_name), function_or_name, _DEFAULTS
            )
        return self.lookup(function_or_name)
