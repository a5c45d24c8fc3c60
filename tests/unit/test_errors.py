"""Every failure path of a call or a message has a typed error or a counted drop."""

from __future__ import annotations

import threading
import time

import pytest

from node import (
    CallError,
    CallTimeout,
    Node,
    Service,
    ServiceExited,
    ServiceNotFound,
    ServiceStartError,
    expose,
)
from tests.conftest import wait_for


class Faulty(Service):
    def on_start(self) -> None:
        self.served = 0

    @expose
    def boom(self):
        raise ValueError("bad value 42")

    @expose
    async def boom_later(self):
        await self.sleep(0.001)
        raise KeyError("gone")

    @expose
    def ok(self):
        self.served += 1
        return self.served

    @expose
    async def hang(self):
        await self.sleep(3600)

    @expose
    async def slow(self, delay, value):
        await self.sleep(delay)
        return value

    @expose
    def busy(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return "busy done"

    @expose
    def quit(self):
        self.exit()


class Client(Service):
    @expose
    async def do_call(self, dest, method, *args, timeout=None):
        try:
            return ("ok", await self.call(dest, method, *args, timeout=timeout))
        except Exception as exc:
            return ("err", type(exc).__name__, str(exc))

    @expose
    async def two_calls(self, dest):
        first = None
        try:
            await self.call(dest, "slow", 0.2, "late", timeout=0.05)
        except CallTimeout:
            first = "timed out"
        second = await self.call(dest, "slow", 0.3, "second", timeout=5)
        return first, second


def test_handler_raises_gives_call_error_and_service_keeps_serving(node: Node) -> None:
    h = node.newservice(Faulty)
    with pytest.raises(CallError) as info:
        node.call(h, "boom")
    err = info.value
    assert err.remote_type == "ValueError"
    assert err.remote_message == "bad value 42"
    assert "raise ValueError" in err.remote_traceback
    with pytest.raises(CallError) as info2:
        node.call(h, "boom_later")
    assert info2.value.remote_type == "KeyError"
    assert node.call(h, "ok") == 1


def test_unknown_method_is_no_handler(node: Node) -> None:
    h = node.newservice(Faulty)
    with pytest.raises(CallError, match="no handler 'missing'"):
        node.call(h, "missing")
    node.send(h, "missing")
    wait_for(lambda: node.stats()["drops"].get("no-handler") == 1)


def test_unknown_destination_fails_at_once(node: Node) -> None:
    c = node.newservice(Client)
    t0 = time.monotonic()
    with pytest.raises(ServiceNotFound):
        node.call(c + 1000, "ok")
    with pytest.raises(ServiceNotFound):
        node.call(".no-such-name", "ok")
    assert node.call(c, "do_call", c + 1000, "ok")[1] == "ServiceNotFound"
    assert time.monotonic() - t0 < 5


def test_pending_calls_fail_when_destination_exits(node: Node) -> None:
    h = node.newservice(Faulty)
    results: list = []

    def caller() -> None:
        try:
            node.call(h, "hang", timeout=30)
        except Exception as exc:
            results.append(type(exc))

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    # Three "hang" handlers suspended in sleep(): the service is waiting on three sessions.
    wait_for(lambda: next(s for s in node.services() if s["handle"] == h)["pending_calls"] == 3)
    with pytest.raises(ServiceExited):
        node.call(h, "quit")
    for t in threads:
        t.join(10)
    assert results == [ServiceExited] * 3


def test_pending_calls_fail_when_destination_is_killed(node: Node) -> None:
    h = node.newservice(Faulty)
    c = node.newservice(Client)
    out: list = []
    # One call suspended inside the handler, one queued behind a busy handler.
    t1 = threading.Thread(target=lambda: out.append(node.call(c, "do_call", h, "hang")))
    t1.start()
    time.sleep(0.1)
    t2 = threading.Thread(target=lambda: out.append(node.call(c, "do_call", h, "busy", 0.3)))
    t2.start()
    t3 = threading.Thread(target=lambda: out.append(node.call(c, "do_call", h, "ok")))
    time.sleep(0.05)
    t3.start()
    time.sleep(0.05)
    node.kill(h)
    for t in (t1, t2, t3):
        t.join(10)
    kinds = sorted(r[1] if r[0] == "err" else r[0] for r in out)
    # "busy" was already running: it completes; the rest fail with ServiceExited.
    assert kinds == ["ServiceExited", "ServiceExited", "ok"]


def test_call_timeout_and_late_reply_is_dropped(node: Node) -> None:
    h = node.newservice(Faulty)
    c = node.newservice(Client)
    first, second = node.call(c, "two_calls", h)
    assert first == "timed out"
    assert second == "second"  # not "late", which arrived meanwhile and was dropped
    wait_for(lambda: node.stats()["drops"].get("late-reply", 0) >= 1)
    with pytest.raises(CallTimeout):
        node.call(h, "hang", timeout=0.05)


class BadStart(Service):
    def on_start(self, how: str) -> None:
        if how == "raise":
            raise RuntimeError("cannot start")

    @expose
    def ok(self):
        return True


class BadAsyncStart(Service):
    async def on_start(self) -> None:
        await self.sleep(0.01)
        raise OSError("late failure")


def test_failed_on_start_leaves_nothing(node: Node) -> None:
    before = len(node.services())
    with pytest.raises(ServiceStartError) as info:
        node.newservice(BadStart, "raise", name=".bad")
    assert info.value.remote_type == "RuntimeError"
    assert "cannot start" in info.value.remote_message
    assert "raise RuntimeError" in info.value.remote_traceback
    with pytest.raises(ServiceStartError, match="late failure"):
        node.newservice(BadAsyncStart)
    assert len(node.services()) == before
    assert node.newservice(BadStart, "fine", name=".bad")  # the name was freed


def test_messages_to_an_exited_service(node: Node) -> None:
    h = node.newservice(Faulty)
    node.kill(h)
    wait_for(lambda: h not in [s["handle"] for s in node.services()])
    drops = node.stats()["drops"].get("dead-service", 0)
    node.send(h, "ok")
    assert node.stats()["drops"]["dead-service"] == drops + 1
    with pytest.raises(ServiceNotFound):
        node.call(h, "ok")


def test_bad_arguments_are_a_call_error(node: Node) -> None:
    h = node.newservice(Faulty)
    with pytest.raises(CallError) as info:
        node.call(h, "slow")  # missing arguments to an async handler
    assert info.value.remote_type == "TypeError"
    with pytest.raises(CallError):
        node.call(h, "ok", 1, 2, 3)


class AwaitsForeign(Service):
    @expose
    async def bad(self):
        import asyncio

        await asyncio.sleep(0)


def test_foreign_awaitable_is_refused(node: Node) -> None:
    h = node.newservice(AwaitsForeign)
    with pytest.raises(CallError) as info:
        node.call(h, "bad")
    assert info.value.remote_type == "TypeError"
    assert "cannot await" in info.value.remote_message


def test_blocking_api_refused_on_a_worker(node: Node) -> None:
    class Nested(Service):
        @expose
        def nested(self):
            return node.call(self.handle, "nested")

    h = node.newservice(Nested)
    with pytest.raises(CallError, match="from a worker"):
        node.call(h, "nested")


def test_exposing_a_service_api_name_is_refused() -> None:
    with pytest.raises(TypeError, match="hide the Service API"):

        class Shadow(Service):
            @expose
            def call(self):
                return None
