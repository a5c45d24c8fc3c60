"""The node's link to coordination: operations, notices, config, members, locks, master.

Every ZooKeeper or Redis round trip runs on coord's own threads
(``Coordinator.submit`` and the lock callbacks); its result comes back to
the waiting service as a message on the session it waits on (through the
router), so no worker ever blocks on coordination. Coordination events
(member joins and leaves, config changes, a lost name, a lost lock, master
changes) become SYSTEM notices for the services that asked for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from coord.api import BaseListener, Health, Held, NodeInfo
from coord.errors import LockLost

from .core.faults import simple_error
from .core.suspend import suspend
from .message import ERROR, REPLY, SYSTEM

if TYPE_CHECKING:
    from types import TracebackType

    from coord.api import Coordinator

    from ._router import Router
    from .core.servicecore import ServiceCore

__all__ = ["CoordLink", "Lock"]

MasterHook = Callable[[bool, bool], None]  # (is_master now, was master)


class _Listener(BaseListener):
    """Coord's notifier thread → the link."""

    def __init__(self, link: CoordLink) -> None:
        self.link = link

    def on_member_join(self, info: NodeInfo) -> None:
        self.link._member_event("join", info)

    def on_member_leave(self, info: NodeInfo) -> None:
        self.link._member_event("leave", info)

    def on_name_lost(self, name: str, handle: int) -> None:
        self.link.notify(handle, "name-lost", (name,))

    def on_config(self, key: str, value: Any) -> None:
        for handle in self.link._watchers_of(key):
            self.link.notify(handle, "config", (key, value))

    def on_group(self, group: str, joined: list[int], left: list[int]) -> None:
        for handle in self.link._group_watchers_of(group):
            for member in joined:
                self.link.notify(handle, "group", (group, "join", member))
            for member in left:
                self.link.notify(handle, "group", (group, "leave", member))

    def on_master(self, is_master: bool, epoch: int, master_id: int | None) -> None:
        self.link._master_changed(is_master, epoch, master_id)

    def on_health(self, health: Health) -> None:
        self.link._health_changed(health)


