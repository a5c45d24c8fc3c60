"""Helpers shared by the coord integration tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import coord


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``cond`` until truthy (generous timeouts: CI machines are slow)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Recorder(coord.BaseListener):
    """Records every listener event as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def _add(self, *ev: Any) -> None:
        with self.lock:
            self.events.append(ev)

    def on_member_join(self, info: coord.NodeInfo) -> None:
        self._add("join", info.node_id, info.incarnation)

    def on_member_leave(self, info: coord.NodeInfo) -> None:
        self._add("leave", info.node_id, info.incarnation)

    def on_name_lost(self, name: str, handle: int) -> None:
        self._add("name_lost", name, handle)

    def on_config(self, key: str, value: Any) -> None:
        self._add("config", key, value)

    def on_master(self, is_master: bool, epoch: int, master_id: int | None) -> None:
        self._add("master", is_master, epoch, master_id)

    def on_health(self, health: coord.Health) -> None:
        self._add("health", health)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [e for e in self.events if e[0] == kind]


class LockWaiter:
    """Callbacks for ``Coordinator.lock`` that a test can wait on."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.lost = threading.Event()
        self.result: Any = None
        self.lost_held: Any = None

    def on_acquired(self, r: Any) -> None:
        self.result = r
        self.done.set()

    def on_lost(self, h: Any) -> None:
        self.lost_held = h
        self.lost.set()

    def wait(self, timeout: float = 20.0) -> Any:
        assert self.done.wait(timeout), "lock callback did not come"
        return self.result


def take(c: Any, key: str, backend: str, ttl: float = 3.0, wait: float | None = 20.0) -> Any:
    """Request a lock and return (request, waiter)."""
    w = LockWaiter()
    req = c.lock(key, ttl, wait, backend, w.on_acquired, w.on_lost)
    return req, w
