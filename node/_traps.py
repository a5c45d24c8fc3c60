"""The only awaitables that ever yield back to the runner.

A service coroutine suspends in exactly one way: it yields the session
number it waits on. Whatever will answer (a reply, a timer, a coord thread,
a socket, a critical-section hand-off) arrives later as a message carrying
that session, and ``_runner`` resumes the coroutine with its value. Nothing
else may yield: a foreign awaitable (an asyncio future, say) is refused with
a ``TypeError`` thrown back into the coroutine.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any


class Wait:
    """Suspend the running service coroutine until a message for ``session`` arrives."""

    __slots__ = ("session",)

    def __init__(self, session: int) -> None:
        self.session = session

    def __await__(self) -> Generator[int, Any, Any]:
        value = yield self.session
        return value
