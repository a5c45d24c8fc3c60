"""``critical()``: a FIFO lock among one service's coroutines (skynet's ``skynet.queue``).

Only the coroutines of one service contend, and they all run on the
service's worker, so the state needs no thread lock: a waiter suspends on a
session and the releasing coroutine hands ownership over with a REPLY on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.suspend import suspend
from .message import REPLY

if TYPE_CHECKING:
    from types import TracebackType

    from ._router import Router
    from .core.servicecore import ServiceCore

__all__ = ["Critical"]


class _CritState:
    """Who holds a service's critical section, how deeply, and who waits (FIFO)."""

    __slots__ = ("depth", "owner", "waiters")

    def __init__(self) -> None:
        self.owner: Any = None
        self.depth = 0
        self.waiters: list[tuple[int, Any]] = []


class Critical:
    """FIFO lock among one service's coroutines; re-entrant for the coroutine holding it."""

    __slots__ = ("router", "svc")

    def __init__(self, svc: ServiceCore, router: Router) -> None:
        self.svc = svc
        self.router = router

    async def __aenter__(self) -> None:
        svc = self.svc
        me = svc._current
        if me is None:
            raise RuntimeError("critical() is for async handlers")
        crit = svc._crit
        if crit is None:
            crit = svc._crit = _CritState()
        if crit.owner is None or crit.owner is me:
            crit.owner = me
            crit.depth += 1
            return
        # Ownership is handed to us by __aexit__, with a REPLY on our session.
        await suspend(svc, lambda s: crit.waiters.append((s, me)))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        svc = self.svc
        crit = svc._crit
        crit.depth -= 1
        if crit.depth:
            return
        if crit.waiters:
            s, task = crit.waiters.pop(0)
            crit.owner = task
            crit.depth = 1
            self.router.reply(svc.handle, svc.handle, s, REPLY, None)
        else:
            crit.owner = None
