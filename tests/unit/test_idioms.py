"""skynet's coroutine idioms: deferred replies, wait/wakeup, parallel calls, offload,
queryservice, is_master, leader, group members (issue 12)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from node import (
    CallError,
    Node,
    Service,
    ServiceExited,
    expose,
)
from tests.conftest import wait_for


class Poll(Service):
    """A long poll: callers wait until someone publishes."""

    def on_start(self) -> None:
        self.waiting: list[Any] = []
        self.kept: Any = None

    @expose
    def next_event(self) -> None:
        self.waiting.append(self.response())

    @expose
    async def next_event_async(self) -> None:
        await self.sleep(0)
        self.waiting.append(self.response())

    @expose
    def emit(self, event: Any) -> int:
        n = len(self.waiting)
        for reply in self.waiting:
            reply(event)
        self.waiting.clear()
        return n

    @expose
    def fail_all(self, text: str) -> None:
        for reply in self.waiting:
            reply.error(ValueError(text))
        self.waiting.clear()

    @expose
    def answer_twice(self) -> str:
        reply = self.response()
        reply("first")
        try:
            reply("second")
        except RuntimeError:
            self.kept = "second use refused"
        return "ignored: the responder answers"

    @expose
    def drop(self) -> None:
        self.response()  # dropped at once

    @expose
    def outcome(self) -> Any:
        return self.kept

    @expose
    def respond_in_send(self) -> None:
        try:
            self.response()
        except RuntimeError as exc:
            self.kept = str(exc)

    @expose
    def quit(self) -> None:
        self.exit()


def _in_thread(fn: Any) -> list[Any]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)

    threading.Thread(target=run, daemon=True).start()
    return out


def test_deferred_replies_answer_later(node: Node) -> None:
    p = node.newservice(Poll)
    outs = [_in_thread(lambda: node.call(p, "next_event")) for _ in range(3)]
    outs.append(_in_thread(lambda: node.call(p, "next_event_async")))
    wait_for(lambda: _waiting(node, p) == 4)
    assert all(not o for o in outs)
    assert node.call(p, "emit", {"tick": 1}) == 4
    wait_for(lambda: all(outs))
    assert [o[0] for o in outs] == [{"tick": 1}] * 4


def _waiting(node: Node, p: int) -> int:
    svc = node.service(p)
    return len(svc.waiting) if svc is not None else -1  # type: ignore[attr-defined]


def test_responder_errors_once_drop_and_exit(node: Node) -> None:
    p = node.newservice(Poll)
    out = _in_thread(lambda: node.call(p, "next_event"))
    wait_for(lambda: _waiting(node, p) == 1)
    node.call(p, "fail_all", "no events today")
    wait_for(lambda: bool(out))
    assert isinstance(out[0], CallError) and out[0].remote_type == "ValueError"
    assert node.call(p, "answer_twice") == "first"
    assert node.call(p, "outcome") == "second use refused"
    with pytest.raises(CallError) as info:  # dropped unused: an error, not a hang
        node.call(p, "drop", timeout=5)
    assert info.value.remote_type == "ResponderDropped"
    node.send(p, "respond_in_send")
    wait_for(lambda: node.call(p, "outcome") == "response() needs a call being handled")
    out = _in_thread(lambda: node.call(p, "next_event", timeout=5))
    wait_for(lambda: _waiting(node, p) == 1)
    node.send(p, "quit")
    wait_for(lambda: bool(out))
    assert isinstance(out[0], ServiceExited)


class Waiter(Service):
    @expose
    async def wait_for(self, token: Any, timeout: float | None = None) -> Any:
        return await self.wait(token, timeout)

    @expose
    def wake(self, token: Any, value: Any = None) -> bool:
        return self.wakeup(token, value)

    @expose
    async def double(self, token: Any) -> str:
        self.fork(self._second, token)
        return await self.wait(token, 2)

    async def _second(self, token: Any) -> None:
        try:
            await self.wait(token)
        except RuntimeError as exc:
            self.wakeup(token, f"refused: {exc}")


def test_wait_and_wakeup(node: Node) -> None:
    w = node.newservice(Waiter)
    out = _in_thread(lambda: node.call(w, "wait_for", ("room", 7)))
    time.sleep(0.05)
    assert not out
    assert node.call(w, "wake", ("room", 7), "go") is True
    wait_for(lambda: out == ["go"])
    assert node.call(w, "wake", ("room", 7)) is False  # nobody waits: a no-op
    with pytest.raises(CallError) as info:
        node.call(w, "wait_for", "never", 0.05)
    assert info.value.remote_type == "CallTimeout"
    assert node.call(w, "wake", "never") is False  # the timed-out waiter withdrew
    assert node.call(w, "double", "t").startswith("refused: a coroutine already waits")


class Slow(Service):
    @expose
    async def after(self, seconds: float, value: Any) -> Any:
        await self.sleep(seconds)
        return value

    @expose
    def boom(self) -> None:
        raise KeyError("boom")


class Fan(Service):
    @expose
    async def gather_all(self, calls: list[list[Any]], timeout: float | None = None) -> list[str]:
        results = await self.gather(*(tuple(c) for c in calls), timeout=timeout)
        return [r if not isinstance(r, BaseException) else type(r).__name__ for r in results]

    @expose
    async def first_two(self, calls: list[list[Any]]) -> list[Any]:
        got = []
        async for index, result in self.select(*(tuple(c) for c in calls)):
            got.append([index, result])
            if len(got) == 2:
                break
        return got


def test_gather_keeps_call_order_and_carries_exceptions(node: Node) -> None:
    s = node.newservice(Slow)
    f = node.newservice(Fan)
    calls = [[s, "after", 0.2, "a"], [s, "after", 0.0, "b"], [s, "boom"],
             [(1 << 32) | 999_999, "after", 0, "x"], ["no-such-name", "x"], [s, "after", 0.1, "c"]]
    assert node.call(f, "gather_all", calls) == [
        "a", "b", "CallError", "ServiceNotFound", "ServiceNotFound", "c",
    ]
    t0 = time.monotonic()
    assert node.call(f, "gather_all", [[s, "after", 5, "late"], [s, "after", 0, "now"]], 0.3) == [
        "CallTimeout", "now",
    ]
    assert time.monotonic() - t0 < 3


def test_select_yields_in_arrival_order_and_withdraws_the_rest(node: Node) -> None:
    s = node.newservice(Slow)
    f = node.newservice(Fan)
    before = node.stats()["drops"].get("late-reply", 0)
    calls = [[s, "after", 0.3, "slow"], [s, "after", 0.05, "mid"], [s, "after", 0.0, "fast"],
             [s, "after", 0.4, "slowest"]]
    assert node.call(f, "first_two", calls) == [[2, "fast"], [1, "mid"]]
    # The two left behind answer later: dropped and counted, never delivered elsewhere.
    wait_for(lambda: node.stats()["drops"].get("late-reply", 0) - before == 2, timeout=5)
    assert node.call(f, "gather_all", [[s, "after", 0, "still fine"]]) == ["still fine"]


class Blocking(Service):
    @expose
    async def fetch(self, seconds: float, value: Any, timeout: float | None = None) -> Any:
        return await self.offload(_blocking_sleep, seconds, value, timeout=timeout)

    @expose
    async def fail(self) -> str:
        try:
            await self.offload(_raise_custom)
        except _Custom as exc:  # the very exception, not a CallError
            return f"caught {exc.args[0]}"
        return "not raised"

    @expose
    def ping(self) -> str:
        return "pong"


class _Custom(Exception):
    pass


def _raise_custom() -> None:
    raise _Custom("custom")


def _blocking_sleep(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def test_offload_runs_blocking_calls_off_the_workers(node: Node) -> None:
    """Two workers, four blocking jobs of 0.5 s: other messages keep flowing."""
    b = node.newservice(Blocking)
    pinger = node.newservice(Blocking)
    outs = [_in_thread(lambda i=i: node.call(b, "fetch", 0.5, i)) for i in range(4)]
    t0 = time.monotonic()
    pings = 0
    while time.monotonic() - t0 < 0.4:
        assert node.call(pinger, "ping", timeout=1) == "pong"
        pings += 1
    assert pings > 20
    stats = node.stats()["offload"]
    assert stats["threads"] == 4 and stats["running"] + stats["queued"] >= 1
    wait_for(lambda: all(outs), timeout=5)
    assert sorted(o[0] for o in outs) == [0, 1, 2, 3]
    assert node.call(b, "fail") == "caught custom"
    before = node.stats()["drops"].get("late-reply", 0)
    with pytest.raises(CallError) as info:
        node.call(b, "fetch", 0.5, "late", 0.05)
    assert info.value.remote_type == "CallTimeout"
    wait_for(lambda: node.stats()["drops"].get("late-reply", 0) == before + 1, timeout=5)


class Uniq(Service):
    pass


class Asker(Service):
    @expose
    async def look(self, wait: float | None = None) -> Any:
        return await self.queryservice(Uniq, wait=wait)

    @expose
    async def make(self) -> int:
        return await self.uniqueservice(Uniq)

    @expose
    def master(self) -> bool:
        return self.is_master()

    @expose
    async def lead(self, name: str, seconds: float) -> list[Any]:
        async with self.leader(name, ttl=5) as lease:
            t_in = time.monotonic()
            await self.sleep(seconds)
            return [t_in, time.monotonic(), lease.fence, lease.valid]

    @expose
    async def members(self, group: str) -> list[int]:
        await self.join_group(group)
        return self.group_members(group)


def test_queryservice_never_starts_one(node: Node) -> None:
    a = node.newservice(Asker)
    assert node.call(a, "look") is None
    assert not [s for s in node.services() if s["class"] == "Uniq"]
    waiting = _in_thread(lambda: node.call(a, "look", 5))
    time.sleep(0.1)
    h = node.call(a, "make")
    wait_for(lambda: waiting == [h])
    assert node.call(a, "look") == h


def test_master_leader_and_group_members_standalone(node: Node) -> None:
    a, b = node.newservice(Asker), node.newservice(Asker)
    assert node.call(a, "master") is True
    outs = [_in_thread(lambda h=h: node.call(h, "lead", "x", 0.2)) for h in (a, b)]
    wait_for(lambda: all(outs), timeout=10)
    (in1, out1, fence1, ok1), (in2, out2, fence2, ok2) = sorted(o[0] for o in outs)
    assert ok1 and ok2 and out1 <= in2 and fence1 != fence2
    assert node.call(a, "members", "g") == [a]
    assert sorted(node.call(b, "members", "g")) == sorted([a, b])


class GroupWatcher(Service):
    def on_start(self) -> None:
        self.events: list[Any] = []

    @expose
    def look(self, group: str) -> list[int]:
        return self.group_members(group)

    def on_group(self, group: str, event: str, handle: int) -> None:
        self.events.append([group, event, handle])

    @expose
    def seen(self) -> list[Any]:
        return list(self.events)


class Joiner(Service):
    @expose
    async def join(self, group: str) -> None:
        await self.join_group(group)

    @expose
    async def leave(self, group: str) -> None:
        await self.leave_group(group)


def test_group_members_and_on_group_notices(node: Node) -> None:
    w = node.newservice(GroupWatcher)
    assert node.call(w, "look", "rooms") == []
    j1, j2 = node.newservice(Joiner), node.newservice(Joiner)
    node.call(j1, "join", "rooms")
    node.call(j2, "join", "rooms")
    node.call(j1, "leave", "rooms")
    node.kill(j2)
    wait_for(lambda: len(node.call(w, "seen")) == 4)
    assert node.call(w, "seen") == [["rooms", "join", j1], ["rooms", "join", j2],
                                    ["rooms", "leave", j1], ["rooms", "leave", j2]]
