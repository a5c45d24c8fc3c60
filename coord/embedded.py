"""The embedded backend: the whole :class:`~coord.api.Coordinator` in-process.

For a standalone node: one member (itself), names, groups, config with
change notices, always master with epoch 1, in-process locks (or Redis locks
when a Redis URL is given).

>>> c = EmbeddedCoordinator()
>>> c.start(None, "localhost", 1, {}).node_id
1
>>> c.register_name("lobby", 7); c.query_name("lobby")
7
>>> c.stop()
"""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

from coord._base import CoordBase
from coord._memlock import MemLocks
from coord.api import AcquiredCallback, Health, LockRequest, LostCallback, NodeInfo
from coord.errors import CoordUnavailable, NameNotFound, NameTaken

__all__ = ["EmbeddedCoordinator"]


class EmbeddedCoordinator(CoordBase):
    """In-process coordination for one standalone node."""

    def __init__(self, redis_url: str | None = None, cluster: str = "standalone") -> None:
        """Create; ``redis_url`` makes ``backend="redis"`` locks use Redis."""
        super().__init__("embedded", redis_url, cluster)
        self._cond = threading.Condition()
        self._names: dict[str, int] = {}
        self._groups: dict[str, set[int]] = {}
        self._config: dict[str, Any] = {}
        self._watched: set[str] = set()
        self._locks = MemLocks(self._notifier, self._timer)
        self._health = Health.LOST

    def start(
        self, node_id: int | None, host: str, pid: int, endpoints: dict[str, str]
    ) -> NodeInfo:
        """Become the only member (id 1 when ``node_id`` is None) and the master."""
        if self._stopped:
            raise CoordUnavailable("coordinator is stopped")
        self._info = NodeInfo(node_id or 1, time.time_ns(), host, pid, dict(endpoints))
        self._health = Health.CONNECTED
        self._emit("on_health", Health.CONNECTED)
        self._emit("on_member_join", self._info)
        self._emit("on_master", True, 1, self._info.node_id)
        return self._info

    def stop(self) -> None:
        """Report held locks lost and stop coord's threads. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._locks.close()
        self._health = Health.LOST
        self._stop_common()

    @property
    def health(self) -> Health:
        """CONNECTED between start and stop, else LOST."""
        return self._health

    def _check(self) -> None:
        if self._health is not Health.CONNECTED:
            raise CoordUnavailable("coordinator not started")

    def members(self) -> dict[int, NodeInfo]:
        """This node alone, once started."""
        info = self._info
        return {info.node_id: info} if info is not None and not self._stopped else {}

    def register_name(self, name: str, handle: int) -> None:
        """Bind ``name``; raises ``NameTaken`` if another handle has it."""
        self._check()
        with self._cond:
            held = self._names.get(name)
            if held is not None and held != handle:
                raise NameTaken(f"name {name!r} is held by {held:#x}")
            self._names[name] = handle
            self._cond.notify_all()

    def unregister_name(self, name: str, handle: int) -> None:
        """Drop ``name`` if ``handle`` holds it."""
        with self._cond:
            if self._names.get(name) == handle:
                del self._names[name]

    def unregister_handle(self, handle: int) -> None:
        """Drop every name and group membership of ``handle``."""
        with self._cond:
            for name in [n for n, h in self._names.items() if h == handle]:
                del self._names[name]
            left = []
            for group in list(self._groups):
                if handle in self._groups[group]:
                    left.append(group)
                self._groups[group].discard(handle)
                if not self._groups[group]:
                    del self._groups[group]
        for group in left:
            self._emit("on_group", group, [], [handle])

    def query_name(self, name: str) -> int | None:
        """The handle bound to ``name``, or None."""
        with self._cond:
            return self._names.get(name)

    def wait_name(self, name: str, timeout: float) -> int:
        """Block until ``name`` is bound; ``NameNotFound`` after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: name in self._names, timeout):
                raise NameNotFound(f"name {name!r} not registered within {timeout}s")
            return self._names[name]

    def names(self) -> dict[str, int]:
        """Every name and its handle."""
        with self._cond:
            return dict(self._names)

    def join_group(self, group: str, handle: int) -> None:
        """Add ``handle`` to ``group``."""
        self._check()
        with self._cond:
            members = self._groups.setdefault(group, set())
            new = handle not in members
            members.add(handle)
        if new:
            self._emit("on_group", group, [handle], [])

    def leave_group(self, group: str, handle: int) -> None:
        """Remove ``handle`` from ``group``."""
        with self._cond:
            members = self._groups.get(group)
            gone = members is not None and handle in members
            if members is not None:
                members.discard(handle)
                if not members:
                    del self._groups[group]
        if gone:
            self._emit("on_group", group, [], [handle])

    def group_members(self, group: str) -> list[int]:
        """Sorted handles in ``group``."""
        with self._cond:
            return sorted(self._groups.get(group, ()))

    def groups(self) -> dict[str, list[int]]:
        """Every non-empty group and its sorted members."""
        with self._cond:
            return {g: sorted(m) for g, m in self._groups.items()}

    def config_get(self, key: str, default: Any = None) -> Any:
        """A copy of config ``key``'s value, else ``default``."""
        with self._cond:
            return copy.deepcopy(self._config[key]) if key in self._config else default

    def config_set(self, key: str, value: Any) -> None:
        """Store ``value`` (must be JSON-serializable; ``TypeError`` otherwise)."""
        value = json.loads(json.dumps(value))
        with self._cond:
            changed = self._config.get(key, object()) != value
            self._config[key] = value
            notify = changed and key in self._watched
        if notify:
            self._emit("on_config", key, copy.deepcopy(value))

    def config_list(self) -> dict[str, Any]:
        """Every config key and value."""
        with self._cond:
            return copy.deepcopy(self._config)

    def watch_config(self, key: str) -> None:
        """Fire ``on_config`` whenever ``key`` changes."""
        with self._cond:
            self._watched.add(key)

    def is_master(self) -> bool:
        """True while started: a standalone node is always its own master."""
        return self._health is Health.CONNECTED

    def master(self) -> tuple[int | None, int]:
        """``(own node id, 1)`` while started."""
        info = self._info
        return (info.node_id if info is not None and not self._stopped else None, 1)

    def _own_lock(
        self, key: str, ttl: float, wait: float | None, on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """In-process lock."""
        return self._locks.lock(key, wait, on_acquired, on_lost)

    # A standalone node without Redis: "redis" locks are in-process locks too.
    _lock_without_redis = _own_lock
