"""Values and exceptions to and from a promise's ``{headers, data}``.

Data is base64 of UTF-8 JSON, as the Resonate server and its SDKs expect. JSON
is the contract: tuples come back as lists and dict keys as strings, and NaN
or infinity are refused because other SDKs cannot read them.

An exception is stored as ``{"__type": "error", "name", "message", ...}`` (the
shape the TypeScript SDK reads) plus the module, qualified name and arguments
Python needs to raise the same type again. Only classes whose module is
already imported are looked up: decoding never imports code.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import traceback
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, cast

from .exceptions import EncodingError, ResonateError
from .promise import Value

__all__ = [
    "InvocationError",
    "decode_error",
    "decode_json",
    "decode_value",
    "encode_error",
    "encode_invocation",
    "encode_json",
    "encode_value",
]

_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode


class InvocationError(ResonateError):
    """A rejection whose exception type this process cannot rebuild.

    :ivar name: the exception's type name as stored.
    :ivar value: the stored rejected value, decoded from JSON.
    """


def encode_json(obj: Any, what: str = "value") -> str:
    """Encode ``obj`` to base64 of UTF-8 JSON.

    :param what: names the value in the error, such as ``"argument 1 of 'work'"``.
    :raises EncodingError: when ``obj`` is not JSON (sets, objects, NaN, cycles).
    """
    # A lone surrogate passes the JSON encoder but not UTF-8: the encode is
    # inside the try so that it, too, is an EncodingError.
    try:
        raw = _dumps(obj).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as err:
        shown = repr(obj)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise EncodingError(
            f"{what} {shown} cannot be encoded as JSON: {err}", value=repr(obj)[:200]
        ) from err
    return base64.b64encode(raw).decode("ascii")


def decode_json(data: Optional[str], what: str = "value") -> Any:
    """Decode base64 of UTF-8 JSON; absent data is None.

    :raises EncodingError: when the data is not base64 of UTF-8 JSON.
    """
    if not data:
        return None
    try:
        return json.loads(base64.b64decode(data, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise EncodingError(f"{what} is not base64 of UTF-8 JSON: {err}") from err


def encode_value(obj: Any, what: str = "value") -> Value:
    """Encode a function's value or arguments as a promise value."""
    return Value(None, encode_json(obj, what))


def decode_value(value: Value, what: str = "value") -> Any:
    """Decode a promise value made by :func:`encode_value` (empty is None)."""
    return decode_json(value.data, what)


def encode_invocation(
    function: str,
    args: Sequence[Any],
    kwargs: Optional[Mapping[str, Any]],
    retry_policy: Optional[Mapping[str, Any]],
) -> Value:
    """The param of an invocation's promise: ``{func, args, kwargs, version,
    retryPolicy}``, the shape the runtime and schedules write and recovery reads.

    :param retry_policy: the policy's JSON, or None for the registered one.
    :raises EncodingError: when an argument is not JSON.
    """
    body = {
        "func": function,
        "args": list(args),
        "kwargs": dict(kwargs or {}),
        "version": 1,
        "retryPolicy": retry_policy,
    }
    return encode_value(body, f"arguments of {function!r}")


def encode_error(error: BaseException) -> Value:
    """Encode an exception so that :func:`decode_error` raises the same type again."""
    cls = type(error)
    body: Dict[str, Any] = {
        "__type": "error",
        "name": cls.__name__,
        "message": str(error),
        "module": cls.__module__,
        "qualname": cls.__qualname__,
        "stack": "".join(traceback.format_exception(error))[-4000:],
    }
    if isinstance(error, ResonateError):
        body["code"] = error.code
        body["fields"] = _jsonable(error.fields)
    else:
        body["args"] = _jsonable(list(error.args))
    return Value(None, encode_json(body))


def _jsonable(obj: Any) -> Any:
    # Arguments that are not JSON are kept as their repr: the type and
    # message still come back, which is what callers branch on.
    try:
        _dumps(obj)
        return obj
    except (TypeError, ValueError, RecursionError):
        if isinstance(obj, dict):
            return {str(key): _jsonable(item) for key, item in obj.items()}
        if isinstance(obj, list):
            return [_jsonable(item) for item in obj]
        return repr(obj)


def decode_error(value: Value) -> BaseException:
    """Rebuild the exception a rejected promise stores.

    A type that cannot be found among imported modules, or a value that is not
    an encoded exception (another SDK's rejection), becomes
    :class:`InvocationError` carrying the stored name and message.
    """
    body = decode_value(value, "rejected value")
    if not isinstance(body, dict) or body.get("__type") != "error":
        return InvocationError(f"rejected with {body!r}", name=None, value=body)

    cls = _find_class(body.get("module"), body.get("qualname"))
    error = _instantiate(cls, body) if cls is not None else None
    if error is None:
        name, message = body.get("name"), body.get("message")
        error = InvocationError(f"{name}: {message}", name=name, value=body)
    return error


def _find_class(module: Any, qualname: Any) -> Optional[Type[Exception]]:
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    # Only Exception subclasses: a stored SystemExit or KeyboardInterrupt,
    # raised again by a waiter, would stop the reading process.
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def _instantiate(
    cls: Type[BaseException], body: Dict[str, Any]
) -> Optional[BaseException]:
    if issubclass(cls, ResonateError):
        fields = cast(
            Dict[str, Any],
            body.get("fields") if isinstance(body.get("fields"), dict) else {},
        )
        rebuilt = cls.__new__(cls)
        ResonateError.__init__(
            rebuilt, str(body.get("message")), code=body.get("code"), **fields
        )
        return rebuilt

    message = body.get("message")
    args = body.get("args")
    args = args if isinstance(args, list) else [message]

    # The stored arguments are what the exception kept in ``args``, which is
    # not always what its constructor takes: ``Wrapping(7)`` may keep
    # "order 7 failed", and OSError keeps no filename there. So a build whose
    # message differs gives way to one that bypasses the constructor.
    first: Optional[BaseException] = None
    for build_args, bypass in ((args, False), (args, True), ([message], True)):
        error = _build(cls, build_args, bypass)
        if error is not None and _message_of(error) == message:
            return error
        first = first if first is not None else error
    return first


def _build(
    cls: Type[BaseException], args: List[Any], bypass: bool
) -> Optional[BaseException]:
    try:
        if not bypass:
            built: BaseException = cls(*args)
            return built
        error: BaseException = cls.__new__(cls)
        BaseException.__init__(error, *args)
        return error
    except Exception:
        return None


def _message_of(error: BaseException) -> Optional[str]:
    try:
        return str(error)
    except Exception:
        return None
