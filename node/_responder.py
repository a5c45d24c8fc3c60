"""Deferred replies (skynet's ``skynet.response``) and wait/wakeup by token.

``reply = self.response()`` inside a handler takes over answering the call
being handled: the handler returns without answering, and the service calls
``reply(value)`` or ``reply.error(exc)`` later, from any of its handlers or
coroutines. A responder answers once; a responder dropped unused, or still
unused when its service ends, answers the caller with an error, so a caller
never waits for an answer nobody will give.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from .core.faults import code_of, error_payload
from .message import ERR_EXITED, ERROR, REPLY

if TYPE_CHECKING:
    from ._router import Router

__all__ = ["Responder"]


class Responder:
    """A one-shot answer to a call: ``reply(value)`` or ``reply.error(exc)``.

    Example, a long poll::

        @expose
        def next_event(self):
            self.waiting.append(self.response())   # answered later

        @expose
        def publish(self, event):
            for reply in self.waiting:
                reply(event)
            self.waiting.clear()
    """

    __slots__ = ("__weakref__", "_handle", "_router", "_session", "_source", "used")

    def __init__(self, router: Router, handle: int, source: int, session: int) -> None:
        self._router = router
        self._handle = handle  # the answering service
        self._source = source  # the caller
        self._session = session
        self.used = False

    def __call__(self, value: Any = None) -> None:
        """Answer the caller with ``value``. Raises ``RuntimeError`` if already used."""
        self._answer(REPLY, value)

    def error(self, exc: BaseException) -> None:
        """Fail the call with ``exc`` (the caller gets ``CallError``, as for a raised
        exception; a skymesh error type arrives as itself)."""
        self._answer(ERROR, error_payload(code_of(exc), exc))

    def _answer(self, kind: int, payload: Any) -> None:
        if self.used:
            raise RuntimeError("this responder has answered already")
        self.used = True
        self._router.post(self._source, (self._handle, self._session, kind, payload))

    def service_ended(self) -> None:
        """The answering service ended: the caller gets ``ServiceExited``."""
        if not self.used:
            text = f"service {self._handle:#x} ended before answering"
            self._answer(ERROR, (ERR_EXITED, "ServiceExited", text, ""))

    def __del__(self) -> None:
        if not self.used:
            try:
                text = "the responder was dropped without an answer"
                self._answer(ERROR, (0, "ResponderDropped", text, ""))
            except Exception:  # interpreter shutdown: the caller's node is going too
                return

    def __repr__(self) -> str:
        state = "used" if self.used else "pending"
        return f"<Responder to {self._source:#x} session {self._session} {state}>"


def track(responders: Any, responder: Responder) -> Any:
    """Add ``responder`` to a service's weak set of open responders (made on first use)."""
    if responders is None:
        responders = weakref.WeakSet()
    responders.add(responder)
    return responders
