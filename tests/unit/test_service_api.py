"""The Service API on a standalone node: every verb DESIGN lists for issue 2."""

from __future__ import annotations

import threading
import time

import pytest

from node import CallError, NameTaken, Node, Service, ServiceStartError, expose
from tests.conftest import wait_for


class Echo(Service):
    def on_start(self, tag: str = "echo") -> None:
        self.tag = tag

    @expose
    def echo(self, value):
        return (self.tag, value)

    @expose
    async def echo_later(self, value, delay):
        await self.sleep(delay)
        return value

    def not_exposed(self):
        return "secret"


class Ping(Service):
    """A calls B, B calls A back while A is suspended: skynet's reentrancy."""

    @expose
    async def ping(self, peer, depth):
        if depth == 0:
            return [self.handle]
        return [self.handle, *await self.call(peer, "ping", self.handle, depth - 1)]


class Recorder(Service):
    def on_start(self) -> None:
        self.events: list = []

    @expose
    def record(self, item):
        self.events.append(item)

    @expose
    def get(self):
        return list(self.events)

    @expose
    def forking(self):
        self.fork(self.events.append, "fork")
        self.events.append("handler")

    @expose
    async def fork_on_suspend(self):
        self.fork(self.events.append, "fork")
        self.events.append("before")
        await self.sleep(0.01)
        self.events.append("after")

    @expose
    def arm(self, delay, item):
        return self.timeout(delay, self.events.append, item)

    @expose
    def disarm(self, timer_id):
        return self.cancel_timeout(timer_id)

    @expose
    def clock(self):
        return self.now()

    def on_down(self, handle, reason):
        self.events.append(("down", handle, reason))

    @expose
    def watch(self, handle):
        self.monitor(handle)

    @expose
    def unwatch(self, handle):
        self.demonitor(handle)


def test_plain_and_async_handlers(node: Node) -> None:
    h = node.newservice(Echo, "t")
    assert node.call(h, "echo", 1) == ("t", 1)
    assert node.call(h, "echo_later", "x", 0.01) == "x"


def test_not_exposed_method_is_no_handler(node: Node) -> None:
    h = node.newservice(Echo)
    with pytest.raises(CallError, match="no handler"):
        node.call(h, "not_exposed")
    with pytest.raises(CallError, match="no handler"):
        node.call(h, "on_start")


def test_reentrant_calls_complete(node: Node) -> None:
    a = node.newservice(Ping)
    b = node.newservice(Ping)
    # a -> b -> a -> b ...: each call lands on a service suspended in its own call.
    assert node.call(a, "ping", b, 6) == [a, b, a, b, a, b, a]


def test_send_is_ordered_and_one_way(node: Node) -> None:
    r = node.newservice(Recorder)
    for i in range(200):
        node.send(r, "record", i)
    assert node.call(r, "get") == list(range(200))


def test_fork_runs_after_handler_finishes_or_suspends(node: Node) -> None:
    r = node.newservice(Recorder)
    node.call(r, "forking")
    assert node.call(r, "get") == ["handler", "fork"]
    r2 = node.newservice(Recorder)
    node.call(r2, "fork_on_suspend")
    assert node.call(r2, "get") == ["before", "fork", "after"]


def test_timeout_callback_and_cancel(node: Node) -> None:
    r = node.newservice(Recorder)
    node.call(r, "arm", 0.02, "fired")
    keep = node.call(r, "arm", 0.05, "cancelled")
    assert node.call(r, "disarm", keep) is True
    wait_for(lambda: node.call(r, "get") == ["fired"])
    time.sleep(0.1)
    assert node.call(r, "get") == ["fired"]


def test_now_is_monotonic_seconds_since_start(node: Node) -> None:
    r = node.newservice(Recorder)
    t1 = node.call(r, "clock")
    time.sleep(0.02)
    t2 = node.call(r, "clock")
    assert 0 <= t1 < t2


class Spawner(Service):
    @expose
    async def spawn(self, path, *args):
        return await self.newservice(path, *args)

    @expose
    async def unique(self):
        return await self.uniqueservice(SlowStart)


class SlowStart(Service):
    starts = 0

    async def on_start(self) -> None:
        type(self).starts += 1
        await self.sleep(0.05)

    @expose
    def hi(self):
        return "hi"


def test_newservice_by_class_and_path(node: Node) -> None:
    s = node.newservice(Spawner)
    h = node.call(s, "spawn", "tests.unit.test_service_api:Echo", "by-path")
    assert node.call(h, "echo", 2) == ("by-path", 2)


