"""Helpers shared by the coord integration tests."""

from __future__ import annotations

import contextlib
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


class TcpProxy:
    """A loopback TCP proxy to a real server that a test can cut (``block``) and restore.

    While blocked, open connections are closed and new ones are accepted and closed at
    once: the client sees the server vanish while the server itself keeps running.
    """

    def __init__(self, target: str) -> None:
        import socket

        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: list[Any] = []
        self._blocked = False
        self._closed = False
        self._marker: bytes | None = None
        self._hold = False  # set by a cut: replies are dropped until unblock()
        self.cuts = 0  # connections cut by cut_after
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                if self._blocked or self._closed:
                    conn.close()
                    continue
            try:
                up = socket.create_connection(self._target, timeout=5)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._open += [conn, up]
            for a, b, upstream in ((conn, up, True), (up, conn, False)):
                threading.Thread(target=self._pipe, args=(a, b, upstream), daemon=True).start()

    def cut_after(self, marker: bytes) -> None:
        """Once a client request containing ``marker`` has reached the server, cut the
        connection before its reply gets back (the client cannot know whether it
        happened), then accept connections again after ``0.5`` s."""
        with self._lock:
            self._marker = marker

    def _pipe(self, src: Any, dst: Any, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    hit = upstream and self._marker is not None and self._marker in data
                    if hit:
                        self._marker = None
                        self._hold = True  # no reply may reach the client from now on
                    elif not upstream and self._hold:
                        return
                dst.sendall(data)
                if hit:
                    time.sleep(0.2)  # the server applies the request meanwhile
                    self.block()
                    self.cuts += 1
                    threading.Timer(0.5, self.unblock).start()
                    return
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()

    def block(self) -> None:
        """Close every proxied connection and refuse new ones."""
        import socket

        with self._lock:
            self._blocked = True
            conns, self._open = self._open, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def unblock(self) -> None:
        """Accept and forward connections again."""
        with self._lock:
            self._blocked = False
            self._hold = False

    def close(self) -> None:
        """Stop listening and close everything."""
        with self._lock:
            self._closed = True
        self.block()
        self._server.close()
