"""Parallel calls: ``gather`` and ``select`` (skynet's ``skynet.request():select()``).

All the calls are sent at once, each on its own session; their replies go
to a sink (``ServiceCore._sink``) instead of a suspended coroutine, and the
one coroutine that iterates waits on a session of its own, woken by the
first reply that finds it waiting. Leaving the loop early (``break``, an
exception, the service ending) withdraws what is still pending: those
sessions are forgotten, so late replies are dropped and counted
(``late-reply``), never delivered elsewhere.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from .address import node_of
from .core.faults import exception_from
from .core.suspend import suspend
from .errors import CallTimeout
from .message import CALL, REPLY

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._harbor_link import HarborLink
    from ._router import Router
    from .core.servicecore import ServiceCore

__all__ = ["Select"]

Call = tuple[Any, ...]  # (dest, method, *args)


class Select:
    """``async for index, result in Select(...)``: replies in arrival order."""

    def __init__(
        self, svc: ServiceCore, router: Router, harbor: HarborLink, calls: Sequence[Call],
        timeout: float | None,
    ) -> None:
        self._svc = svc
        self._router = router
        self._harbor = harbor
        self._pending: dict[int, tuple[int, Any]] = {}  # session -> (index, dest)
        self._ready: deque[tuple[int, Any]] = deque()
        self._waiting = 0  # the iterating coroutine's session while it is suspended
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.size = len(calls)
        # The sinks hold this object weakly: a loop left early drops it at once (in the
        # coroutine's own frame, on the service's worker) and __del__ withdraws.
        ref = weakref.ref(self)
        count_drop = router.count_drop

        def sink(session: int, kind: int, payload: Any) -> None:
            select = ref()
            if select is None:
                count_drop("late-reply")
            else:
                select._arrived(session, kind, payload)

        for index, call in enumerate(calls):
            if not isinstance(call, tuple) or len(call) < 2:
                self._ready.append((index, TypeError(f"a call is (dest, method, *args): {call!r}")))
                continue
            dest, method, *args = call
            s = svc._new_session()
            try:
                router.deliver(svc.handle, dest, s, CALL, (method, tuple(args)))
            except Exception as exc:  # ServiceNotFound, NodeDown, a payload that cannot go
                self._ready.append((index, exc))
                continue
            self._pending[s] = (index, dest)
            svc._sink(s, sink)

    def _arrived(self, session: int, kind: int, payload: Any) -> None:
        index, _ = self._pending.pop(session)
        self._ready.append((index, payload if kind == REPLY else exception_from(payload)))
        if self._waiting:
            s, self._waiting = self._waiting, 0
            self._router.reply(self._svc.handle, self._svc.handle, s, REPLY, None)

    def __aiter__(self) -> Select:
        return self

    async def __anext__(self) -> tuple[int, Any]:
        if not self._ready and self._pending:
            left = None if self._deadline is None else self._deadline - time.monotonic()
            try:
                if left is None or left > 0:
                    await suspend(self._svc, self._wait_on, left, self._unwait)
                else:
                    raise CallTimeout("select: deadline passed")
            except CallTimeout:
                self._give_up(lambda: CallTimeout("no reply within the select's timeout"))
            except BaseException:
                self.close()
                raise
        if self._ready:
            return self._ready.popleft()
        raise StopAsyncIteration

    def _wait_on(self, session: int) -> None:
        self._waiting = session

    def _unwait(self, session: int) -> None:
        if self._waiting == session:
            self._waiting = 0

    def _give_up(self, error: Any) -> None:
        """Every call still pending ends as ``error()`` in the results, in call order."""
        pending = sorted(self._pending.items(), key=lambda item: item[1][0])
        self.close()
        for _, (index, _) in pending:
            self._ready.append((index, error()))

    def close(self) -> None:
        """Withdraw every call still pending: late replies are dropped and counted."""
        svc, me = self._svc, self._router.node_id
        for session, (_, dest) in self._pending.items():
            svc._unsink(session)
            if dest.__class__ is not int or node_of(dest) != me:
                self._harbor.withdraw(dest, svc.handle, session)
        self._pending.clear()

    def __del__(self) -> None:
        # A loop left early drops its Select in the service's own worker (the coroutine's
        # frame): withdraw there. After the service ended its sinks are gone already.
        if self._pending:
            self.close()


async def gather(select: Select) -> list[Any]:
    """Every result (or exception instance) of ``select``'s calls, in call order."""
    out: list[Any] = [None] * select.size
    async for index, result in select:
        out[index] = result
    return out