class CoordLink:
    """Coordination as the node's services see it."""

    def __init__(self, coordinator: Coordinator, router: Router) -> None:
        self.coord = coordinator
        self._router = router
        self._lock = threading.Lock()
        self.health = Health.LOST
        self.master_epoch = 0
        self.master_id: int | None = None
        self._was_master = False  # what the master hooks were last told
        self._config_watchers: dict[str, set[int]] = {}
        self._member_watchers: set[int] = set()
        self._group_watchers: dict[str, set[int]] = {}
        self._holders: set[int] = set()  # handles that hold global names, groups or watches
        self._held: dict[int, list[Held]] = {}  # handle -> locks it holds now
        self._member_hooks: list[Callable[[str, NodeInfo], None]] = []
        self._state_hooks: list[Callable[[str], None]] = []
        self._was_down = False  # a SUSPENDED or LOST was seen since the last CONNECTED
        self._master_hooks: list[MasterHook] = []
        # Lock waits (for metrics), under _lock: waiting now, acquired, failed (timed out,
        # refused, abandoned), and the seconds acquired locks were waited for.
        self.lock_waits = {"waiting": 0, "acquired": 0, "failed": 0}
        self.lock_wait_seconds = 0.0
        coordinator.add_listener(_Listener(self))

    @property
    def clustered(self) -> bool:
        """True when coordination spans processes (ZooKeeper), False when embedded."""
        return self.coord.clustered

    def on_member(self, hook: Callable[[str, NodeInfo], None]) -> None:
        """Call ``hook(event, info)`` on every member join/leave (coord's thread)."""
        self._member_hooks.append(hook)

    def on_state(self, hook: Callable[[str], None]) -> None:
        """Call ``hook(state)`` on session changes: ``"connected"``, ``"suspended"``,
        ``"lost"``, ``"reconnected"`` (CONNECTED after a SUSPENDED or LOST)."""
        self._state_hooks.append(hook)

    @property
    def has_redis(self) -> bool:
        """True when ``"redis"`` locks go to a Redis server."""
        return self.coord.has_redis

    def _health_changed(self, health: Health) -> None:
        self.health = health
        if health is Health.CONNECTED:
            state = "reconnected" if self._was_down else "connected"
            self._was_down = False
        else:
            state = health.value
            self._was_down = True
        for hook in self._state_hooks:
            hook(state)

    def on_master(self, hook: MasterHook) -> None:
        """Call ``hook(is_master, was_master)`` when this node's mastership changes."""
        self._master_hooks.append(hook)

    @property
    def is_master(self) -> bool:
        """True while this node is master, asked of coord each time: mastership is a
        lease that can lapse between two master events, and the node must not act on
        the last event's view meanwhile."""
        return self.coord.is_master()

    # -- operations ---------------------------------------------------------------------

    def notify(self, handle: int, event: str, data: tuple[Any, ...]) -> None:
        """A SYSTEM notice to a local service (from any thread)."""
        self._router.post(handle, (0, 0, SYSTEM, (event, data)))

    def answer(self, handle: int, session: int) -> Callable[[Any, BaseException | None], None]:
        """A coord callback that resumes ``handle``'s wait on ``session``."""
        post = self._router.post

        def done(result: Any, exc: BaseException | None) -> None:
            if exc is None:
                post(handle, (0, session, REPLY, result))
            else:
                post(handle, (0, session, ERROR, simple_error(exc)))

        return done

    async def op(self, svc: ServiceCore, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking coordination call on coord's threads; ``svc`` waits for it."""

        def start(s: int) -> None:
            try:
                self.coord.submit(fn, *args, callback=self.answer(svc.handle, s))
            except Exception as exc:  # coord stopped: answer at once, still as a message
                self._router.post(svc.handle, (0, s, ERROR, simple_error(exc)))

        return await suspend(svc, start)

    def background(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on coord's threads, ignoring its outcome (best effort)."""
        try:
            self.coord.submit(fn, *args, callback=lambda r, e: None)
        except Exception:  # coord already stopped: what it held went with its session
            return

    def hold(self, handle: int) -> None:
        """Remember that ``handle`` holds something in coordination (cleaned at retire)."""
        with self._lock:
            self._holders.add(handle)

    # -- config and members ------------------------------------------------------------------

    def config(self, handle: int, key: str, default: Any) -> Any:
        """The cached value of ``key``; ``handle`` is told of changes from now on."""
        with self._lock:
            first = key not in self._config_watchers
            self._config_watchers.setdefault(key, set()).add(handle)
            self._holders.add(handle)
        if first:
            self.coord.watch_config(key)
        return self.coord.config_get(key, default)

    def _watchers_of(self, key: str) -> list[int]:
        with self._lock:
            return list(self._config_watchers.get(key, ()))

    def group_members(self, handle: int, group: str) -> list[int]:
        """The members of ``group`` now; ``handle`` gets ``group`` notices from now on."""
        with self._lock:
            self._group_watchers.setdefault(group, set()).add(handle)
            self._holders.add(handle)
        return self.coord.group_members(group)

    def _group_watchers_of(self, group: str) -> list[int]:
        with self._lock:
            return list(self._group_watchers.get(group, ()))

    def watch_members(self, handle: int) -> dict[int, NodeInfo]:
        """The live members; ``handle`` gets ``member`` notices from now on."""
        with self._lock:
            self._member_watchers.add(handle)
            self._holders.add(handle)
        return self.coord.members()

    def _member_event(self, event: str, info: NodeInfo) -> None:
        with self._lock:
            watchers = list(self._member_watchers)
        for handle in watchers:
            self.notify(handle, "member", (event, info.node_id))
        for hook in self._member_hooks:
            hook(event, info)

    def _master_changed(self, is_master: bool, epoch: int, master_id: int | None) -> None:
        was, self._was_master = self._was_master, is_master
        self.master_epoch = epoch
        self.master_id = master_id
        for hook in self._master_hooks:
            hook(is_master, was)

    # -- locks --------------------------------------------------------------------------------

    def held_locks(self) -> list[tuple[int, Held]]:
        """``(handle, held)`` for every lock a local service holds now."""
        with self._lock:
            return [(h, held) for h, locks in self._held.items() for held in locks]

    def lock_stats(self) -> dict[str, float]:
        """Lock waits: ``waiting`` now, ``acquired``, ``failed``, ``wait_seconds``."""
        with self._lock:
            return {**self.lock_waits, "wait_seconds": self.lock_wait_seconds}

    def _waited(self, outcome: str, since: float) -> None:
        with self._lock:
            self.lock_waits["waiting"] -= 1
            self.lock_waits[outcome] += 1
            if outcome == "acquired":
                self.lock_wait_seconds += perf_counter() - since

    def _took(self, handle: int, held: Held) -> None:
        with self._lock:
            self._held.setdefault(handle, []).append(held)
            self._holders.add(handle)

    def _gave_back(self, handle: int, held: Held) -> None:
        with self._lock:
            locks = self._held.get(handle)
            if locks is not None and held in locks:
                locks.remove(held)
                if not locks:
                    del self._held[handle]

    # -- retire -----------------------------------------------------------------------------

    def forget(self, handle: int) -> None:
        """A service ended: drop its watches, locks and (in the background) its global
        names and group memberships."""
        with self._lock:
            if handle not in self._holders:
                return
            self._holders.discard(handle)
            for watchers in self._config_watchers.values():
                watchers.discard(handle)
            for watchers in self._group_watchers.values():
                watchers.discard(handle)
            self._member_watchers.discard(handle)
            self._held.pop(handle, None)
        self.background(self.coord.unregister_handle, handle)


class Lock:
    """``async with self.lock(key, ttl=, wait=) as held:`` — a cluster-wide lock.

    ``held.fence`` grows with every acquisition; pass it to what you protect.
    Raises ``LockTimeout`` when not acquired within ``wait`` seconds. If the
    lease is lost while held, the service gets ``on_lock_lost(key, fence)``
    at once, ``held.valid`` turns False, and a block that then ends without
    an error of its own raises ``LockLost``: what it did was not protected to
    the end. A coroutine ended while waiting (its service exited) withdraws
    its request: no stale waiter remains.
    """

    __slots__ = ("backend", "held", "key", "link", "svc", "ttl", "wait")

    def __init__(
        self, link: CoordLink, svc: ServiceCore, key: str, ttl: float, wait: float | None,
        backend: str,
    ) -> None:
        self.link = link
        self.svc = svc
        self.key = key
        self.ttl = ttl
        self.wait = wait
        self.backend = backend
        self.held: Held | None = None

    async def __aenter__(self) -> Held:
        link, handle = self.link, self.svc.handle
        requests = []

        def start(s: int) -> None:
            def acquired(result: Held | BaseException) -> None:
                if isinstance(result, BaseException):
                    link._router.post(handle, (0, s, ERROR, simple_error(result)))
                else:
                    link._router.post(handle, (0, s, REPLY, result))

            def lost(held: Held) -> None:
                link._gave_back(handle, held)
                link.notify(handle, "lock-lost", (held.key, held.fence))

            requests.append(link.coord.lock(
                self.key, self.ttl, self.wait, self.backend, acquired, lost
            ))

        # Withdrawn on a timeout, a failure, or the coroutine being closed.
        with link._lock:
            link.lock_waits["waiting"] += 1
        since = perf_counter()
        try:
            held: Held = await suspend(self.svc, start, abort=lambda s: requests[0].cancel())
        except BaseException:
            link._waited("failed", since)
            raise
        link._waited("acquired", since)
        link._took(handle, held)
        self.held = held
        return held

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held, self.held = self.held, None
        if held is None:
            return
        self.link._gave_back(self.svc.handle, held)
        if exc_type is GeneratorExit:
            # The coroutine is being closed: it cannot suspend any more.
            self.link.background(held.release)
            return
        lost = not held.valid
        await self.link.op(self.svc, held.release)
        if lost and exc_type is None:
            raise LockLost(f"lock {held.key!r} (fence {held.fence}) was lost before the end")
