"""Unique services: one per node (``uniqueservice``), or one per cluster.

Per node: the first request starts the service, later ones (also those
arriving while it starts) get the same handle; it is forgotten when it ends.

Per cluster: the spec (class path and arguments) is stored in cluster
config under ``@unique:<path>``; the master hosts every such service and
names it ``@unique:<path>`` globally, and a new master starts them again
after a failover. A node that is not master asks the master's launcher to
host it now, by path only: the master reads the spec from config, never
from the message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from coord.errors import NameTaken

from ._lifecycle import class_path
from .core.suspend import suspend
from .errors import CallTimeout
from .message import REPLY, SEND

if TYPE_CHECKING:
    from ._coord_link import CoordLink
    from ._lifecycle import Lifecycle
    from ._router import Router
    from .core.servicecore import ServiceCore

__all__ = ["LAUNCHER_PREFIX", "UNIQUE_PREFIX", "Uniques"]

UNIQUE_PREFIX = "@unique:"
LAUNCHER_PREFIX = "@launcher:"  # each node's .launcher, by node id


class Uniques:
    """Per-node and cluster-unique services."""

    def __init__(
        self, router: Router, lifecycle: Lifecycle, coord: CoordLink,
        kill: Callable[[int], object],
    ) -> None:
        self._router = router
        self._lifecycle = lifecycle
        self._coord = coord
        self._kill = kill
        self._lock = threading.Lock()
        # key -> handle once started, or the (reply_to, session) waiting while it starts
        self._local: dict[str, int | list[tuple[int, int]]] = {}
        self._hosted: dict[str, int] = {}  # cluster key -> handle hosted here (master)
        self._starting: set[str] = set()
        self._queries: dict[str, list[tuple[int, int]]] = {}  # queryservice(wait=) waiters
        coord.on_master(self._master_changed)

    # -- per node ---------------------------------------------------------------------------

    async def local(self, svc: ServiceCore, cls: Any, args: tuple[Any, ...]) -> int:
        """The one instance of ``cls`` on this node, started on first use."""
        handle: int = await suspend(svc, lambda s: self._request(cls, args, svc.handle, s))
        return handle

    async def query_local(self, svc: ServiceCore, cls: Any, wait: float | None) -> int | None:
        """The node-unique instance of ``cls`` if started (never starts one), waiting up
        to ``wait`` seconds for someone to start it."""
        key = class_path(cls)
        found = self._local.get(key)
        if isinstance(found, int) or not wait:
            return found if isinstance(found, int) else None
        waiting: list[tuple[int, int]] = []

        def start(s: int) -> None:
            waiting.append((svc.handle, s))
            with self._lock:
                self._queries.setdefault(key, []).append((svc.handle, s))

        def withdraw(s: int) -> None:
            with self._lock:
                queries = self._queries.get(key, [])
                if (svc.handle, s) in queries:
                    queries.remove((svc.handle, s))

        try:
            handle: int = await suspend(svc, start, wait, withdraw)
        except CallTimeout:
            return None
        return handle

    def _request(self, cls: Any, args: tuple[Any, ...], reply_to: int, session: int) -> None:
        key = class_path(cls)
        with self._lock:
            current = self._local.get(key)
            if isinstance(current, int):
                self._router.reply(0, reply_to, session, REPLY, current)
                return
            if current is not None:
                current.append((reply_to, session))
                return
            self._local[key] = [(reply_to, session)]
        s = self._router.ext_session(lambda kind, payload: self._local_done(key, kind, payload))
        self._lifecycle.spawn(cls, args, self._router.ext_handle, s)

    def _local_done(self, key: str, kind: int, payload: Any) -> None:
        with self._lock:
            waiters = self._local.pop(key, [])
            if kind == REPLY:
                self._local[key] = payload
                assert isinstance(waiters, list)
                waiters = waiters + self._queries.pop(key, [])
        assert isinstance(waiters, list)
        for reply_to, session in waiters:
            self._router.reply(0, reply_to, session, kind, payload)

    # -- per cluster -----------------------------------------------------------------------

    async def cluster(self, svc: ServiceCore, path: str, args: tuple[Any, ...]) -> int:
        """The one instance of ``path`` in the cluster, hosted by the master."""
        key = UNIQUE_PREFIX + path
        coord = self._coord.coord
        found = coord.query_name(key)
        if found is not None:
            return found
        if coord.config_get(key) is None:
            await self._coord.op(svc, coord.config_set, key, {"cls": path, "args": list(args)})
        if self._coord.is_master:
            self.host(path)
        elif self._coord.master_id is not None:
            # Ask the master's launcher to host it now (a failover would anyway).
            self._router.deliver(
                svc.handle, f"{LAUNCHER_PREFIX}{self._coord.master_id}", 0, SEND,
                ("host_unique", (path,)),
            )
        wait = max(self._lifecycle.call_timeout, 1.0)
        handle: int = await self._coord.op(svc, coord.wait_name, key, wait)
        return handle

    def host(self, path: str) -> bool:
        """On the master: start the cluster-unique service ``path`` from its stored spec.

        False when this node is not master or no spec for ``path`` is stored.
        """
        key = UNIQUE_PREFIX + path
        spec = self._coord.coord.config_get(key)
        if not self._coord.is_master or not isinstance(spec, dict):
            return False
        self._host(key, str(spec.get("cls", "")), tuple(spec.get("args", ())))
        return True

    def _host(self, key: str, path: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            if key in self._hosted or key in self._starting:
                return
            self._starting.add(key)

        def started(kind: int, payload: Any) -> None:
            with self._lock:
                self._starting.discard(key)
            if kind != REPLY:
                text = f"cluster-unique {path} failed to start: {payload[2]}"
                self._lifecycle.log(0, "error", text)
                return
            handle = int(payload)
            with self._lock:
                self._hosted[key] = handle
            self._coord.hold(handle)
            self._coord.coord.submit(self._claim_name, key, handle, callback=claimed)

        def claimed(result: Any, exc: BaseException | None) -> None:
            if exc is not None:
                self._lifecycle.log(0, "error", f"cluster-unique {path} not named: {exc}")

        s = self._router.ext_session(started)
        self._lifecycle.spawn(path, args, self._router.ext_handle, s)

    def _claim_name(self, key: str, handle: int) -> None:
        """On a coord thread: register ``key``; the old master's name may linger until its
        session ends, so retry while this node is still master."""
        deadline = time.monotonic() + 60
        while self._coord.is_master and time.monotonic() < deadline:
            try:
                self._coord.coord.register_name(key, handle)
                return
            except NameTaken:
                time.sleep(0.1)

    def _master_changed(self, is_master: bool, was: bool) -> None:
        if is_master and not was:
            # A new term: host every cluster-unique service ever asked for.
            for key, spec in self._coord.coord.config_list().items():
                if key.startswith(UNIQUE_PREFIX) and isinstance(spec, dict):
                    self._host(key, str(spec.get("cls", "")), tuple(spec.get("args", ())))
        elif was and not is_master:
            # Stepped down (suspended or lost): stop acting at once.
            with self._lock:
                hosted = list(self._hosted.values())
                self._hosted.clear()
            for handle in hosted:
                self._kill(handle)

    def forget(self, handle: int) -> None:
        """A service ended: it is no longer anyone's unique instance."""
        with self._lock:
            for key, value in list(self._local.items()):
                if value == handle:
                    del self._local[key]
            for key, value in list(self._hosted.items()):
                if value == handle:
                    del self._hosted[key]
