"""Cluster config in ZooKeeper: ``config/<key>`` holds a JSON value, watched by every node."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError

from coord._runtime import SerialWorker, Timer, log
from coord._zkutil import Items, WatchedDir, zk_errors

__all__ = ["ZkConfig"]


class ZkConfig:
    """The config cache of one ZooKeeper coordinator, and writes to it."""

    def __init__(
        self,
        client: Any,
        root: str,
        worker: SerialWorker,
        emit: Callable[..., None],
        timer: Timer,
    ) -> None:
        self._client = client
        self._path = f"{root}/config"
        self._emit = emit
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._watched: set[str] = set()
        self.dir = WatchedDir(client, self._path, worker, True, self._changed, timer)

    def _changed(self, old: Items, new: Items) -> None:
        values: dict[str, Any] = {}
        for key, data in new.items():
            try:
                values[key] = json.loads(data or b"null")
            except ValueError:
                log.warning("coord: config %r is not JSON", key)
        with self._lock:
            self._values = values
            watched = set(self._watched)
        for key in watched:
            if old.get(key) != new.get(key):
                self._emit("on_config", key, values.get(key))

    def get(self, key: str, default: Any = None) -> Any:
        """A copy of the cached value of ``key``, else ``default``."""
        with self._lock:
            return json.loads(json.dumps(self._values[key])) if key in self._values else default

    def set(self, key: str, data: bytes, check: Callable[[], None]) -> None:
        """Store JSON ``data`` under ``key`` (blocking; ``check`` runs first)."""
        path = f"{self._path}/{key}"
        check()
        with zk_errors(f"config_set({key!r})"):
            try:
                self._client.set(path, data)
            except NoNodeError:
                try:
                    self._client.create(path, data)
                except NodeExistsError:
                    self._client.set(path, data)
        with self._lock:
            self._values[key] = json.loads(data)

    def list(self) -> dict[str, Any]:
        """A copy of every cached key and value."""
        with self._lock:
            return json.loads(json.dumps(self._values))  # type: ignore[no-any-return]

    def watch(self, key: str) -> None:
        """Emit ``on_config`` whenever ``key`` changes."""
        with self._lock:
            self._watched.add(key)
