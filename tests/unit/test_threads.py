"""Timer resolution, the monitor thread, interrupting a stuck handler, per-service stats."""

from __future__ import annotations

import threading
import time

import pytest

from node import CallError, Node, Service, expose
from tests.conftest import wait_for


class Clock(Service):
    @expose
    async def nap(self, seconds):
        t0 = time.monotonic()
        await self.sleep(seconds)
        return time.monotonic() - t0

    @expose
    def spin(self, seconds):
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return n

    @expose
    def forever(self):
        while True:
            pass

    @expose
    def ok(self):
        return "ok"


def test_timer_has_millisecond_resolution(node: Node) -> None:
    h = node.newservice(Clock)
    slept = sorted(node.call(h, "nap", 0.005) for _ in range(20))
    assert slept[0] >= 0.005  # never early
    assert slept[10] < 0.05  # the median is near 5 ms even on a loaded machine


def test_many_timers_fire_in_deadline_order(node: Node) -> None:
    class Order(Service):
        def on_start(self) -> None:
            self.fired: list[int] = []

        @expose
        def arm(self, delays):
            for d in delays:
                self.timeout(d / 1000, self.fired.append, d)

        @expose
        def get(self):
            return self.fired

    h = node.newservice(Order)
    delays = [37, 5, 22, 1, 15, 30, 9, 3]
    node.call(h, "arm", delays)
    wait_for(lambda: len(node.call(h, "get")) == len(delays))
    assert node.call(h, "get") == sorted(delays)


def test_monitor_reports_stuck_handler(tmp_path) -> None:
    log = tmp_path / "log"
    with Node.standalone(workers=2, log_file=str(log), monitor_threshold=0.2) as node:
        h = node.newservice(Clock)
        c = node.newservice(Clock)
        assert node.call(h, "spin", 0.8) > 0
        text = wait_for(lambda: "endless loop" in log.read_text() and log.read_text())
        line = next(x for x in text.splitlines() if "endless loop" in x)
        assert f":{h:016x}" in line and "Clock.spin" in line
        assert f"from :{node.node_id << 32:016x}" in line  # the source: an outside caller
        assert node.stats()["stuck_reports"] == 1  # once per stuck message, not per check
        assert node.call(c, "ok") == "ok"


def test_interrupt_breaks_a_stuck_handler(node: Node) -> None:
    h = node.newservice(Clock)
    result: list = []

    def caller() -> None:
        try:
            node.call(h, "forever", timeout=30)
        except CallError as exc:
            result.append(exc)

    t = threading.Thread(target=caller)
    t.start()
    wait_for(lambda: any(s["handle"] == h and s["messages"] >= 1 for s in node.services()))
    time.sleep(0.05)
    assert node.interrupt(h) is True
    t.join(10)
    assert result and result[0].remote_type == "Interrupted"
    assert node.call(h, "ok") == "ok"  # the service keeps serving
    assert node.interrupt(h) is False  # nothing running now


def test_per_service_stats(node: Node) -> None:
    h = node.newservice(Clock)
    for _ in range(5):
        node.call(h, "ok")
    node.call(h, "spin", 0.05)
    t = threading.Thread(target=lambda: node.call(h, "nap", 0.3))
    t.start()
    wait_for(lambda: next(s for s in node.services() if s["handle"] == h)["pending_calls"] == 1)
    stats = next(s for s in node.services() if s["handle"] == h)
    assert stats["messages"] == 7
    assert stats["mailbox"] == 0
    assert stats["cpu"] >= 0.03  # the 50 ms spin is CPU time
    assert stats["class"] == "Clock" and stats["state"] == "running"
    t.join()


@pytest.mark.parametrize("workers", [1, 2])
def test_call_round_trips_from_many_threads(workers: int, tmp_path) -> None:
    with Node.standalone(workers=workers, log_file=str(tmp_path / "log")) as node:
        h = node.newservice(Clock)
        errors: list = []

        def hammer() -> None:
            try:
                for _ in range(300):
                    assert node.call(h, "ok") == "ok"
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
