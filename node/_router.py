"""The router: the one way a message enters a mailbox (skynet's ``skynet_send``).

Every message for a service passes here: sends and calls from services and
plain threads, replies, timer expiries, coord results, socket events,
notices, and what the harbor receives from other nodes. Here, and only here,
"local or remote?" is decided: a local handle goes into its mailbox, a
remote one to the harbor link, a name or group is resolved first.

The one exception is a documented inlining: ``Service.send``/``Service.call``
push straight into the mailbox of a *local handle* (one dict probe and one
``Mailbox.push``, exactly what :meth:`Router.deliver` does for that case),
because that path is the node's hottest and a call less is measurable.

Wake-ups: a push that put a mailbox in the global queue wakes a sleeping
worker only when it comes from outside the workers (``wake=True`` /
:meth:`post`); a worker pushing needs nobody woken, it will reach that
mailbox itself.

Shared tables: ``services`` is written under the lifecycle's lock and read
without one (dict reads are atomic under the GIL).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .address import format_handle, make_handle, node_of
from .errors import NodeDown, Overloaded, ServiceNotFound
from .message import CALL, ERROR, REPLY, SYSTEM

if TYPE_CHECKING:
    from .core.scheduler import Scheduler
    from .core.servicecore import ServiceCore

__all__ = ["RemotePort", "Router"]

Message = tuple[int, int, int, Any]


class RemotePort(Protocol):
    """How the router reaches other nodes (``node._harbor_link.HarborLink``)."""

    def send(self, dest: int, source: int, session: int, kind: int, payload: Any) -> None:
        """SEND or CALL to a service on another node; a CALL raises ``NodeDown``."""

    def reply(self, source: int, dest: int, session: int, kind: int, payload: Any) -> None:
        """REPLY, ERROR or a SYSTEM notice to another node; dropped if it is gone."""

    def control(self, source: int, target: int, event: str) -> None:
        """kill/monitor/demonitor a service on another node; raises ``NodeDown``."""


class _Standalone:
    """The remote port of a node without a harbor: every other node is down."""

    def __init__(self, count_drop: Callable[[str], None]) -> None:
        self._count_drop = count_drop

    def send(self, dest: int, source: int, session: int, kind: int, payload: Any) -> None:
        if kind == CALL:
            raise NodeDown(f"node {node_of(dest)} is not a member (no harbor)")
        self._count_drop("node-down")

    def reply(self, source: int, dest: int, session: int, kind: int, payload: Any) -> None:
        self._count_drop("node-down")

    def control(self, source: int, target: int, event: str) -> None:
        raise NodeDown(f"node {node_of(target)} is not a member (no harbor)")


Resolver = Callable[[Any, bool], "int | None"]


class Router:
    """Delivers messages; owns the service table, plain-thread sessions and drop counts."""

    def __init__(self, node_id: int, scheduler: Scheduler) -> None:
        self.node_id = node_id
        self.scheduler = scheduler
        # handle -> service. Writes: the lifecycle, under its lock. Reads: anyone.
        self.services: dict[int, ServiceCore] = {}
        # Local id 0: "outside the services". Plain threads wait on its sessions.
        self.ext_handle = make_handle(node_id, 0)
        self._ext_sessions = itertools.count(1)
        self._ext_waiters: dict[int, Callable[[int, Any], None]] = {}
        self._drops: Counter[str] = Counter()
        self._drops_lock = threading.Lock()
        self._refusals: dict[int, int] = {}  # destination -> refusals so far (bounded)
        # Set by the node: log a refusal (destination, count so far).
        self.on_refused: Callable[[int, int], None] = lambda dest, n: None
        self.remote: RemotePort = _Standalone(self.count_drop)
        self._resolve: Resolver = _no_names

    def wire(self, resolve: Resolver, remote: RemotePort) -> None:
        """Connect the name resolver and the harbor link."""
        self._resolve = resolve
        self.remote = remote

    def renumber(self, node_id: int) -> None:
        """Take the node id coordination allocated (before any service exists)."""
        self.node_id = node_id
        self.ext_handle = make_handle(node_id, 0)

    # -- into a mailbox ------------------------------------------------------------------

    def deliver(
        self, source: int, dest: Any, session: int, kind: int, payload: Any, wake: bool = False
    ) -> None:
        """A SEND or CALL to a handle, name or group. A CALL to nowhere raises
        ``ServiceNotFound``/``NodeDown``; a SEND to nowhere is counted."""
        if dest.__class__ is not int:
            dest = self._resolve(dest, kind == CALL)
            if dest is None:
                self.count_drop("no-destination")
                return
        svc = self.services.get(dest)
        if svc is not None:
            try:
                if svc._mailbox.offer((source, session, kind, payload)) and wake:
                    self.scheduler.wake()
            except Overloaded:
                self.refused(dest, kind)
                if kind == CALL:
                    raise
            return
        if node_of(dest) != self.node_id:
            self.remote.send(dest, source, session, kind, payload)
            return
        if kind == CALL:
            raise ServiceNotFound(f"no service {format_handle(dest)}")
        self.count_drop("dead-service")

    def reply(self, source: int, dest: int, session: int, kind: int, payload: Any) -> None:
        """A REPLY or ERROR from a worker (no wake-up needed)."""
        svc = self.services.get(dest)
        if svc is not None:
            svc._mailbox.push((source, session, kind, payload))
        else:
            self._elsewhere(dest, (source, session, kind, payload), True)

    def post(self, dest: int, msg: Message) -> None:
        """Any message from outside the workers (timer, coord, sockets, harbor, plain
        threads, notices): push and wake a sleeping worker."""
        svc = self.services.get(dest)
        if svc is not None:
            if svc._mailbox.push(msg):
                self.scheduler.wake()
        else:
            self._elsewhere(dest, msg, False)

    def accept(self, dest: int, msg: Message) -> bool:
        """A message the harbor received for a local service; False if there is none.

        Raises ``Overloaded`` for a SEND or CALL to a mailbox at its limit."""
        svc = self.services.get(dest)
        if svc is not None:
            mb = svc._mailbox
            try:
                queued = mb.offer(msg) if msg[2] <= CALL else mb.push(msg)
            except Overloaded:
                self.refused(dest, msg[2])
                raise
            if queued:
                self.scheduler.wake()
            return True
        if dest == self.ext_handle:
            self._elsewhere(dest, msg, False)
            return True
        return False

    def signal(self, handle: int, event: str, data: Any = None) -> bool:
        """A SYSTEM event ahead of everything queued (kill, stop); False if no service."""
        svc = self.services.get(handle)
        if svc is None:
            return False
        if svc._mailbox.push_front([(0, 0, SYSTEM, (event, data))]):
            self.scheduler.wake()
        return True

    def kill(self, target: int) -> bool:
        """End ``target`` at its next message boundary, on this node or another.

        False if it is a local handle with no service, or its node cannot be
        reached; True once a remote kill is sent.
        """
        if node_of(target) != self.node_id:
            try:
                self.remote.control(0, target, "kill")
            except NodeDown:
                self.count_drop("node-down")
                return False
            return True
        return self.signal(target, "kill")

    def requeue(self, svc: ServiceCore, msgs: list[Message]) -> None:
        """Messages a service held (during ``on_start``) back at the head of its mailbox."""
        if svc._mailbox.push_front(msgs):
            self.scheduler.wake()

    def _elsewhere(self, dest: int, msg: Message, count: bool) -> None:
        if node_of(dest) != self.node_id:
            self.remote.reply(msg[0], dest, msg[1], msg[2], msg[3])
        elif dest == self.ext_handle:
            waiter = self._ext_waiters.get(msg[1])
            if waiter is not None:
                waiter(msg[2], msg[3])
                return
            self.count_drop("late-reply")
        elif count:
            self.count_drop("dead-service" if msg[2] not in (REPLY, ERROR) else "late-reply")

    # -- plain threads' sessions -----------------------------------------------------------

    def ext_session(self, callback: Callable[[int, Any], None], once: bool = True) -> int:
        """A session on the outside handle whose answer calls ``callback(kind, payload)``
        (on whatever thread delivers it). ``once``: forgotten after the first answer."""
        s = next(self._ext_sessions)  # atomic under the GIL: any thread may allocate
        if once:
            waiters = self._ext_waiters

            def first(kind: int, payload: Any) -> None:
                waiters.pop(s, None)
                callback(kind, payload)

            self._ext_waiters[s] = first
        else:
            self._ext_waiters[s] = callback
        return s

    def forget_ext_session(self, session: int) -> None:
        """Withdraw an outside session (its waiter gave up)."""
        self._ext_waiters.pop(session, None)

    def refused(self, dest: int, kind: int) -> None:
        """A SEND or CALL refused by a full mailbox: counted, and logged on the 1st,
        2nd, 4th, 8th ... refusal per destination (skynet's doubling rule)."""
        self.count_drop("overloaded-send" if kind != CALL else "overloaded-call")
        with self._drops_lock:
            n = self._refusals.get(dest, 0) + 1
            if len(self._refusals) > 4096:  # bounded: forget old destinations
                self._refusals.clear()
            self._refusals[dest] = n
        if n & (n - 1) == 0:
            self.on_refused(dest, n)

    # -- drops ----------------------------------------------------------------------------

    def count_drop(self, reason: str) -> None:
        """Count one message dropped for ``reason`` (shown in ``Node.stats``)."""
        with self._drops_lock:
            self._drops[reason] += 1

    def drops(self) -> dict[str, int]:
        """Drops by reason so far."""
        with self._drops_lock:
            return dict(self._drops)


def _no_names(dest: Any, strict: bool) -> int | None:
    raise TypeError(f"not a destination: {dest!r}")
