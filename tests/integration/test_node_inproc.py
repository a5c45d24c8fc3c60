"""Two nodes in one process on the in-process harbor (``harbor.inproc``), with real
ZooKeeper membership: the node takes a transport, and the harbor link's rules
(pinned replies, refused kinds, withdrawn calls) are checked without sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harbor import InprocHub, InprocTransport
from node import CallError, Node, NodeDown, Service, expose, launchable
from node.message import REPLY, SOCKET, SYSTEM, TIMER
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


class Echo(Service):
    async def on_start(self, name: str | None = None) -> None:
        self.seen: list[Any] = []
        self.woken: list[Any] = []
        if name:
            await self.register(name)

    @expose
    def echo(self, x: Any) -> Any:
        self.seen.append(x)
        return x

    @expose
    def got(self) -> list[Any]:
        return list(self.seen)

    @expose
    async def nap(self, seconds: float) -> str:
        await self.sleep(seconds)
        self.woken.append(time.monotonic())
        return "rested"

    @expose
    def woke(self) -> int:
        return len(self.woken)

    @expose
    async def ask(self, dest: int, method: str, args: list[Any], timeout: float = 5) -> Any:
        return await self.call(dest, method, *args, timeout=timeout)

    def on_socket_data(self, sock_id: int, data: bytes) -> None:
        self.seen.append(("socket", data))


@launchable
class Placed(Echo):
    pass


class Spawner(Service):
    @expose
    async def place(self, cls: str, node: int, *args: Any) -> int:
        return await self.newservice(cls, *args, node=node)


class Pair:
    def __init__(self, hub: InprocHub, transports: dict[int, InprocTransport], a: Node, b: Node):
        self.hub, self.transports, self.a, self.b = hub, transports, a, b


@pytest.fixture
def pair(servers: dict[str, str], cluster: str, tmp_path) -> Iterator[Pair]:
    hub = InprocHub()
    transports: dict[int, InprocTransport] = {}

    def factory(node_id: int, inc: int, deliver: Any, pub: Any, down: Any) -> InprocTransport:
        t = InprocTransport(node_id, inc, deliver, pub, down, hub=hub)
        transports[node_id] = t
        return t

    nodes = []
    for i in (1, 2):
        n = Node(node_id=i, cluster=cluster, zk_hosts=servers["zk"], session_timeout=6.0,
                 transport=factory, log_file=str(tmp_path / f"log{i}"))
        n.start()
        nodes.append(n)
    a, b = nodes
    wait_for(lambda: set(a.members()) >= {1, 2} and set(b.members()) >= {1, 2})
    try:
        yield Pair(hub, transports, a, b)
    finally:
        for n in nodes:
            n.stop()


def test_calls_and_names_cross_the_inproc_harbor(pair: Pair) -> None:
    a, b = pair.a, pair.b
    eb = b.newservice(Echo, "inproc-echo")
    assert a.call(eb, "echo", [1, 2]) == [1, 2]
    wait_for(lambda: a.coord.query_name("inproc-echo") == eb)
    assert a.call("inproc-echo", "echo", "by name") == "by name"
    for i in range(100):
        a.send(eb, "echo", i)
    wait_for(lambda: len(b.call(eb, "got")) == 102)
    assert b.call(eb, "got")[2:] == list(range(100))  # order kept per pair
    ea = a.newservice(Echo)
    assert a.call(ea, "ask", eb, "echo", ["via a service"]) == "via a service"
    assert a.stats()["harbor"]["pending_calls"] == 0
    assert b.stats()["harbor"]["inbound_calls"] == 0


def test_a_forged_reply_does_not_wake_a_waiting_service(pair: Pair) -> None:
    a = pair.a
    sleeper = a.newservice(Echo)
    done: list[Any] = []
    threading.Thread(target=lambda: done.append(a.call(sleeper, "nap", 1.5)), daemon=True).start()
    time.sleep(0.2)
    # Node 2's transport is a member's; it answers sessions nobody asked it about.
    for session in range(1, 20):
        pair.transports[2].send(1, (sleeper, 0, session, REPLY, "forged"))
    wait_for(lambda: a.stats()["drops"].get("unexpected-reply", 0) >= 19)
    assert a.call(sleeper, "woke") == 0 and not done
    wait_for(lambda: done == ["rested"], timeout=5)


def test_lifecycle_timer_and_socket_kinds_are_refused_from_the_wire(pair: Pair) -> None:
    a = pair.a
    target = a.newservice(Echo)
    t2 = pair.transports[2]
    t2.send(1, (target, 0, 0, SYSTEM, ["start", ["evil"]]))
    t2.send(1, (target, 0, 0, SYSTEM, ["stop", None]))
    t2.send(1, (target, 0, 0, TIMER, None))
    t2.send(1, (target, 0, 0, SOCKET, ["data", 1, b"x"]))
    wait_for(lambda: a.stats()["drops"].get("remote-kind-refused", 0) >= 2
             and a.stats()["drops"].get("remote-event-refused", 0) >= 2)
    assert a.call(target, "got") == []  # nothing reached on_socket_data, still running
    assert a.kill(target)  # kill is a control event a member may send; it still works


def test_timed_out_remote_calls_leave_nothing_pending(pair: Pair) -> None:
    a, b = pair.a, pair.b
    eb = b.newservice(Echo)
    ea = a.newservice(Echo)
    for _ in range(5):
        with pytest.raises(CallError) as info:
            a.call(ea, "ask", eb, "nap", [1.0], 0.05)
        assert info.value.remote_type == "CallTimeout"
    assert a.stats()["harbor"]["pending_calls"] == 0
    wait_for(lambda: b.call(eb, "woke") == 5)  # the late replies were refused, not delivered
    wait_for(lambda: a.stats()["drops"].get("unexpected-reply", 0) >= 5)


def test_a_node_lost_from_the_hub_fails_pending_calls(pair: Pair) -> None:
    a, b = pair.a, pair.b
    eb = b.newservice(Echo)
    ea = a.newservice(Echo)
    result: list[Any] = []

    def ask() -> None:
        try:
            result.append(a.call(ea, "ask", eb, "nap", [30], 60, timeout=60))
        except Exception as exc:
            result.append(exc)

    threading.Thread(target=ask, daemon=True).start()
    wait_for(lambda: a.stats()["harbor"]["pending_calls"] == 1)
    pair.hub.kill(2)
    wait_for(lambda: bool(result), timeout=5)
    assert isinstance(result[0], Exception) and "NodeDown" in repr(result[0])
    with pytest.raises(NodeDown):
        a.call(eb, "echo", 1)


def test_newservice_on_another_node_starts_only_allowed_classes(pair: Pair) -> None:
    a, b = pair.a, pair.b
    spawner = a.newservice(Spawner)
    placed = a.call(spawner, "place", f"{__name__}:Placed", 2)
    assert placed >> 32 == 2 and a.call(placed, "echo", "there") == "there"
    assert b.service(placed) is not None
    # Not launchable, not in b's config: refused before anything is imported.
    for path in (f"{__name__}:Echo", "os:system", "no_such_module_xyz:Evil"):
        with pytest.raises(CallError) as info:
            a.call(spawner, "place", path, 2)
        assert info.value.remote_type == "CallError" and "PermissionError" in str(info.value)
    import sys

    assert "no_such_module_xyz" not in sys.modules
    b.allow(f"{__name__}:Echo")  # what a config `services` entry does
    assert a.call(spawner, "place", f"{__name__}:Echo", 2) >> 32 == 2


class Boom(Service):
    @expose
    def boom(self) -> None:
        raise ValueError("secret path /srv/app.py")


def test_remote_callers_get_no_traceback_unless_configured(pair: Pair) -> None:
    a, b = pair.a, pair.b
    boom = b.newservice(Boom)
    with pytest.raises(CallError) as remote:
        a.call(boom, "boom")
    assert remote.value.remote_type == "ValueError" and "secret path" in str(remote.value)
    assert remote.value.remote_traceback == ""
    with pytest.raises(CallError) as local:
        b.call(boom, "boom")
    assert "in boom" in local.value.remote_traceback  # local callers keep it


def test_a_supervisor_allowed_by_config_alone_is_not_a_code_loading_gadget(pair: Pair) -> None:
    a, b = pair.a, pair.b
    spawner = a.newservice(Spawner)
    b.allow("node.supervisor:Supervisor")  # as a config `services` entry would
    with pytest.raises(CallError) as info:
        a.call(spawner, "place", "node.supervisor:Supervisor", 2,
               [{"cls": "os:system", "args": ["true"]}])
    assert "PermissionError" in str(info.value) and "supervisor" in str(info.value)


class Spammer(Service):
    @expose
    async def spam(self, dest: int, seconds: float) -> int:
        sent, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            self.send(dest, "echo", sent)
            sent += 1
            await self.sleep(0.005)
        return sent


def test_isolate_refuses_cluster_traffic_while_the_session_is_in_doubt(
    servers: dict[str, str], cluster: str, tmp_path, faults
) -> None:
    hub = InprocHub()

    def factory(node_id: int, inc: int, deliver: Any, pub: Any, down: Any) -> InprocTransport:
        return InprocTransport(node_id, inc, deliver, pub, down, hub=hub)

    a = Node(node_id=1, cluster=cluster, zk_hosts=servers["zk"], session_timeout=10.0,
             transport=factory, log_file=str(tmp_path / "a"), on_session_lost="isolate")
    b = Node(node_id=2, cluster=cluster, zk_hosts=servers["zk"], session_timeout=10.0,
             transport=factory, log_file=str(tmp_path / "b"))
    a.start()
    b.start()
    try:
        wait_for(lambda: set(a.members()) >= {1, 2} and set(b.members()) >= {1, 2})
        target, echo_b = a.newservice(Echo), b.newservice(Echo)
        spammer = b.newservice(Spammer)
        # Spams until the nodes stop: a slow ZooKeeper restart (late in the suite) once
        # outlasted a 20 s spam, and "served again" below then waited for nothing.
        b.send(spammer, "spam", target, 600.0)
        wait_for(lambda: len(a.call(target, "got")) > 10)
        faults.stop_zk()
        try:
            # Suspended: node 1 drops what node 2 sends (counted) and cannot call out.
            wait_for(lambda: a.stats()["drops"].get("isolated", 0) > 5, timeout=20)
            with pytest.raises(NodeDown, match="isolated"):
                a.call(echo_b, "echo", 1)
        finally:
            faults.start_zk()
        wait_for(lambda: a.health.value == "connected", timeout=30)
        seen = len(a.call(target, "got"))
        wait_for(lambda: len(a.call(target, "got")) > seen + 10, timeout=20)  # served again
        assert a.call(echo_b, "echo", 2) == 2
    finally:
        a.stop()
        b.stop()
