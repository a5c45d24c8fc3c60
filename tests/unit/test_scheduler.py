"""skynet's scheduler: exclusivity, order, weights, wake-ups, and a clean stop."""

from __future__ import annotations

import threading
import time
from collections import deque

import pytest

from node import Node, Service, expose
from node.core import WEIGHTS, Mailbox, Scheduler, batch_size
from tests.conftest import wait_for


class Sink(Service):
    """Checks it is never run by two workers at once and that each sender's order holds."""

    def on_start(self) -> None:
        self.running = threading.Lock()
        self.last: dict[int, int] = {}
        self.count = 0
        self.violations: list[str] = []

    @expose
    def put(self, sender, seq):
        if not self.running.acquire(blocking=False):
            self.violations.append("ran on two workers at once")
            return
        try:
            if self.last.get(sender, -1) + 1 != seq:
                self.violations.append(f"sender {sender}: {self.last.get(sender)} then {seq}")
            self.last[sender] = seq
            self.count += 1
            for _ in range(20):  # widen the window a concurrent run would hit
                pass
        finally:
            self.running.release()

    @expose
    def report(self):
        return self.count, self.violations


class Source(Service):
    @expose
    async def blast(self, sinks, n, ident):
        for i in range(n):
            for s in sinks:
                self.send(s, "put", ident, i)
            if i % 97 == 0:
                await self.sleep(0)  # interleave with other sources
        return n


