"""Values and exceptions to and from a promise's ``{headers, data}``."""

from __future__ import annotations

import base64
import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resonate_sync.encoding import (
    InvocationError,
    decode_error,
    decode_json,
    decode_value,
    encode_error,
    encode_json,
    encode_value,
)
from resonate_sync.exceptions import (
    EncodingError,
    PromiseNotFoundError,
    ResonateError,
)
from resonate_sync.promise import EMPTY, Value

# Strings without lone surrogates: those are not text, and UTF-8 refuses them.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)))
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=25,
)


def raw(data: str) -> str:
    """The JSON text inside base64 data."""
    return base64.b64decode(data).decode("utf-8")


# -- JSON values ------------------------------------------------------------


@given(JSON_VALUES)
def test_json_values_round_trip(value):
    assert decode_json(encode_json(value)) == value


@given(JSON_VALUES)
def test_values_round_trip_through_a_promise_value(value):
    stored = encode_value(value)
    assert isinstance(stored, Value) and stored.headers is None
    assert decode_value(stored) == value


def test_encoded_data_is_standard_base64_of_compact_utf8_json():
    data = encode_json({"name": "café 日本 🎉", "n": [1, 2]})

    assert raw(data) == '{"name":"café 日本 🎉","n":[1,2]}'


def test_big_integers_keep_every_digit():
    big = 2**200 + 1
    assert decode_json(encode_json([big, -big])) == [big, -big]


def test_tuples_come_back_as_lists_and_keys_as_strings():
    assert decode_json(encode_json({1: (1, 2)})) == {"1": [1, 2]}


@pytest.mark.parametrize("data", [None, ""])
def test_absent_data_decodes_to_none(data):
    assert decode_json(data) is None
    assert decode_value(EMPTY) is None


class Opaque:
    def __repr__(self) -> str:
        return "<opaque thing>"


def cycle():
    items: list = []
    items.append(items)
    return items


@pytest.mark.parametrize(
    "bad, shown",
    [
        ({1, 2}, "{1, 2}"),
        (Opaque(), "<opaque thing>"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        ([1, {"deep": float("-inf")}], "-inf"),
        (b"bytes", "b'bytes'"),
        (cycle(), "[[...]]"),
    ],
)
def test_non_json_is_refused_with_an_encoding_error_naming_the_value(bad, shown):
    with pytest.raises(EncodingError) as caught:
        encode_json(bad, "argument 1 of 'work'")

    assert "argument 1 of 'work'" in str(caught.value)
    assert shown in str(caught.value)
    assert shown in caught.value.value
    assert isinstance(caught.value, TypeError)


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff", {"k": "\udc80"}])
def test_lone_surrogates_are_refused_with_an_encoding_error(text):
    with pytest.raises(EncodingError):
        encode_json(text)


def test_an_oversized_repr_is_shortened_in_the_error():
    with pytest.raises(EncodingError) as caught:
        encode_json([set()] * 10_000)
    assert len(str(caught.value)) < 1_000
    assert len(caught.value.value) <= 200


@pytest.mark.parametrize(
    "data",
    [
        "not base64!",
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(b"{not json").decode(),
        "YQ",  # missing padding
    ],
)
def test_data_that_is_not_base64_utf8_json_raises_encoding_error(data):
    with pytest.raises(EncodingError, match="is not base64 of UTF-8 JSON"):
        decode_json(data, "value of 'p'")


# -- exceptions -------------------------------------------------------------


class CustomError(Exception):
    pass


class TwoArguments(Exception):
    def __init__(self, order: str, amount: int) -> None:
        super().__init__(order, amount)
        self.order, self.amount = order, amount


class Wrapping(Exception):
    """Its constructor builds the message from the argument."""

    def __init__(self, order_id: int) -> None:
        super().__init__(f"order {order_id} failed")


class KeywordOnly(Exception):
    def __init__(self, *, reason: str) -> None:
        super().__init__(reason)


class NoArguments(Exception):
    def __init__(self) -> None:
        super().__init__("always the same")


class Refusing(Exception):
    """A constructor that raises for anything but its first use."""

    made = False

    def __init__(self, message: str) -> None:
        if Refusing.made:
            raise RuntimeError("built twice")
        Refusing.made = True
        super().__init__(message)


class Outer:
    class Inner(ValueError):
        pass


class OrderError(ResonateError, LookupError):
    default_code = 49999


def round_trip(error: BaseException) -> BaseException:
    return decode_error(encode_error(error))


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad value"),
        KeyError("missing"),
        TypeError("wrong", 2),
        RuntimeError(),
        ZeroDivisionError("division by zero"),
        TimeoutError("slow"),
        FileNotFoundError(2, "No such file or directory"),
        FileNotFoundError(2, "No such file or directory", "orders.csv"),
        PermissionError(13, "Permission denied", "/etc/x"),
        NotImplementedError("later"),
        StopIteration(5),
    ],
    ids=repr,
)
def test_builtin_exceptions_come_back_with_the_same_type_and_message(error):
    rebuilt = round_trip(error)

    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CustomError("custom"),
        lambda: TwoArguments("o-1", 30),
        lambda: Wrapping(7),
        lambda: KeywordOnly(reason="no stock"),
        lambda: NoArguments(),
        lambda: Outer.Inner("nested class"),
        lambda: Refusing("only once"),
    ],
)
def test_custom_exceptions_come_back_with_the_same_type_and_message(make):
    error = make()
    rebuilt = round_trip(error)

    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)
    assert isinstance(rebuilt, BaseException)


