"""The only way a service coroutine suspends (trio's ``_traps`` rule).

A coroutine suspends by yielding the session number it waits on; whatever
answers (a reply, a timer, a coord thread, the socket thread, a critical
section hand-off) arrives later as a message carrying that session, and the
runner (``runner.py``, the only resumer) sends its value in or throws its
error. Nothing else may yield: a foreign awaitable (an asyncio future, say)
is refused with a ``TypeError`` thrown back into the coroutine.

Every waiting verb goes through :func:`suspend`, which allocates the
session, lets the verb start what will answer, arms the deadline, waits,
and withdraws on the way out (trio's ``wait_task_rescheduled(abort_fn)``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ..message import CALL_TIMEOUT

if TYPE_CHECKING:
    from .servicecore import ServiceCore

__all__ = ["Wait", "suspend"]


class Wait:
    """Suspend the running service coroutine until a message for ``session`` arrives."""

    __slots__ = ("session",)

    def __init__(self, session: int) -> None:
        self.session = session

    def __await__(self) -> Generator[int, Any, Any]:
        value = yield self.session
        return value


async def suspend(
    svc: ServiceCore,
    start: Callable[[int], object] | None = None,
    timeout: float | None = None,
    abort: Callable[[int], object] | None = None,
    expiry: Any = CALL_TIMEOUT,
) -> Any:
    """Wait for the message answering a fresh session of ``svc``; return its value.

    - ``start(session)`` sets up whoever will answer; if it raises, nothing
      waits and the error propagates.
    - ``timeout`` seconds (``None``: no deadline) arms a TIMER with payload
      ``expiry``: ``CALL_TIMEOUT`` raises ``CallTimeout`` in the waiter,
      ``None`` resumes it with ``None`` (a sleep).
    - ``abort(session)`` withdraws the request when the wait ends in any
      exception: an ERROR reply, the deadline, or the coroutine being closed
      because its service ended. It must not suspend.

    Invariant: the deadline is disarmed by the runner when the answer wins,
    and the answer is dropped (counted as a late reply) when the deadline wins.
    """
    s = svc._new_session()
    if start is not None:
        start(s)
    if timeout is not None:
        svc._arm(s, timeout, expiry)
    if abort is None:
        return await Wait(s)
    try:
        return await Wait(s)
    except BaseException:
        abort(s)
        raise
