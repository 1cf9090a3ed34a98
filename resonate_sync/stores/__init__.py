"""Promise stores: the embedded SQLite store and the Resonate server over HTTP."""

from .base import PromiseStore, SearchPage, Written
from .sqlite import SQLiteStore

__all__ = ["PromiseStore", "SQLiteStore", "SearchPage", "Written"]