def test_exception_arguments_that_are_json_come_back():
    rebuilt = round_trip(TwoArguments("o-1", 30))
    assert rebuilt.args == ("o-1", 30)
    assert (rebuilt.order, rebuilt.amount) == ("o-1", 30)


def test_non_json_exception_arguments_keep_type_and_message():
    error = CustomError({1, 2})
    rebuilt = round_trip(error)

    assert type(rebuilt) is CustomError
    assert str(rebuilt) == str(error)


def test_resonate_errors_come_back_with_code_and_fields():
    error = OrderError("order 'o-9' not found", order_id="o-9", items=["a", 2])
    rebuilt = round_trip(error)

    assert type(rebuilt) is OrderError
    assert str(rebuilt) == "order 'o-9' not found"
    assert rebuilt.code == 49999
    assert rebuilt.order_id == "o-9" and rebuilt.items == ["a", 2]
    assert isinstance(rebuilt, LookupError)


def test_library_errors_come_back_with_their_fields():
    rebuilt = round_trip(PromiseNotFoundError("promise 'x' not found", promise_id="x"))

    assert type(rebuilt) is PromiseNotFoundError
    assert rebuilt.promise_id == "x" and rebuilt.code == 40400


def test_resonate_error_fields_that_are_not_json_come_back_as_their_repr():
    rebuilt = round_trip(OrderError("odd", seen={3}))
    assert rebuilt.seen == "{3}"


def test_the_stored_shape_is_readable_by_other_sdks():
    body = json.loads(raw(encode_error(ValueError("bad")).data))

    assert body["__type"] == "error"
    assert body["name"] == "ValueError"
    assert body["message"] == "bad"
    assert isinstance(body["stack"], str)


def test_a_class_defined_inside_a_function_becomes_an_invocation_error():
    class Local(Exception):
        pass

    rebuilt = round_trip(Local("from a closure"))

    assert type(rebuilt) is InvocationError
    assert rebuilt.name == "Local"
    assert "from a closure" in str(rebuilt)


def test_another_sdks_error_becomes_an_invocation_error_with_name_and_message():
    body = {"__type": "error", "name": "TypeError", "message": "x is undefined"}
    rebuilt = decode_error(Value(None, encode_json(body)))

    assert type(rebuilt) is InvocationError
    assert rebuilt.name == "TypeError"
    assert str(rebuilt) == "TypeError: x is undefined"
    assert rebuilt.value == body


@pytest.mark.parametrize("stored", ["just a string", 42, None, {"__type": "x"}])
def test_a_rejection_that_is_not_an_encoded_error_becomes_invocation_error(stored):
    rebuilt = decode_error(encode_value(stored))

    assert type(rebuilt) is InvocationError
    assert rebuilt.name is None and rebuilt.value == stored


@pytest.mark.parametrize(
    "module, qualname",
    [
        ("builtins", "len"),  # not a class
        ("builtins", "dict"),  # not an exception
        ("test_encoding", "Opaque"),
        ("test_encoding", "no.such.Name"),
        (7, "ValueError"),
        ("builtins", None),
    ],
)
def test_a_name_that_is_no_exception_class_becomes_invocation_error(module, qualname):
    body = {
        "__type": "error",
        "name": "X",
        "message": "m",
        "module": module,
        "qualname": qualname,
    }
    assert type(decode_error(Value(None, encode_json(body)))) is InvocationError


def test_decoding_never_imports_a_module(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "resonate_probe_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "class Boom(Exception):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    body = {
        "__type": "error",
        "name": "Boom",
        "message": "from elsewhere",
        "module": "resonate_probe_module",
        "qualname": "Boom",
        "args": ["from elsewhere"],
    }

    rebuilt = decode_error(Value(None, encode_json(body)))

    assert type(rebuilt) is InvocationError
    assert "resonate_probe_module" not in sys.modules
    assert not marker.exists()


def test_a_stdlib_exception_with_a_three_argument_constructor_round_trips():
    try:
        json.loads("{oops")
    except json.JSONDecodeError as err:
        error = err
    rebuilt = round_trip(error)

    assert type(rebuilt) is json.JSONDecodeError
    assert str(rebuilt) == str(error)


@settings(max_examples=50)
@given(TEXT)
def test_any_message_round_trips_for_a_custom_exception(message):
    rebuilt = round_trip(CustomError(message))
    assert type(rebuilt) is CustomError and str(rebuilt) == message
