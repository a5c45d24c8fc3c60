"""The ZooKeeper session's health, and blocking calls that ride out a suspension.

A connection drop makes the session SUSPENDED; it is still alive on the
server for its timeout, and kazoo reconnects to it on its own. A blocking
call (register a name, join a group, set config) made in that window used
to raise ``CoordUnavailable`` at once, so a service's ``on_start`` failed and
the node exited under load (issue 15). Now such a call waits for the
session to come back, for at most ``wait`` seconds (the session timeout:
after it the server has expired the session anyway), then runs; a call that
failed because the connection dropped under it is run again the same way.
LOST (the session expired; every ephemeral entry is gone) still fails at
once, as does a wait that runs out. Every retried operation is idempotent
(creating an entry that exists with our value is success).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from kazoo.exceptions import ConnectionLoss, OperationTimeoutError
from kazoo.handlers.threading import KazooTimeoutError

from coord._runtime import log
from coord.api import Health
from coord.errors import CoordUnavailable

__all__ = ["SessionGate"]

T = TypeVar("T")

# Errors meaning "the connection dropped under this call", not "the session is gone".
_TRANSIENT = (ConnectionLoss, OperationTimeoutError, KazooTimeoutError)


class SessionGate:
    """The session's :class:`Health`, and :meth:`run` for calls that wait through SUSPENDED."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._cond = threading.Condition()
        self._health = Health.LOST
        self._warned = False  # one warning per suspension, however many calls wait

    @property
    def health(self) -> Health:
        """Current health (a plain read: safe from any thread)."""
        return self._health

    def set(self, health: Health) -> None:
        """Record ``health`` and wake waiting calls (any thread; never blocks for long)."""
        with self._cond:
            self._health = health
            if health is not Health.SUSPENDED:
                self._warned = False
            self._cond.notify_all()

    def require(self, what: str, deadline: float) -> None:
        """Return once CONNECTED; wait while SUSPENDED until ``deadline``.

        Raises ``CoordUnavailable`` when the session is LOST, or still
        SUSPENDED at ``deadline``.
        """
        with self._cond:
            while self._health is Health.SUSPENDED:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("coord: %s gave up: ZooKeeper session suspended", what)
                    raise CoordUnavailable(
                        f"{what}: ZooKeeper session still suspended after {self.wait:.1f}s"
                    )
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "coord: ZooKeeper session suspended; %s waits up to %.1fs for it",
                        what,
                        left,
                    )
                self._cond.wait(left)
            if self._health is not Health.CONNECTED:
                raise CoordUnavailable(f"{what}: ZooKeeper session is {self._health.value}")

    def run(self, what: str, op: Callable[[Callable[[], None]], T]) -> T:
        """Run ``op(check)``, where ``check()`` is :meth:`require` with one deadline.

        ``op`` calls ``check`` right before it touches ZooKeeper (after any
        local bookkeeping that must happen even if the call fails). If ``op``
        raises ``CoordUnavailable`` caused by a dropped connection, it runs
        again (waiting for the session) until the deadline.
        """
        deadline = time.monotonic() + self.wait

        def check() -> None:
            self.require(what, deadline)

        while True:
            try:
                return op(check)
            except CoordUnavailable as exc:
                if not isinstance(exc.__cause__, _TRANSIENT) or time.monotonic() >= deadline:
                    raise
                log.debug("coord: %s: connection dropped (%r); trying again", what, exc)
                # kazoo reports SUSPENDED on its own thread a moment after the drop:
                # give it that moment so check() waits instead of spinning.
                with self._cond:
                    self._cond.wait_for(
                        lambda: self._health is not Health.CONNECTED,
                        min(0.5, max(0.0, deadline - time.monotonic())),
                    )
