"""Durable promises for plain, synchronous, thread-based Python."""

import logging

from .exceptions import (
    EncodingError,
    FunctionMismatchError,
    InvalidRequestError,
    NotRegisteredError,
    PromiseAlreadyCompletedError,
    PromiseAlreadyExistsError,
    PromiseCanceledError,
    PromiseNotFoundError,
    PromiseTimedOutError,
    ResonateError,
    StoreError,
)
from .promise import DurablePromise, State, Value
from .retry import Constant, Exponential, Linear, Never
from .stores import SQLiteStore

__all__ = [
    "Constant",
    "DurablePromise",
    "EncodingError",
    "Exponential",
    "FunctionMismatchError",
    "InvalidRequestError",
    "Linear",
    "Never",
    "NotRegisteredError",
    "PromiseAlreadyCompletedError",
    "PromiseAlreadyExistsError",
    "PromiseCanceledError",
    "PromiseNotFoundError",
    "PromiseTimedOutError",
    "ResonateError",
    "SQLiteStore",
    "State",
    "StoreError",
    "Value",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
