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
    ShutdownError,
    StoreError,
)
from .context import Context
from .handle import InvocationHandle
from .options import Options
from .promise import DurablePromise, State, Value
from .resonate import Resonate
from .retry import Constant, Exponential, Linear, Never
from .stores import RemoteStore, SQLiteStore

__all__ = [
    "Constant",
    "Context",
    "DurablePromise",
    "EncodingError",
    "Exponential",
    "FunctionMismatchError",
    "InvalidRequestError",
    "InvocationHandle",
    "Linear",
    "Never",
    "NotRegisteredError",
    "Options",
    "PromiseAlreadyCompletedError",
    "PromiseAlreadyExistsError",
    "PromiseCanceledError",
    "PromiseNotFoundError",
    "PromiseTimedOutError",
    "RemoteStore",
    "Resonate",
    "ResonateError",
    "SQLiteStore",
    "ShutdownError",
    "State",
    "StoreError",
    "Value",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
