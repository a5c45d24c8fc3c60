"""Service-facing coordination scenarios, run on the embedded backend (unit) and on
real ZooKeeper + Redis (integration). Each takes a started node."""

from __future__ import annotations

import threading
import time

import pytest

from node import CallError, LockTimeout, NameTaken, Node, Service, expose, group
from tests.conftest import wait_for


class Member(Service):
    async def on_start(self, name=None, group_name=None) -> None:
        self.events: list = []
        if name:
            await self.register(name)
        if group_name:
            await self.join_group(group_name)

    @expose
    def whoami(self):
        return self.handle

    @expose
    async def reg(self, name):
        await self.register(name)

    @expose
    async def unreg(self, name):
        await self.unregister(name)

    @expose
    async def lookup(self, name, wait=None):
        return await self.query(name, wait=wait)

    @expose
    async def leave(self, name):
        await self.leave_group(name)

    @expose
    async def route(self, group_name, key):
        return await self.call(group(group_name, key=key), "whoami")

    @expose
    def read_config(self, key):
        return self.config(key, "default")

    @expose
    async def write_config(self, key, value):
        await self.set_config(key, value)

    def on_config(self, key, value):
        self.events.append(("config", key, value))

    @expose
    async def unique(self, path):
        return await self.uniqueservice(path, cluster=True)

    @expose
    def get_events(self):
        return list(self.events)


def global_names(node: Node, prefix: str) -> None:
    a = node.newservice(Member, f"{prefix}lobby")
    assert node.call(f"{prefix}lobby", "whoami") == a
    b = node.newservice(Member)
    with pytest.raises(CallError) as info:
        node.call(b, "reg", f"{prefix}lobby")  # register() raised NameTaken in the handler
    assert info.value.remote_type == NameTaken.__name__
    assert node.call(b, "lookup", f"{prefix}lobby") == a
    node.kill(a)
    wait_for(lambda: node.call(b, "lookup", f"{prefix}lobby") is None, timeout=20)
    node.call(b, "reg", f"{prefix}lobby")
    assert node.call(f"{prefix}lobby", "whoami") == b
    node.call(b, "unreg", f"{prefix}lobby")
    wait_for(lambda: node.call(b, "lookup", f"{prefix}lobby") is None, timeout=20)


def query_waits_for_global_name(node: Node, prefix: str) -> None:
    b = node.newservice(Member)
    out: list = []
    t = threading.Thread(target=lambda: out.append(node.call(b, "lookup", f"{prefix}later", 10)))
    t.start()
    time.sleep(0.1)
    late = node.newservice(Member, f"{prefix}later")
    t.join(20)
    assert out == [late]
    assert node.call(b, "lookup", f"{prefix}never", 0.1) is None


def groups_route_by_key(node: Node, prefix: str) -> None:
    members = [node.newservice(Member, None, f"{prefix}rooms") for _ in range(4)]
    c = node.newservice(Member)
    wait_for(lambda: len({node.call(c, "route", f"{prefix}rooms", k) for k in range(64)}) == 4,
             timeout=20)
    owners = {k: node.call(c, "route", f"{prefix}rooms", k) for k in range(200)}
    assert set(owners.values()) == set(members)
    assert all(node.call(c, "route", f"{prefix}rooms", k) == owners[k] for k in range(200))
    node.call(members[0], "leave", f"{prefix}rooms")
    wait_for(lambda: members[0] not in
             {node.call(c, "route", f"{prefix}rooms", k) for k in range(200)}, timeout=20)
    moved = [k for k in range(200) if node.call(c, "route", f"{prefix}rooms", k) != owners[k]]
    assert set(moved) == {k for k in range(200) if owners[k] == members[0]}


def config_change_notices(node: Node, prefix: str) -> None:
    a = node.newservice(Member)
    assert node.call(a, "read_config", f"{prefix}motd") == "default"
    node.call(a, "write_config", f"{prefix}motd", {"text": "hi"})
    wait_for(lambda: ("config", f"{prefix}motd", {"text": "hi"}) in node.call(a, "get_events"),
             timeout=20)
    assert node.call(a, "read_config", f"{prefix}motd") == {"text": "hi"}


class Locker(Service):
    def on_start(self) -> None:
        self.log_: list = []
        self.lost: list = []

    @expose
    async def hold(self, key, seconds, backend="redis", wait=None):
        async with self.lock(key, ttl=5, wait=wait, backend=backend) as held:
            self.log_.append(("enter", held.fence, time.monotonic()))
            await self.sleep(seconds)
            self.log_.append(("exit", held.fence, time.monotonic()))
            return held.fence

    @expose
    async def try_hold(self, key, wait, backend="redis"):
        try:
            async with self.lock(key, ttl=5, wait=wait, backend=backend):
                return "acquired"
        except LockTimeout:
            return "timeout"

    @expose
    def get_log(self):
        return list(self.log_)

    def on_lock_lost(self, key, fence):
        self.lost.append((key, fence))


def locks_serialize_with_fences(node: Node, prefix: str, backend: str) -> None:
    lockers = [node.newservice(Locker) for _ in range(4)]
    fences: list = []
    threads = [threading.Thread(target=lambda h=h: fences.append(
        node.call(h, "hold", f"{prefix}k", 0.05, backend, timeout=60))) for h in lockers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(fences) == 4
    events = sorted((e for h in lockers for e in node.call(h, "get_log")), key=lambda e: e[2])
    # No two critical sections overlap and fences grow in entry order.
    assert [e[0] for e in events] == ["enter", "exit"] * 4
    entered = [e[1] for e in events if e[0] == "enter"]
    assert entered == sorted(entered) and len(set(entered)) == 4


def lock_wait_timeout_and_killed_waiter(node: Node, prefix: str, backend: str) -> None:
    holder = node.newservice(Locker)
    t = threading.Thread(target=lambda: node.call(holder, "hold", f"{prefix}t", 1.0, backend))
    t.start()
    wait_for(lambda: node.call(holder, "get_log"))
    other = node.newservice(Locker)
    assert node.call(other, "try_hold", f"{prefix}t", 0.1, backend) == "timeout"
    # A waiter killed while waiting leaves no stale entry: the next one gets the lock.
    doomed = node.newservice(Locker)
    node.send(doomed, "hold", f"{prefix}t", 0, backend)
    time.sleep(0.1)
    node.kill(doomed)
    t.join(10)
    assert node.call(other, "try_hold", f"{prefix}t", 10, backend) == "acquired"


def cluster_unique_service(node: Node, prefix: str) -> None:
    callers = [node.newservice(Member) for _ in range(3)]
    out: list = []
    threads = [threading.Thread(target=lambda c=c: out.append(
        node.call(c, "unique", "tests.coord_scenarios:Member"))) for c in callers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(out) == 3
    assert len(set(out)) == 1
    assert node.call(out[0], "whoami") == out[0]
