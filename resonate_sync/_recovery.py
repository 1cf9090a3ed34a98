"""Recovery: pending top-level invocations found in the store run again here.

Mixed into :class:`~resonate_sync._runtime.Runtime`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from . import encoding
from ._tags import INVOCATION_TAG, ROOT_TAG
from .exceptions import ResonateError
from .options import Options
from .promise import DurablePromise
from .retry import policy_from_json

if TYPE_CHECKING:  # pragma: no cover
    from ._runtime import Call, _Entry
    from .handle import InvocationHandle

__all__ = ["RecoveryMixin"]

logger = logging.getLogger(__name__)


class RecoveryMixin:
    """``recover()``: search, reserve, check ownership, submit."""

    store: Any
    registry: Any
    stopping: Any
    _reserve: Callable[[str, str], Tuple[_Entry, bool]]
    _may_run: Callable[[DurablePromise, _Entry], bool]
    _release: Callable[[str, _Entry], None]
    _submit: Callable[[Call, Optional[_Entry]], InvocationHandle[Any]]

    def recover(self) -> int:
        """Run every pending top-level invocation whose function is registered here.

        Blocks while it searches the store; the invocations run on the pool.
        :returns: how many invocations were started.
        """
        started, cursor = 0, None
        while True:
            page = (
                self.store.search(
                    "*", state="pending", tags={INVOCATION_TAG: "true"}, cursor=cursor
                )
                if cursor is None
                else self.store.search(cursor=cursor)
            )
            started += sum(self._recover_one(promise) for promise in page.promises)
            if page.cursor is None:
                return started
            cursor = page.cursor

    def _recover_one(self, promise: DurablePromise) -> int:
        call = self._stored_call(promise)
        if call is None or self.stopping.is_set():
            return 0
        entry, mine = self._reserve(promise.id, call.registered.name)
        if not mine:
            return 0
        try:
            # The search may predate an invocation that has ended here since;
            # read again now that no other run of this id can start here.
            fresh = self.store.get(promise.id)
            if not fresh.pending or not self._may_run(fresh, entry):
                self._release(promise.id, entry)
                return 0
            self._submit(call, entry)
        except BaseException:
            self._release(promise.id, entry)
            raise
        finally:
            entry.lock.release()
        logger.debug("recovering invocation %r", promise.id)
        return 1

    def _stored_call(self, promise: DurablePromise) -> Optional[Call]:
        try:
            body = encoding.decode_value(promise.param, f"param of {promise.id!r}")
            registered = self.registry.find(body["func"])
            if registered is None:
                return None
            options = registered.defaults
            policy = body.get("retryPolicy")
            if policy:
                options = options.merged(Options(retry_policy=policy_from_json(policy)))
            from ._runtime import Call  # the runtime imports this module

            return Call(
                promise.id,
                registered,
                tuple(body.get("args") or ()),
                dict(body.get("kwargs") or {}),
                options,
                promise.timeout,
                dict(promise.tags),
                promise.tags.get(ROOT_TAG, promise.id),
            )
        except (ResonateError, KeyError, TypeError, AttributeError) as err:
            logger.warning("cannot recover promise %r: %s", promise.id, err)
            return None
