"""The runner's contract with its node: the ``Host`` it calls, and the names both share.

``runner.Core`` runs a service; what it needs from the node it runs in is
:class:`Host` (``node._lifecycle.Lifecycle`` is the real one). The lifecycle
states, task kinds, TIMER/SYSTEM payload names and :class:`ServiceExit` are
read by the verbs above the core (``node.service``, sockets, tracing, reload)
as well, so they live here, in plain Python, beside the compiled runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .timer import TimerThread

STARTING, RUNNING, STOPPING, EXITED = range(4)
STATE_NAMES = ("starting", "running", "stopping", "exited")

# Task kinds: what finishing the coroutine means.
T_HANDLER, T_START, T_STOP, T_OTHER = range(4)

# TIMER payload of a ``timeout(seconds, fn)`` callback.
CALLBACK = "callback"

# SYSTEM event: swap to the class of the same name in a reloaded module (node._reload).
RELOAD = "reload"


class Host(Protocol):
    """What a service's runtime half calls on its node."""

    @property
    def node_id(self) -> int:
        """This node's id."""

    call_timeout: float
    timer: TimerThread

    def reply(self, source: int, dest: int, session: int, kind: int, payload: Any) -> None:
        """Deliver a REPLY or ERROR (from the worker running ``source``)."""

    def requeue(self, svc: Any, msgs: list[tuple[int, int, int, Any]]) -> None:
        """Put ``msgs`` back at the head of ``svc``'s own mailbox."""

    def count_drop(self, reason: str) -> None:
        """Count a message dropped for ``reason``."""

    def refused(self, dest: int, kind: int) -> None:
        """Count (and now and then log) a SEND or CALL refused by ``dest``'s full mailbox."""

    def log(self, handle: int, level: str, text: str) -> None:
        """One log line from ``handle``."""

    def log_exc(self, handle: int, what: str, err: BaseException) -> None:
        """An error line with the traceback of ``err``."""

    def started(self, svc: Any, source: int, session: int) -> None:
        """``svc``'s ``on_start`` finished: answer its creator."""

    def retire(self, svc: Any, reason: str) -> None:
        """``svc`` ended: forget its names, monitors, subscriptions; tell its watchers."""


class ServiceExit(BaseException):
    """Raised by ``Service.exit()`` to unwind the running handler. Never escapes a worker."""


