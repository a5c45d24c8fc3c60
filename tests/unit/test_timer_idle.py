"""The timer thread sleeps until its next deadline when the node is idle (issue 15),
and the scheduler's safety net still wakes a sleeping worker for work a busy
worker queued."""

from __future__ import annotations

import time

from node import Node, Service, expose
from node.core import TimerThread


class Marker(Service):
    async def on_start(self) -> None:
        self.at = 0.0

    @expose
    def mark(self) -> None:
        self.at = time.monotonic()

    @expose
    def when(self) -> float:
        return self.at


class Blocker(Service):
    @expose
    def go(self, dest: int, seconds: float) -> None:
        self.send(dest, "mark")  # wakes nobody: this worker is running
        time.sleep(seconds)  # holds this worker; only the safety net frees the other


def test_idle_node_timer_does_not_tick(node: Node) -> None:
    time.sleep(0.3)  # start-up work done; workers asleep
    before = node.stats()["timer_turns"]
    time.sleep(1.0)
    turns = node.stats()["timer_turns"] - before
    # Workers wake once a second (their wait timeout) and poke the timer: a few
    # turns each; a 10 ms tick would be ~100.
    assert turns <= 2 * 8, turns


def test_idle_timer_thread_fires_a_deadline_added_while_it_sleeps() -> None:
    fired: list[float] = []
    t = TimerThread(lambda h, s, p: fired.append(time.monotonic()), lambda: False)
    t.start()
    try:
        time.sleep(0.2)
        turns = t.turns
        assert turns <= 2  # asleep with no deadline: no tick
        added = time.monotonic()
        t.add(0.05, 1, 1, None)
        time.sleep(0.3)
        assert len(fired) == 1 and 0.04 <= fired[0] - added < 0.2, fired
    finally:
        t.stop()


def test_safety_net_wakes_a_worker_for_work_a_busy_worker_queued(node: Node) -> None:
    m = node.newservice(Marker)
    b = node.newservice(Blocker)
    for _ in range(3):
        time.sleep(0.3)  # every worker asleep, the timer idle
        sent = time.monotonic()
        node.send(b, "go", m, 0.6)
        time.sleep(0.8)
        delay = node.call(m, "when") - sent
        # With the net: the other worker is woken within a few ticks. Without it the
        # mark waits for the blocker's 0.6 s (or a worker's 1 s wait timeout).
        assert 0 <= delay < 0.3, delay


def test_many_timers_due_at_once_fire_without_holding_the_heap_for_all() -> None:
    # 100,000 deadlines due at the same instant: the thread pops them in batches, so
    # the first fires at once and an add() made during the burst is not held up for
    # the whole heap (popping 100,000 entries under the lock took ~0.4 s).
    n = 100_000
    fired: list[float] = []
    t = TimerThread(lambda h, s, p: fired.append(time.monotonic()), lambda: False)
    t.start()
    try:
        due = time.monotonic() + 1.0
        for i in range(n):
            t.add(due - time.monotonic(), i, i, None)
        while not fired:
            time.sleep(0.001)
        first = fired[0] - due
        t0 = time.monotonic()
        t.add(10.0, 0, 0, None)  # contends with the burst for the heap's lock
        add_wait = time.monotonic() - t0
        deadline = time.monotonic() + 60
        while len(fired) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fired) == n
        assert first < 0.15, first
        assert add_wait < 0.15, add_wait
    finally:
        t.stop()
