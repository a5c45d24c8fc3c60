"""The node's side of coordination: global names, groups, config, locks, membership.

Mixed into ``Node``. Every ZooKeeper or Redis round trip runs on coord's own
threads (``Coordinator.submit`` and the lock callbacks); its result comes
back to the waiting service as a message carrying the session it waits on,
so no worker thread ever blocks on coordination.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from coord.api import BaseListener, Health, Held, LockRequest, NodeInfo

from ._traps import Wait
from .message import ERR_OTHER, ERROR, REPLY, SYSTEM

if TYPE_CHECKING:
    from types import TracebackType

    from coord.api import Coordinator

    from .service import Service


UNIQUE_PREFIX = "@unique:"
LAUNCHER_PREFIX = "@launcher:"  # each node's .launcher, by node id


def _error(exc: BaseException) -> tuple[int, str, str, str]:
    return (ERR_OTHER, type(exc).__name__, str(exc), "")


class _Listener(BaseListener):
    """Turns coord events into SYSTEM messages for the services that asked."""

    def __init__(self, node: Cluster) -> None:
        self.node = node

    def on_member_join(self, info: NodeInfo) -> None:
        self.node._member_event("join", info)

    def on_member_leave(self, info: NodeInfo) -> None:
        self.node._member_event("leave", info)

    def on_name_lost(self, name: str, handle: int) -> None:
        self.node._system_to(handle, "name-lost", (name,))

    def on_config(self, key: str, value: Any) -> None:
        for handle in self.node._config_watchers.get(key, set()).copy():
            self.node._system_to(handle, "config", (key, value))

    def on_master(self, is_master: bool, epoch: int, master_id: int | None) -> None:
        self.node._master_changed(is_master, epoch, master_id)

    def on_health(self, health: Health) -> None:
        self.node._health = health


class Cluster:
    """Coordination half of ``Node``."""

    coord: Coordinator
    _push_ext: Callable[[int, tuple[int, int, int, Any]], None]
    _lock: threading.RLock

    def _init_cluster(self, coordinator: Coordinator) -> None:
        self.coord = coordinator
        self._health = Health.LOST
        self._config_watchers: dict[str, set[int]] = {}
        self._member_watchers: set[int] = set()
        self._global_holders: set[int] = set()  # handles with global names or groups
        self.master_epoch = 0
        self.master_id: int | None = None
        self._hosting_unique = False  # True while this node is master
        self._hosted_unique: dict[str, int] = {}  # unique key -> handle hosted here
        self._starting_unique: set[str] = set()
        coordinator.add_listener(_Listener(self))

    # -- plumbing ---------------------------------------------------------------------------

    def _system_to(self, handle: int, event: str, data: tuple[Any, ...]) -> None:
        self._push_ext(handle, (0, 0, SYSTEM, (event, data)))

    def _resume_with(
        self, handle: int, session: int
    ) -> Callable[[Any, BaseException | None], None]:
        def done(result: Any, exc: BaseException | None) -> None:
            if exc is None:
                self._push_ext(handle, (0, session, REPLY, result))
            else:
                self._push_ext(handle, (0, session, ERROR, _error(exc)))

        return done

    def _coord_op(self, svc: Service, fn: Callable[..., Any], *args: Any) -> Wait:
        """Run a blocking coord call on coord's threads; the service awaits the result."""
        svc._session = s = svc._session + 1
        try:
            self.coord.submit(fn, *args, callback=self._resume_with(svc.handle, s))
        except Exception as exc:
            self._push_ext(svc.handle, (0, s, ERROR, _error(exc)))
        return Wait(s)

    # -- names and groups ----------------------------------------------------------------------

    async def _register_global(self, svc: Service, name: str) -> None:
        with self._lock:
            self._global_holders.add(svc.handle)
        await self._coord_op(svc, self.coord.register_name, name, svc.handle)

    async def _unregister_global(self, svc: Service, name: str) -> None:
        await self._coord_op(svc, self.coord.unregister_name, name, svc.handle)

    async def _wait_global(self, svc: Service, name: str, wait: float) -> int | None:
        from coord.errors import NameNotFound

        try:
            handle: int = await self._coord_op(svc, self.coord.wait_name, name, wait)
        except NameNotFound:
            return None
        return handle

    async def _join_group(self, svc: Service, group: str) -> None:
        with self._lock:
            self._global_holders.add(svc.handle)
        await self._coord_op(svc, self.coord.join_group, group, svc.handle)

    async def _leave_group(self, svc: Service, group: str) -> None:
        await self._coord_op(svc, self.coord.leave_group, group, svc.handle)

    def _forget_global(self, handle: int) -> None:
        """A service ended: drop its global names and group memberships (in the background)."""
        with self._lock:
            if handle not in self._global_holders:
                return
            self._global_holders.discard(handle)
            for watchers in self._config_watchers.values():
                watchers.discard(handle)
            self._member_watchers.discard(handle)

        def ignore(result: Any, exc: BaseException | None) -> None:
            pass  # an expired session dropped them anyway; the cache catches up by watch

        try:
            self.coord.submit(self.coord.unregister_handle, handle, callback=ignore)
        except Exception:  # coord already stopped: its ephemeral nodes are gone with it
            return

    # -- config and membership -------------------------------------------------------------------

    def _config(self, svc: Service, key: str, default: Any) -> Any:
        with self._lock:
            first = key not in self._config_watchers
            self._config_watchers.setdefault(key, set()).add(svc.handle)
            self._global_holders.add(svc.handle)
        if first:
            self.coord.watch_config(key)
        return self.coord.config_get(key, default)

    def _watch_members(self, svc: Service) -> dict[int, NodeInfo]:
        with self._lock:
            self._member_watchers.add(svc.handle)
            self._global_holders.add(svc.handle)
        return self.coord.members()

    def _member_event(self, event: str, info: NodeInfo) -> None:
        for handle in self._member_watchers.copy():
            self._system_to(handle, "member", (event, info.node_id))
        self._member_changed(event, info)

    if TYPE_CHECKING:

        def _member_changed(self, event: str, info: NodeInfo) -> None:
            """The harbor's hook: peers come and go with membership (node/_remote.py)."""

    def _master_changed(self, is_master: bool, epoch: int, master_id: int | None) -> None:
        was = self._hosting_unique
        self.master_epoch = epoch
        self.master_id = master_id
        self._hosting_unique = is_master
        if is_master and not was:
            # A new term: host every cluster-unique service ever asked for.
            for key, spec in self.coord.config_list().items():
                if key.startswith(UNIQUE_PREFIX) and isinstance(spec, dict):
                    self._host_unique(key, spec.get("cls", ""), tuple(spec.get("args", ())))
        elif was and not is_master:
            # Stepped down (suspended or lost): stop acting at once.
            with self._lock:
                hosted = list(self._hosted_unique.values())
                self._hosted_unique.clear()
            for handle in hosted:
                self.kill(handle)  # type: ignore[attr-defined]

    # -- cluster-unique services ------------------------------------------------------------------

    async def _cluster_unique(self, svc: Service, path: str, args: tuple[Any, ...]) -> int:
        key = UNIQUE_PREFIX + path
        found = self.coord.query_name(key)
        if found is not None:
            return found
        if self.coord.config_get(key) is None:
            await self._coord_op(svc, self.coord.config_set, key, {"cls": path, "args": list(args)})
        if self._hosting_unique:
            self._host_unique(key, path, args)
        elif self.master_id is not None:
            # Ask the master's launcher to host it now (a failover would anyway).
            svc.send(f"{LAUNCHER_PREFIX}{self.master_id}", "host_unique", path, list(args))
        wait = max(self.call_timeout, 1.0)  # type: ignore[attr-defined]
        handle: int = await self._coord_op(svc, self.coord.wait_name, key, wait)
        return handle

    def _host_unique(self, key: str, path: str, args: tuple[Any, ...]) -> None:
        """Start the cluster-unique service ``path`` here (the master) and name it."""
        with self._lock:
            if key in self._hosted_unique or key in self._starting_unique:
                return
            self._starting_unique.add(key)

        def started(kind: int, payload: Any) -> None:
            with self._lock:
                self._starting_unique.discard(key)
            if kind != REPLY:
                self._log(0, "error", f"cluster-unique {path} failed to start: {payload[2]}")  # type: ignore[attr-defined]
                return
            handle = int(payload)
            with self._lock:
                self._hosted_unique[key] = handle
                self._global_holders.add(handle)
            self.coord.submit(self._claim_name, key, handle, callback=claimed)

        def claimed(result: Any, exc: BaseException | None) -> None:
            if exc is not None:
                self._log(0, "error", f"cluster-unique {path} not named: {exc}")  # type: ignore[attr-defined]

        s = self._new_ext_session(started)  # type: ignore[attr-defined]
        self._spawn(path, args, None, self._ext_handle, s)  # type: ignore[attr-defined]

    def _claim_name(self, key: str, handle: int) -> None:
        """On a coord thread: register ``key``; the old master's name may linger until its
        session ends, so retry while this node is still master."""
        from coord.errors import NameTaken

        deadline = time.monotonic() + 60
        while self._hosting_unique and time.monotonic() < deadline:
            try:
                self.coord.register_name(key, handle)
                return
            except NameTaken:
                time.sleep(0.1)

    # -- locks ----------------------------------------------------------------------------------

    def _lock_request(
        self, svc: Service, key: str, ttl: float, wait: float | None, backend: str
    ) -> tuple[LockRequest, Wait]:
        svc._session = s = svc._session + 1
        handle = svc.handle

        def acquired(result: Held | BaseException) -> None:
            if isinstance(result, BaseException):
                self._push_ext(handle, (0, s, ERROR, _error(result)))
            else:
                self._push_ext(handle, (0, s, REPLY, result))

        def lost(held: Held) -> None:
            self._system_to(handle, "lock-lost", (held.key, held.fence))

        request = self.coord.lock(key, ttl, wait, backend, acquired, lost)
        return request, Wait(s)