def test_uniqueservice_starts_once_under_concurrency(node: Node) -> None:
    SlowStart.starts = 0
    spawners = [node.newservice(Spawner) for _ in range(5)]
    results: list[int] = []
    threads = [threading.Thread(target=lambda s=s: results.append(node.call(s, "unique")))
               for s in spawners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert SlowStart.starts == 1
    assert node.call(results[0], "hi") == "hi"


class Quitter(Service):
    @expose
    def quit(self):
        self.exit()
        raise AssertionError("exit returned")  # pragma: no cover


def test_exit_does_not_return(node: Node) -> None:
    q = node.newservice(Quitter)
    with pytest.raises(Exception) as info:
        node.call(q, "quit")
    assert type(info.value).__name__ == "ServiceExited"
    wait_for(lambda: q not in [s["handle"] for s in node.services()])


def test_kill_and_monitor_down_notice(node: Node) -> None:
    r = node.newservice(Recorder)
    e = node.newservice(Echo)
    node.call(r, "watch", e)
    assert node.kill(e) is True
    wait_for(lambda: node.call(r, "get") == [("down", e, "kill")])
    # Monitoring something that does not exist: an immediate "noproc" notice.
    node.call(r, "watch", e)
    wait_for(lambda: ("down", e, "noproc") in node.call(r, "get"))
    assert node.kill(e) is False


def test_demonitor(node: Node) -> None:
    r = node.newservice(Recorder)
    e = node.newservice(Echo)
    node.call(r, "watch", e)
    node.call(r, "unwatch", e)
    node.kill(e)
    time.sleep(0.05)
    assert node.call(r, "get") == []


class Named(Service):
    async def on_start(self, name: str) -> None:
        await self.register(name)

    @expose
    async def lookup(self, name, wait=None):
        return await self.query(name, wait=wait)

    @expose
    async def drop(self, name):
        await self.unregister(name)

    @expose
    def whoami(self):
        return self.handle


def test_local_names(node: Node) -> None:
    a = node.newservice(Named, ".alpha")
    assert node.call(".alpha", "whoami") == a
    with pytest.raises(ServiceStartError) as info:
        node.newservice(Named, ".alpha")  # register() in on_start raises
    assert info.value.remote_type == "NameTaken"
    with pytest.raises(NameTaken):
        node.newservice(Echo, name=".alpha")  # name= is checked before on_start
    assert node.call(".alpha", "whoami") == a
    assert node.call(a, "lookup", ".alpha") == a
    assert node.call(a, "lookup", ".nobody") is None
    node.call(a, "drop", ".alpha")
    assert node.call(a, "lookup", ".alpha") is None


def test_query_waits_for_a_name(node: Node) -> None:
    a = node.newservice(Named, ".waiter")
    result: list = []
    t = threading.Thread(target=lambda: result.append(node.call(a, "lookup", ".late", 5)))
    t.start()
    time.sleep(0.05)
    late = node.newservice(Named, ".late")
    t.join(10)
    assert result == [late]
    assert node.call(a, "lookup", ".never", 0.05) is None


def test_name_is_freed_when_service_exits(node: Node) -> None:
    a = node.newservice(Named, ".temp")
    node.kill(a)
    wait_for(lambda: node.call(node.newservice(Named, ".probe"), "lookup", ".temp") is None)
    b = node.newservice(Named, ".temp")
    assert node.call(".temp", "whoami") == b


class Account(Service):
    def on_start(self) -> None:
        self.balance = 0
        self.trace: list = []

    @expose
    async def deposit_unsafe(self, amount):
        balance = self.balance
        await self.sleep(0.005)
        self.balance = balance + amount

    @expose
    async def deposit(self, amount):
        async with self.critical():
            self.trace.append("enter")
            balance = self.balance
            await self.sleep(0.005)
            self.balance = balance + amount
            self.trace.append("exit")

    @expose
    async def nested(self):
        async with self.critical(), self.critical():
            return "reentrant"

    @expose
    def get(self):
        return self.balance, self.trace


def test_critical_serializes_coroutines(node: Node) -> None:
    a = node.newservice(Account)
    for _ in range(10):
        node.send(a, "deposit_unsafe", 1)
    time.sleep(0.2)
    assert node.call(a, "get")[0] < 10  # without critical() the updates race
    b = node.newservice(Account)
    for _ in range(10):
        node.send(b, "deposit", 1)
    wait_for(lambda: node.call(b, "get")[0] == 10)
    assert node.call(b, "get")[1] == ["enter", "exit"] * 10
    assert node.call(b, "nested") == "reentrant"


class Logs(Service):
    @expose
    def say(self, text):
        self.log(text, level="warning")


def test_log_writes_one_structured_line(node: Node, log_path) -> None:
    h = node.newservice(Logs)
    node.call(h, "say", "hello log")
    wait_for(lambda: "hello log" in log_path.read_text())
    line = next(x for x in log_path.read_text().splitlines() if "hello log" in x)
    stamp, node_field, handle, level, *text = line.split(" ")
    assert stamp.endswith("Z") and "T" in stamp
    assert node_field == "node=1"
    assert handle == f":{h:016x}"
    assert level == "WARNING"
    assert " ".join(text) == "hello log"


def test_launcher_lists_services(node: Node) -> None:
    h = node.newservice(Echo)
    listing = node.call(".launcher", "list")
    assert listing[f":{h:016x}"] == "Echo"
    assert "Logger" in listing.values()
    stats = {s["handle"]: s for s in node.call(".launcher", "stat")}
    assert stats[h]["state"] == "running"


def test_standalone_context_manager_stops() -> None:
    with Node.standalone(workers=1) as n:
        h = n.newservice(Echo)
        assert n.call(h, "echo", 1) == ("echo", 1)
    assert not [t for t in threading.enumerate() if t.name.startswith("skymesh")]
