"""Leases: each pending top-level invocation runs in one process at a time.

A process that starts an invocation tags its promise with its own process id
(:data:`OWNER_TAG`) and holds one lock, ``resonate:process:<process id>``,
renewed by a heartbeat. That costs nothing per invocation. Another process
that finds the promise pending runs it only when the owner is gone (its
process lock expired, or on the same host, its pid is dead) and it wins the
lock on the promise id itself, so two recoverers cannot both take over.

Both stores speak the Resonate server's lock calls (acquire, release,
heartbeat), so the same rules hold on SQLite and on a server. A process
paused past the ttl loses its leases and may see its work taken over: the
usual price of leases, logged when it is noticed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any, Callable, Optional

from .exceptions import LockHeldError, LockNotFoundError, ResonateError

__all__ = ["Leases", "OWNER_TAG"]

logger = logging.getLogger(__name__)

#: Tag naming the process that started (and runs) an invocation.
OWNER_TAG = "resonate-sync:owner"

_PROCESS_LOCK = "resonate:process:"


def _new_process_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


class Leases:
    """This process's identity, its heartbeat, and takeovers of others' work.

    :param store: a store with ``acquire_lock``, ``release_lock`` and ``heartbeat``.
    :param ttl: seconds a lease lasts without a heartbeat.
    :param stopping: set when the runtime shuts down; stops the heartbeat.
    :param wait: waits up to the given seconds, returning early on shutdown.
    """

    def __init__(
        self,
        store: Any,
        ttl: float,
        stopping: threading.Event,
        wait: Optional[Callable[[float], Any]] = None,
    ) -> None:
        self._store = store
        self._ttl_ms = max(1, int(ttl * 1000))
        self._stopping = stopping
        self._wait = wait or stopping.wait
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self.process_id = _new_process_id()
        self._lock = threading.Lock()
        self._held = False
        self._heart: Optional[threading.Thread] = None

    def ensure(self) -> str:
        """Hold this process's lock (once) and keep it alive; return the process id.

        Blocks on the store the first time only. Thread-safe.
        """
        if self._pid != os.getpid():
            self._reset()  # a forked child is a process of its own
        if self._held:
            return self.process_id
        with self._lock:
            if not self._held:
                self._acquire_process_lock()
                self._held = True
                self._start_heartbeat()
        return self.process_id

    def _acquire_process_lock(self) -> None:
        self._store.acquire_lock(
            _PROCESS_LOCK + self.process_id,
            self.process_id,
            self.process_id,
            self._ttl_ms,
        )

    def _start_heartbeat(self) -> None:
        self._heart = threading.Thread(
            target=self._beat, name="resonate-heartbeat", daemon=True
        )
        self._heart.start()

    def _beat(self) -> None:
        pid = os.getpid()
        while not self._stopping.is_set() and pid == os.getpid():
            self._wait(self._ttl_ms / 3000)
            if self._stopping.is_set():
                return
            try:
                if self._store.heartbeat(self.process_id) == 0:
                    logger.warning(
                        "leases of %s had expired; renewing", self.process_id
                    )
                    self._acquire_process_lock()
            except ResonateError as err:
                logger.warning("heartbeat of %s failed: %s", self.process_id, err)

    def owner_alive(self, owner: Optional[str]) -> bool:
        """True while the process ``owner`` may still be running its work.

        Blocks on the store unless the answer is known locally.
        """
        if owner is None:
            return False
        if owner == self.process_id:
            return True
        local = _local_pid_alive(owner)
        if local is not None:
            return local
        return self._probe(owner)

    def _probe(self, owner: str) -> bool:
        resource = _PROCESS_LOCK + owner
        probe = f"probe:{self.process_id}"
        try:
            self._store.acquire_lock(resource, probe, self.process_id, 1)
        except LockHeldError:
            return True
        self._release(resource, probe)
        return False

    def take(self, promise_id: str) -> bool:
        """Take the lease of an invocation whose owner is gone; False if another did.

        The lease lasts while this process heartbeats. Blocks on the store.
        """
        self.ensure()
        try:
            self._store.acquire_lock(
                promise_id, self.process_id, self.process_id, self._ttl_ms
            )
        except LockHeldError:
            return False
        logger.info("took over invocation %r", promise_id)
        return True

    def release(self, promise_id: str) -> None:
        """Give back a lease taken with :meth:`take`. Never raises."""
        self._release(promise_id, self.process_id)

    def close(self) -> None:
        """Give back this process's lock, so that others may take over at once."""
        if self._held and self._pid == os.getpid():
            self._release(_PROCESS_LOCK + self.process_id, self.process_id)
            self._held = False

    def _release(self, resource: str, execution: str) -> None:
        try:
            self._store.release_lock(resource, execution)
        except LockNotFoundError:
            pass
        except ResonateError as err:
            logger.warning("releasing lock %r failed: %s", resource, err)


def _local_pid_alive(owner: str) -> Optional[bool]:
    # Same host: a dead pid is known at once, without waiting for its lease
    # to expire. A live pid may be a reuse, so only the lock can say more.
    host, _, rest = owner.partition("/")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return None
