"""The service's side of its core: what a ``Service`` reads from and asks of its ``Core``.

``node.service.Service`` derives from :class:`ServiceCore`; at bind it makes
its :class:`~node.core.runner.Core` (``_core``) and keeps, as plain attributes,
the few references its own hot paths read (``handle``, ``_host``,
``_mailbox``, ``_services``). Everything else the core owns is reached through
the properties and methods below, used by the waiting verbs (``suspend``,
``select``, ``response``, ``critical``), the socket API and tracing. This class
adds no per-instance state of its own and stays plain Python in both builds
(``node.core.native``): a service is an ordinary object whose attributes
CPython keeps inline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .runner import Core

if TYPE_CHECKING:
    from .host import Host
    from .mailbox import Mailbox
    from .runner import Task


class ServiceCore:
    """Base of ``Service``: binds a service to its core and forwards to it."""

    # Built by Service.__init_subclass__ on each subclass: exposed method name ->
    # (function, is_coroutine). The core copies it at bind (an instance field there).
    _handler_table: dict[str, tuple[Callable[..., Any], bool]] = {}

    handle: int
    _core: Core
    _host: Host
    _mailbox: Mailbox
    _services: dict[Any, Any]  # the node's table (handle -> service); read-only here

    def _bind_core(
        self, host: Host, handle: int, mailbox: Mailbox, services: dict[int, Any]
    ) -> None:
        core = Core(self, host, handle, mailbox, services)
        mailbox.service = core  # workers run the core: Core._dispatch
        self._core = core
        self.handle = handle
        self._host = host
        self._mailbox = mailbox
        self._services = services

    # -- what the node may read --------------------------------------------------

    def runtime_stats(self) -> dict[str, Any]:
        """State, messages handled, mailbox length, busy time and pending waits (racy
        reads from another thread: good for stats, not for decisions)."""
        return self._core.runtime_stats()

    def queued(self) -> int:
        """Messages waiting in this service's mailbox now (racy read: fine for flow control)."""
        return len(self._mailbox.queue)

    # -- the core's state, for the verbs above it ------------------------------------

    @property
    def _state(self) -> int:
        """The lifecycle state (``runner.STARTING`` .. ``EXITED``)."""
        return self._core._state

    @property
    def _current(self) -> Task | None:
        """The coroutine running now (None in a plain handler)."""
        return self._core._current

    @property
    def _handlers(self) -> dict[str, tuple[Callable[..., Any], bool]]:
        """This service's handler table (the class's, or tracing's wrapped copy)."""
        return self._core._handlers

    @_handlers.setter
    def _handlers(self, table: dict[str, tuple[Callable[..., Any], bool]]) -> None:
        self._core._handlers = table

    @property
    def _msg(self) -> Any:
        """The CALL a plain handler is answering now, until ``response()`` takes it."""
        return self._core._msg

    @_msg.setter
    def _msg(self, msg: Any) -> None:
        self._core._msg = msg

    @property
    def _crit(self) -> Any:
        """Critical-section state (``node._critical``), made on first use."""
        return self._core._crit

    @_crit.setter
    def _crit(self, crit: Any) -> None:
        self._core._crit = crit

    @property
    def _tokens(self) -> dict[Any, int] | None:
        """``wait(token)`` -> the session waiting on it."""
        return self._core._tokens

    @_tokens.setter
    def _tokens(self, tokens: dict[Any, int] | None) -> None:
        self._core._tokens = tokens

    @property
    def _responders(self) -> Any:
        """A WeakSet of this service's unanswered responders."""
        return self._core._responders

    @_responders.setter
    def _responders(self, responders: Any) -> None:
        self._core._responders = responders

    @property
    def _n_msgs(self) -> int:
        """SENDs and CALLs dispatched to a handler (or refused by a missing one)."""
        return self._core._n_msgs

    # -- sessions, deadlines, sinks and callables (the verbs' half of the core) ----------

    def _new_session(self) -> int:
        """A session number unique within this service. Owner: the running worker."""
        return self._core._new_session()

    def _arm(self, session: int, seconds: float, payload: Any) -> None:
        """Send this service TIMER ``payload`` on ``session`` after ``seconds``."""
        self._core._arm(session, seconds, payload)

    def _sink(self, session: int, sink: Callable[[int, int, Any], None]) -> None:
        """Hand the reply on ``session`` to ``sink(session, kind, payload)`` instead of a
        suspended coroutine (several replies awaited by one coroutine)."""
        self._core._sink(session, sink)

    def _unsink(self, session: int) -> bool:
        """Withdraw a sink; True if it was still waiting."""
        return self._core._unsink(session)

    def _run_callable(self, fn: Callable[..., Any], args: tuple[Any, ...], what: str) -> None:
        """Run ``fn(*args)`` as the service (a coroutine it returns runs as a task)."""
        self._core._run_callable(fn, args, what)

    def _socket_event(self, session: int, payload: Any) -> None:
        """A SOCKET message; the socket API (``node._sockets.api``) overrides this."""
        self._host.count_drop("socket-no-handler")
