"""Bounded mailboxes: over ``mailbox_limit`` a CALL fails at once with ``Overloaded`` and
a SEND is dropped and counted; replies are never refused."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from node import CallError, Node, Overloaded, Service, expose
from tests.conftest import wait_for


class Gatekeeper(Service):
    mailbox_limit = 5

    def on_start(self) -> None:
        self.gate = threading.Event()
        self.seen = 0

    @expose
    def block(self) -> None:
        self.gate.wait(10)

    @expose
    def hit(self) -> None:
        self.seen += 1

    @expose
    def count(self) -> int:
        return self.seen


class Client(Service):
    @expose
    async def ask(self, dest: int) -> str:
        try:
            await self.call(dest, "count")
        except Overloaded as exc:
            return f"overloaded: {exc}"
        return "answered"

    @expose
    def spray(self, dest: int, n: int) -> None:
        for _ in range(n):
            self.send(dest, "hit")


def test_full_mailbox_refuses_calls_and_drops_sends(node: Node, log_path: Path) -> None:
    g = node.newservice(Gatekeeper)
    c = node.newservice(Client)
    svc: Any = node.service(g)
    node.send(g, "block")
    wait_for(lambda: node.services() and any(
        s["handle"] == g and s["mailbox"] == 0 for s in node.services()))
    node.call(c, "spray", g, 20)  # 5 queue, 15 dropped
    assert node.call(c, "ask", g).startswith("overloaded: ")
    with pytest.raises(Overloaded):
        node.call(g, "count", timeout=5)  # from a plain thread too, at once
    drops = node.stats()["drops"]
    assert drops.get("overloaded-send") == 15 and drops.get("overloaded-call") == 2
    svc.gate.set()
    wait_for(lambda: _count(node, g) == 5)
    # Logged at the 1st, 2nd, 4th, 8th and 16th refusal, not at each.
    wait_for(lambda: "refused 16 message(s): mailbox full" in log_path.read_text())
    assert "refused 15 message(s)" not in log_path.read_text()


def test_node_default_limit_and_unbounded_by_default(tmp_path: Path) -> None:
    class Plain(Service):
        @expose
        def block(self, ev: threading.Event) -> None:
            ev.wait(10)

        @expose
        def ok(self) -> str:
            return "ok"

    ev = threading.Event()
    with Node.standalone(log_file=str(tmp_path / "a.log")) as n:
        h = n.newservice(Plain)
        n.send(h, "block", ev)
        for _ in range(100):
            n.send(h, "ok")
        ev.set()
        assert n.call(h, "ok") == "ok"  # unbounded: nothing refused
        assert not n.stats()["drops"].get("overloaded-send")
    ev = threading.Event()
    with Node.standalone(log_file=str(tmp_path / "b.log"), mailbox_limit=3) as n:
        h = n.newservice(Plain)
        n.send(h, "block", ev)
        wait_for(lambda: all(s["mailbox"] == 0 for s in n.services() if s["handle"] == h))
        for _ in range(10):
            n.send(h, "ok")
        assert n.stats()["drops"]["overloaded-send"] == 7
        with pytest.raises(Overloaded):
            n.call(h, "ok")
        ev.set()
        wait_for(lambda: _answers(n, h))


def _count(n: Node, h: int) -> int:
    try:
        return int(n.call(h, "count"))
    except Overloaded:
        return -1


def _answers(n: Node, h: int) -> bool:
    try:
        return n.call(h, "ok") == "ok"
    except (Overloaded, CallError):
        return False