@pytest.mark.parametrize("workers", [1, 4, 8])
def test_stress_exclusive_and_ordered(workers: int, tmp_path) -> None:
    with Node.standalone(workers=workers, log_file=str(tmp_path / "log")) as node:
        sinks = [node.newservice(Sink) for _ in range(10)]
        sources = [node.newservice(Source) for _ in range(20)]
        n = 500
        done: list = []
        threads = [
            threading.Thread(
                target=lambda s=s, i=i: done.append(node.call(s, "blast", sinks, n, i))
            )
            for i, s in enumerate(sources)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert done == [n] * len(sources)

        def all_arrived() -> bool:
            return all(node.call(s, "report")[0] == n * len(sources) for s in sinks)

        wait_for(all_arrived, timeout=60)
        for s in sinks:
            count, violations = node.call(s, "report")
            assert violations == []
            assert count == n * len(sources)
        assert node.stats()["drops"] == {}


class PingPong(Service):
    @expose
    def ball(self, peer, left):
        if left:
            self.send(peer, "ball", self.handle, left - 1)
        else:
            self.done = True

    @expose
    def finished(self):
        return getattr(self, "done", False)


def test_service_to_service_sends_wake_nobody(node: Node) -> None:
    a = node.newservice(PingPong)
    b = node.newservice(PingPong)
    wait_for(lambda: node.stats()["sleeping"] == 2)
    before = node.stats()["wakeups"]
    node.send(a, "ball", b, 20000)  # one external push: at most one wake-up
    wait_for(lambda: node.call(a, "finished") or node.call(b, "finished"))
    # 20,000 service-to-service sends; only the external send (and the calls polling
    # for the end) may have woken a worker.
    assert node.stats()["wakeups"] - before < 200


def test_weights_batch_sizes() -> None:
    assert WEIGHTS[:8] == (-1, -1, -1, -1, 0, 0, 0, 0)
    assert [batch_size(64, w) for w in (-1, 0, 1, 2, 3)] == [1, 64, 32, 16, 8]
    assert batch_size(3, 3) == 1  # at least one message per turn
    sched = Scheduler(40, lambda exc: None, lambda s, n: None)
    assert [w.weight for w in sched.workers[:9]] == [-1, -1, -1, -1, 0, 0, 0, 0, 1]
    assert sched.workers[39].weight == 0  # past skynet's table: take everything
    tuned = Scheduler(3, lambda exc: None, lambda s, n: None, weights=(0, 1))
    assert [w.weight for w in tuned.workers] == [0, 1, 0]


def test_mailbox_in_global_invariant() -> None:
    gq: deque = deque()
    mb = Mailbox(object(), gq)  # type: ignore[arg-type]
    assert mb.push((0, 0, 0, 1)) is True
    assert mb.push((0, 0, 0, 2)) is False  # already queued: never twice
    assert list(gq) == [mb]
    gq.popleft()
    mb.queue.clear()
    mb.release()  # empty: flag cleared, not requeued
    assert mb.in_global is False and not gq
    assert mb.push((0, 0, 0, 3)) is True
    gq.popleft()
    mb.release()  # still has a message: back at the tail
    assert list(gq) == [mb] and mb.in_global


class Stopper(Service):
    stopped: list = []

    async def on_stop(self) -> None:
        await self.sleep(0.01)
        Stopper.stopped.append(self.handle)


def test_stop_runs_every_on_stop_and_joins_threads(tmp_path) -> None:
    Stopper.stopped = []
    node = Node.standalone(workers=3, log_file=str(tmp_path / "log"))
    handles = {node.newservice(Stopper) for _ in range(5)}
    node.stop()
    assert set(Stopper.stopped) == handles
    assert not [t for t in threading.enumerate() if t.name.startswith("skymesh")]
    assert node.services() == []
    node.stop()  # idempotent


def test_overloaded_mailbox_is_reported_with_doubling_threshold(node: Node, log_path) -> None:
    class Slow(Service):
        @expose
        def work(self, i):
            return i

        @expose
        def hold(self, seconds):
            time.sleep(seconds)

    h = node.newservice(Slow)
    node.send(h, "hold", 0.3)
    time.sleep(0.05)
    for i in range(5000):
        node.send(h, "work", i)
    wait_for(lambda: "overloaded" in log_path.read_text())
    time.sleep(0.5)
    reports = [line for line in log_path.read_text().splitlines() if "overloaded" in line]
    assert 1 <= len(reports) <= 3  # 1024, 2048, 4096: doubling, not once per message
    assert "5000 messages" in reports[0] or "messages" in reports[0]


ORDER: list[str] = []


class Busy(Service):
    """Queues many messages to itself, and one to another service, in one handler."""

    @expose
    def start(self, other, n):
        ORDER.append("busy:start")
        for i in range(n):
            self.send(self.handle, "tick", i)
        self.send(other, "poke")

    @expose
    def tick(self, i):
        ORDER.append("busy:tick")


class Other(Service):
    @expose
    def poke(self):
        ORDER.append("other:poke")


@pytest.mark.parametrize("weights", [(-1,), (0,), (1,)])
def test_next_batch_on_the_same_mailbox_only_when_nobody_else_waits(weights, tmp_path) -> None:
    """A worker that may run a mailbox's next batch at once (nothing else queued) must
    still hand it back when another mailbox waits: one worker, a mailbox with 1000
    messages, another with one; the other runs after one batch, not after all."""
    ORDER.clear()
    with Node.standalone(workers=1, weights=weights, log_file=str(tmp_path / "log")) as node:
        busy, other = node.newservice(Busy), node.newservice(Other)
        node.send(busy, "start", other, 1000)
        wait_for(lambda: len(ORDER) == 1002)
    # busy's first turn is a batch of one ("start": the ticks came during it); with
    # other's mailbox queued by then, busy is handed back before any tick runs.
    assert ORDER.index("other:poke") == 1, ORDER.index("other:poke")


def test_timer_inbox_fires_live_deadlines_and_drops_cancelled_ones() -> None:
    """Deadlines a tick or more away skip the timer's lock (an inbox drained by its
    thread): they must still fire, once, and a cancelled one must never fire."""
    from node.core import TimerThread
    from node.core.timer import TICK

    fired: list[int] = []
    timer = TimerThread(lambda h, s, p: fired.append(s), lambda: None)
    timer.start()
    try:
        live = [timer.add(TICK * 3, 1, s, None) for s in range(0, 100, 2)]
        dead = [timer.add(TICK * 3, 1, s, None) for s in range(1, 100, 2)]
        for e in dead:
            timer.cancel(e)
        wait_for(lambda: len(fired) == len(live))
        time.sleep(TICK * 5)
        assert sorted(fired) == list(range(0, 100, 2))
        assert timer.pending() == 0
    finally:
        timer.stop()
