"""The service base class: what a service can do, as DESIGN's "Services" lists it.

A service is an actor: a mailbox and the handlers its messages run. Only
methods marked ``@expose`` can be invoked by messages. Plain ``def``
handlers run straight through; ``async def`` handlers run as coroutines the
node drives itself, so ``await self.call(...)`` suspends only that handler
and the service goes on with its other messages (skynet's reentrancy).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ._coord_link import Lock
from ._critical import Critical
from ._lifecycle import LAUNCHABLE, class_path
from ._responder import Responder, track
from ._select import Select, gather
from ._sockets.api import SocketAPI
from ._unique import LAUNCHER_PREFIX, UNIQUE_PREFIX
from .address import Group, format_handle, node_of
from .core.host import T_HANDLER, ServiceExit
from .core.servicecore import ServiceCore
from .core.suspend import Wait, suspend
from .errors import CallTimeout, NodeDown, ServiceNotFound
from .message import CALL, REPLY, SEND

if TYPE_CHECKING:

    from ._parts import Parts
    from ._router import Router
    from .address import Dest
    from .core.mailbox import Mailbox

__all__ = ["Service", "expose", "launchable"]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)
_EXPOSED = "_skymesh_exposed"  # the marker @expose sets on a function


def launchable(cls: C) -> C:
    """Let other nodes start this service class here (``newservice(..., node=N)``,
    a supervisor placing a child). Without it (or a config ``services`` entry naming
    it) a node's launcher refuses, whatever the message says.

    Example::

        @launchable
        class Room(Service): ...
    """
    LAUNCHABLE.add(class_path(cls))
    return cls


def expose(fn: F) -> F:
    """Mark a method as callable by messages (``call`` and ``send``).

    Example::

        class Echo(Service):
            @expose
            def echo(self, text):
                return text
    """
    setattr(fn, _EXPOSED, True)
    return fn


class Service(SocketAPI, ServiceCore):
    """Base class of every service.

    Override ``on_start(*args)`` (may be async; runs before any message),
    ``on_stop()`` (may be async; runs when the service exits, is killed or
    the node stops), ``on_reload(old_class)`` (after a live reload swapped
    its class), and the notice hooks ``on_down(handle, reason)``,
    ``on_system(event, data)``. Expose handlers with :func:`expose`.

    Example::

        class Counter(Service):
            def on_start(self, start=0):
                self.n = start

            @expose
            def incr(self, k=1):
                self.n += k
                return self.n
    """

    mailbox_limit: int | None = None
    """Messages queued past which a CALL fails at once with ``Overloaded`` and a SEND
    is dropped and counted (``None``: the node's ``mailbox_limit``; ``0``: unbounded)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, tuple[Callable[..., Any], bool]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if callable(value) and getattr(value, _EXPOSED, False):
                    handlers[name] = (value, inspect.iscoroutinefunction(value))
                elif name in handlers:
                    del handlers[name]  # overridden without @expose: no longer exposed
        shadowed = sorted(set(handlers) & _RESERVED)
        if shadowed:
            raise TypeError(
                f"{cls.__name__} exposes {', '.join(shadowed)}, which would hide the Service API"
            )
        cls._handler_table = handlers

    # -- lifecycle hooks (override) ---------------------------------------------------

    def on_start(self, *args: Any) -> Any:
        """Initialise the service; may be ``async``. Raising makes ``newservice`` fail."""

    def on_stop(self) -> Any:
        """Clean up when the service ends; may be ``async``."""

    def on_down(self, handle: int, reason: str) -> Any:
        """A service this one monitors has ended (``reason``: exit, kill, stop, noproc, ...)."""

    def on_lock_lost(self, key: str, fence: int) -> Any:
        """A cluster lock this service held was lost (lease expired, Redis or session gone)."""
        self.log(f"lock {key!r} (fence {fence}) lost", level="warning")

    def on_config(self, key: str, value: Any) -> Any:
        """A config key this service read with :meth:`config` changed."""

    def on_name_lost(self, name: str) -> Any:
        """A global name this service held was taken by another node after a session loss."""
        self.log(f"global name {name!r} lost", level="warning")

    def on_channel(self, channel: str, source: int, payload: Any) -> Any:
        """A publication on a channel this service subscribed to."""

    def on_group(self, group: str, event: str, handle: int) -> Any:
        """A member ``handle`` joined or left (``event``) ``group``, after
        :meth:`group_members` was read. The group is named: one service may watch many."""

    def on_member(self, event: str, node_id: int) -> Any:
        """A node joined or left (``event`` "join"/"leave"), after :meth:`watch_members`."""

    def on_coord(self, state: str) -> Any:
        """The node's coordination session changed: ``"connected"``, ``"suspended"``
        (connection lost, session may live: global names may vanish, the node is not
        master), ``"lost"`` (session expired), ``"reconnected"`` (a session again)."""

    def on_system(self, event: str, data: Any) -> Any:
        """Any other SYSTEM notice."""

    def on_reload(self, old_class: type) -> Any:
        """This service's class was just swapped to the new code of its module by a live
        reload (``skymesh reload``); ``old_class`` is the class it had. Runs on the
        service's own worker, before its next message; may be ``async``. Migrate
        instance state here (attributes the new code expects)."""

    # -- binding (by the node, at spawn) ----------------------------------------------------

    _parts: Parts
    _router: Router

    def _bind(self, parts: Parts, handle: int, mailbox: Mailbox) -> None:
        self._bind_core(parts.lifecycle, handle, mailbox, parts.router.services)
        self._parts = parts
        self._router = parts.router

    # -- messaging ------------------------------------------------------------------------

    def send(self, dest: Dest, method: str, *args: Any) -> None:
        """Send a one-way message; never blocks, never raises for a missing destination.

        A send to a service that does not exist is dropped and counted in the
        node's stats (at-most-once delivery).
        """
        if not self._core._send_local(dest, method, args):  # a local handle: queued or refused
            self._router.deliver(self.handle, dest, 0, SEND, (method, args))

    async def call(
        self,
        dest: Dest,
        method: str,
        *args: Any,
        timeout: float | None = None,
        wait: float | None = None,
    ) -> Any:
        """Call ``method`` on ``dest`` (a handle, name or group, on any node) and return
        its result.

        Raises ``CallError`` (the handler raised or does not exist),
        ``ServiceNotFound`` (no such destination, at once), ``ServiceExited``,
        ``NodeDown`` (at once if the node is not a member; as soon as it is
        reported down while the call is pending), ``CallTimeout`` (``timeout``
        seconds, default the node's ``call_timeout``; ``0`` waits for ever).
        With ``wait=seconds`` a destination that does not exist yet (a name
        not registered, a node not joined) is waited for that long first.
        """
        t = self._host.call_timeout if timeout is None else timeout
        s = self._core._call_local(dest, method, args, t)  # a local handle: queued, deadline armed
        if s:
            return await Wait(s)
        if wait:
            dest = await self._reachable(dest, wait)
        return await suspend(
            self, lambda s: self._router.deliver(self.handle, dest, s, CALL, (method, args)),
            t if t > 0 else None, lambda s: self._withdraw(dest, s),
        )

    def _withdraw(self, dest: Any, session: int) -> None:
        """A call ended without its reply (timeout, error, closed): a late reply is refused."""
        if dest.__class__ is not int or node_of(dest) != self._router.node_id:
            self._parts.harbor.withdraw(dest, self.handle, session)

    async def _reachable(self, dest: Dest, wait: float) -> Dest:
        """``dest`` once it exists (a name registered, a group member, a node joined),
        waiting up to ``wait`` seconds; raises ``ServiceNotFound``/``NodeDown`` after."""
        if isinstance(dest, str):
            found = await self.query(dest, wait=wait)
            if found is None:
                raise ServiceNotFound(f"no service named {dest!r} after waiting {wait}s")
            return found
        if isinstance(dest, Group):
            deadline = time.monotonic() + wait
            while True:
                member = self._parts.names.resolve(dest, False)
                if member is not None:
                    return member
                if time.monotonic() >= deadline:
                    raise ServiceNotFound(f"group {dest.name!r} still has no members after {wait}s")
                await self.sleep(0.05)
        harbor = self._parts.harbor
        nid = node_of(dest)
        if harbor.transport is None or nid == self._router.node_id:
            return dest
        post, me = self._router.post, self.handle
        joined: list[bool] = []

        def start(s: int) -> None:
            if not harbor.when_member(nid, lambda: post(me, (0, s, REPLY, True))):
                post(me, (0, s, REPLY, True))  # a member already: resume at once
            joined.append(True)

        try:
            await suspend(self, start, wait)
        except CallTimeout:
            raise NodeDown(f"node {nid} did not join within {wait}s") from None
        return dest

    # -- answering later, waiting for several (skynet's coroutine idioms) -----------------

    def response(self) -> Responder:
        """Take over answering the call being handled: the handler returns without
        answering; call ``reply(value)`` or ``reply.error(exc)`` later, once.

        Raises ``RuntimeError`` outside a handler of a call (a send has no caller).
        """
        task = self._current
        if task is not None:
            if task.kind != T_HANDLER or not task.session:
                raise RuntimeError("response() needs a call being handled")
            source, session = task.source, task.session
            task.session = 0  # finishing the coroutine no longer answers
        else:
            msg = self._msg
            if msg is None or msg[2] != CALL or not msg[1]:
                raise RuntimeError("response() needs a call being handled")
            source, session = msg[0], msg[1]
            self._msg = None  # the runner no longer answers with the return value
        reply = Responder(self._router, self.handle, source, session)
        self._responders = track(self._responders, reply)
        return reply

    async def wait(self, token: Hashable, timeout: float | None = None) -> Any:
        """Suspend until :meth:`wakeup` with ``token`` (skynet's ``wait``); return the
        value given there. ``CallTimeout`` after ``timeout`` seconds. One coroutine
        per token at a time (``RuntimeError`` otherwise)."""
        tokens = self._tokens
        if tokens is None:
            tokens = self._tokens = {}
        if token in tokens:
            raise RuntimeError(f"a coroutine already waits on {token!r}")

        def withdraw(s: int) -> None:
            if tokens.get(token) == s:
                del tokens[token]

        return await suspend(self, lambda s: tokens.__setitem__(token, s), timeout, withdraw)

    def wakeup(self, token: Hashable, value: Any = None) -> bool:
        """Resume the coroutine waiting on ``token`` with ``value`` (after the current
        handler); False, and nothing happens, when none waits."""
        s = None if self._tokens is None else self._tokens.pop(token, None)
        if s is None:
            return False
        self._router.reply(self.handle, self.handle, s, REPLY, value)
        return True

    async def gather(self, *calls: tuple[Any, ...], timeout: float | None = None) -> list[Any]:
        """Send every ``(dest, method, *args)`` at once; return their results in call
        order, each the value or the exception instance it raised (a ``CallTimeout``
        instance for a call unanswered after ``timeout`` seconds)."""
        return await gather(self.select(*calls, timeout=timeout))

    def select(self, *calls: tuple[Any, ...], timeout: float | None = None) -> Select:
        """``async for index, result in self.select(*calls):`` replies as they arrive
        (skynet's ``request():select()``); leaving the loop early withdraws the rest."""
        return Select(self, self._router, self._parts.harbor, calls, timeout)

    async def offload(
        self, fn: Callable[..., Any], *args: Any, timeout: float | None = None
    ) -> Any:
        """Run blocking ``fn(*args)`` on the node's offload pool; the workers go on
        meanwhile. Returns its result or raises its exception; ``CallTimeout`` after
        ``timeout`` seconds (the job's late result is dropped)."""
        return await self._parts.offload.run(self, fn, args, timeout)

    def fork(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` (plain or async) right after the current handler finishes or
        suspends, before the next queued message."""
        self._core._fork(fn, args)

    async def sleep(self, seconds: float) -> None:
        """Suspend this coroutine for ``seconds``; the service goes on with other messages."""
        await suspend(self, timeout=seconds, expiry=None)

    async def yield_(self) -> None:
        """Let the other queued messages run, then continue (``skynet.yield``)."""
        await self.sleep(0)

    def timeout(self, seconds: float, fn: Callable[..., Any], *args: Any) -> int:
        """Run ``fn(*args)`` (plain or async) after ``seconds``. Returns an id for
        :meth:`cancel_timeout`."""
        return self._core._add_callback(seconds, fn, args)

    def cancel_timeout(self, timer_id: int) -> bool:
        """Cancel a pending :meth:`timeout`; False if it already ran."""
        return self._core._cancel_callback(timer_id)

    def now(self) -> float:
        """Seconds since the node started (monotonic), skynet's ``skynet.now``."""
        return time.monotonic() - self._parts.started_at

    # -- services ---------------------------------------------------------------------------

    async def newservice(
        self, cls: type[Service] | str, *args: Any, name: str | None = None,
        node: int | None = None,
    ) -> int:
        """Start a service (a class or ``"module:Class"``) and return its handle once its
        ``on_start`` has finished. Raises ``ServiceStartError``.

        ``node=N`` starts it on node ``N`` through that node's launcher, which
        only starts classes it allows (``@launchable``, or its config
        ``services``); a refusal arrives as ``CallError`` (``PermissionError``),
        an unreachable node as ``NodeDown``/``ServiceNotFound``.
        """
        if node is not None and node != self._router.node_id:
            launcher = f"{LAUNCHER_PREFIX}{node}"
            # wait=: a node that just joined may not be in this node's name cache yet.
            handle_: int = await self.call(
                launcher, "spawn", class_path(cls), list(args), name, wait=self._host.call_timeout
            )
            return handle_
        names = self._parts.names
        check = None if name is None else (lambda svc: names.register_local(svc, name))
        handle: int = await suspend(
            self, lambda s: self._parts.lifecycle.spawn(cls, args, self.handle, s, check)
        )
        return handle

    async def queryservice(
        self, cls: type[Service] | str, wait: float | None = None, cluster: bool = False
    ) -> int | None:
        """The handle of the unique service ``cls`` someone else started (node-wide, or
        with ``cluster=True`` cluster-wide), ``None`` if there is none after waiting up
        to ``wait`` seconds. Never starts one (skynet's ``queryservice``)."""
        if cluster:
            return await self.query(UNIQUE_PREFIX + class_path(cls), wait=wait)
        return await self._parts.uniques.query_local(self, cls, wait)

    async def uniqueservice(
        self, cls: type[Service] | str, *args: Any, cluster: bool = False
    ) -> int:
        """The one instance of ``cls`` on this node, started on first use.

        With ``cluster=True``: the one instance in the whole cluster, hosted
        by the master and started again on the new master after a failover
        (pass ``"module:Class"`` or an importable class).
        """
        if cluster:
            path = cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__qualname__}"
            return await self._parts.uniques.cluster(self, path, args)
        return await self._parts.uniques.local(self, cls, args)

    def exit(self) -> NoReturn:
        """End this service now: unwinds the running handler, closes its suspended
        coroutines and fails every call waiting on it with ``ServiceExited``."""
        raise ServiceExit

    def kill(self, dest: Dest) -> None:
        """End another service (on any node) at its next message boundary (``exit`` for
        itself)."""
        target = self._parts.names.handle_of(dest)
        if target == self.handle:
            self.exit()
        self._router.kill(target)

    def monitor(self, dest: Dest) -> None:
        """Get ``on_down(handle, reason)`` when ``dest`` ends (at once if it does not exist)."""
        self._parts.monitors.monitor(self.handle, self._parts.names.handle_of(dest))

    def demonitor(self, dest: Dest) -> None:
        """Stop monitoring ``dest``."""
        self._parts.monitors.demonitor(self.handle, self._parts.names.handle_of(dest))

    # -- names ------------------------------------------------------------------------------

    async def register(self, name: str) -> None:
        """Give this service ``name``: ``".x"`` node-local, ``"x"`` cluster-wide.
        Raises ``NameTaken`` if another live service holds it."""
        await self._parts.names.register(self, name)

    async def unregister(self, name: str) -> None:
        """Drop a name this service holds."""
        await self._parts.names.unregister(self, name)

    async def query(self, name: str, wait: float | None = None) -> int | None:
        """The handle holding ``name``; with ``wait``, wait up to that many seconds for
        it to appear. ``None`` if nobody holds it."""
        return await self._parts.names.query(self, name, wait)

    async def join_group(self, name: str) -> None:
        """Join service group ``name``; ``group(name, key=k)`` then may pick this service."""
        await self._parts.names.join_group(self, name)

    async def leave_group(self, name: str) -> None:
        """Leave service group ``name``."""
        await self._parts.names.leave_group(self, name)

    def group_members(self, name: str) -> list[int]:
        """The live members of group ``name`` now (from coordination's watched cache);
        from now on this service gets ``on_group(name, "join"|"leave", handle)``."""
        return self._parts.coord.group_members(self.handle, name)

    # -- channels (skynet's multicast) -------------------------------------------------------

    def publish(self, channel: str, payload: Any) -> None:
        """Send ``payload`` to every subscriber of ``channel`` on every node, once each."""
        self._parts.harbor.publish(self.handle, channel, payload)

    def subscribe(self, channel: str) -> None:
        """Receive ``channel``'s publications as ``on_channel(channel, source, payload)``."""
        self._parts.harbor.subscribe(self.handle, channel)

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``."""
        self._parts.harbor.unsubscribe(self.handle, channel)

    # -- cluster: config, membership, locks ----------------------------------------------------

    def config(self, key: str, default: Any = None) -> Any:
        """The cluster config value of ``key`` (JSON), from a watched cache.

        From now on the service gets ``on_config(key, value)`` when it changes.
        """
        return self._parts.coord.config(self.handle, key, default)

    async def set_config(self, key: str, value: Any) -> None:
        """Store a JSON value under config ``key``; watchers everywhere are told."""
        await self._parts.coord.op(self, self._parts.coord.coord.config_set, key, value)

    def watch_members(self) -> dict[int, Any]:
        """The live nodes now; later joins and leaves arrive as ``on_member(event, node_id)``."""
        return self._parts.coord.watch_members(self.handle)

    def lock(
        self, key: str, ttl: float = 10.0, wait: float | None = None, backend: str = "redis"
    ) -> Lock:
        """A cluster-wide lock (``backend="redis"`` or ``"zk"``)::

            async with self.lock(f"nick:{nick}", ttl=5, wait=2) as held:
                await self.call(store, "write", nick, fence=held.fence)

        Raises ``LockTimeout`` when not acquired within ``wait`` seconds
        (``None``: wait for ever). Loss while held: ``on_lock_lost(key, fence)``.
        """
        return Lock(self._parts.coord, self, key, ttl, wait, backend)

    def is_master(self) -> bool:
        """True while this node holds the cluster's mastership lease (always on a
        standalone node)."""
        return self._parts.coord.coord.is_master()

    def leader(
        self, name: str, ttl: float = 10.0, backend: str | None = None
    ) -> Lock:
        """Lead ``name`` among every service that asks, cluster-wide::

            async with self.leader("matchmaker") as lease:
                while lease.valid:          # check before each act
                    await self.match_round(fence=lease.fence)

        Waits until elected. The lease rule of the node's mastership holds:
        ``lease.valid`` turns False (from the local clock) before anyone else
        can be elected, so a paused leader never acts beside the next one;
        ``lease.fence`` grows with every leader. Backend: Redis when the node
        has a Redis URL, else ZooKeeper.
        """
        backend = backend or ("redis" if self._parts.coord.has_redis else "zk")
        return Lock(self._parts.coord, self, f"leader:{name}", ttl, None, backend)

    # -- coroutine tools --------------------------------------------------------------------

    def critical(self) -> Critical:
        """Serialize coroutines of this service (``skynet.queue``)::

            async with self.critical():
                balance = await self.call(bank, "get")
                await self.call(bank, "set", balance + 1)
        """
        return Critical(self, self._router)

    # -- logging and introspection ------------------------------------------------------------

    def log(self, text: str, level: str = "info") -> None:
        """Write one line to the node's ``.logger`` (time, node, handle, level, text)."""
        self._host.log(self.handle, level, text)

    def __repr__(self) -> str:
        handle = getattr(self, "handle", 0)
        return f"<{type(self).__name__} {format_handle(handle)}>"


_RESERVED = frozenset(
    name
    for klass in Service.__mro__
    for name in vars(klass)
    if not name.startswith("_") and not name.startswith("on_")
)
