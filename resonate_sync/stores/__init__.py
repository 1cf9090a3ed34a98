"""Promise stores: the embedded SQLite store and the Resonate server over HTTP."""

from .base import PromiseStore, Schedule, SchedulePage, SearchPage, Written
from .remote import RemoteStore
from .sqlite import SQLiteStore

__all__ = [
    "PromiseStore",
    "RemoteStore",
    "SQLiteStore",
    "Schedule",
    "SchedulePage",
    "SearchPage",
    "Written",
]