class Lock:
    """``async with self.lock(key, ttl=, wait=) as held:`` — a cluster-wide lock.

    ``held.fence`` grows with every acquisition; pass it to what you protect.
    Raises ``LockTimeout`` when not acquired within ``wait`` seconds. If the
    lease is lost while held, the service gets ``on_lock_lost(key, fence)``
    and ``held.valid`` turns False. A coroutine ended while waiting (its
    service exited) withdraws its request: no stale waiter remains.
    """

    __slots__ = ("backend", "held", "key", "request", "svc", "ttl", "wait")

    def __init__(
        self, svc: Service, key: str, ttl: float, wait: float | None, backend: str
    ) -> None:
        self.svc = svc
        self.key = key
        self.ttl = ttl
        self.wait = wait
        self.backend = backend
        self.held: Held | None = None
        self.request: LockRequest | None = None

    async def __aenter__(self) -> Held:
        node = self.svc._node
        self.request, waiter = node._lock_request(
            self.svc, self.key, self.ttl, self.wait, self.backend
        )
        try:
            held: Held = await waiter
        except BaseException:
            self.request.cancel()  # timed out, failed, or the coroutine was closed
            raise
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
        node = self.svc._node
        if exc_type is GeneratorExit:
            # The coroutine is being closed: it cannot suspend any more.
            node.coord.submit(held.release, callback=lambda r, e: None)
            return
        await node._coord_op(self.svc, held.release)
