"""Single-node benchmarks (issue 2). One JSON line per figure.

Run: ``python -m bench.local [--workers 2] [--n 1000000]``. In the same run a
baseline is measured: a minimal pure-Python loop pushing the same N messages
through a ``collections.deque`` to a handler; each throughput figure is also
printed as a ratio to it.

On a shared machine wall time swings with the neighbours' load, so each
throughput figure also carries ``cpu_ratio``: its rate per second of this
process's CPU time (``time.process_time``, every thread) over the baseline's
rate per second of CPU time. The node's work is serialised by the GIL, so CPU
seconds measure what it costs, whoever else runs on the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import threading
import time
from collections import deque
from typing import Any

from node import Node, Service, expose
from node.node import GC_THRESHOLD

WEIGHTS: dict[str, Any] = {}


def emit(name: str, value: float, unit: str, **extra: Any) -> None:
    record = {"name": name, "value": round(value, 3), "unit": unit, **extra, **WEIGHTS}
    print(json.dumps(record), flush=True)


BASE_CPU: list[float] = []  # the baseline's msgs per CPU second


def cpu_ratio(count: int, cpu0: float) -> float:
    """``count`` messages per CPU second since ``cpu0``, over the baseline's."""
    cpu = time.process_time() - cpu0
    return round(count / cpu / BASE_CPU[0], 3) if cpu > 0 and BASE_CPU else 0.0


def baseline(n: int) -> float:
    """msgs/s of a bare deque + handler loop: the ceiling for pure-Python dispatch."""
    q: deque[tuple[int, int, int, Any]] = deque()
    count = [0]

    def handler(x: int) -> None:
        count[0] += 1

    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        q.append((0, 0, 0, i))
    while q:
        m = q.popleft()
        handler(m[3])
    wall = time.perf_counter() - t0
    BASE_CPU[:] = [n / max(time.process_time() - c0, 1e-9)]
    return n / wall


class Receiver(Service):
    def on_start(self) -> None:
        self.n = 0
        self.target = 0
        self.done = threading.Event()
        self.finished_at = 0.0

    @expose
    def expect(self, target):
        self.n = 0
        self.target = target
        self.done.clear()

    @expose
    def msg(self, i):
        self.n += 1
        if self.n == self.target:
            self.finished_at = time.perf_counter()
            self.done.set()


class Sender(Service):
    @expose
    def blast(self, dest, n):
        send = self.send
        for i in range(n):
            send(dest, "msg", i)


class Echo(Service):
    @expose
    def echo(self, x):
        return x


class Caller(Service):
    @expose
    async def loop(self, dest, n):
        call = self.call
        t0 = time.perf_counter()
        for i in range(n):
            await call(dest, "echo", i)
        return time.perf_counter() - t0


class Pinger(Service):
    def on_start(self) -> None:
        self.left = 0
        self.done: threading.Event | None = None

    @expose
    def start(self, peer, rounds, done):
        self.left = rounds
        self.done = done
        self.send(peer, "ball", self.handle)

    @expose
    def ball(self, peer):
        if self.done is None:  # the passive side bounces
            self.send(peer, "ball", self.handle)
            return
        self.left -= 1
        if self.left:
            self.send(peer, "ball", self.handle)
        else:
            self.done.set()


class Idle(Service):
    pass


class Spawner(Service):
    @expose
    async def spawn(self, n):
        t0 = time.perf_counter()
        for _ in range(n):
            await self.newservice(Idle)
        return time.perf_counter() - t0


class Ring(Service):
    """One of N services passing tokens around a ring; also arms one timer each."""

    def on_start(self) -> None:
        self.next = 0
        self.fired = 0.0

    @expose
    def link(self, nxt):
        self.next = nxt

    @expose
    def token(self, hops, done):
        if hops:
            self.send(self.next, "token", hops - 1, done)
        else:
            done.set()

    @expose
    def arm(self, due, counter):
        """A timer due at ``due`` (``perf_counter`` time)."""
        self.timeout(max(0.0, due - time.perf_counter()), self._fired, counter, due)

    def _fired(self, counter, due):
        self.fired = time.perf_counter()
        counter.append((due, self.fired))


class RingSpawner(Service):
    @expose
    async def spawn(self, n):
        t0 = time.perf_counter()
        handles = [await self.newservice(Ring) for _ in range(n)]
        return time.perf_counter() - t0, handles


def many_services(n: int, w: int, weights: tuple[int, ...] | None, base: float) -> None:
    """``--services N``: N services in one node: spawn, memory, a ring of messages
    through all of them, and N timers in the heap at once."""
    with Node.standalone(workers=w, gc_threshold=gc.get_threshold()[0],
                         log_file="/dev/null", call_timeout=600, weights=weights) as node:
        sp = node.newservice(RingSpawner)
        gc.collect()
        before = rss_kb()
        elapsed, handles = node.call(sp, "spawn", n, timeout=1200)
        gc.collect()
        after = rss_kb()
        emit("services_spawn_rate", n / elapsed, "services/s", workers=w, services=n)
        emit("services_rss_per_service", (after - before) * 1024 / n, "bytes", services=n)
        t0 = time.perf_counter()
        for a, b in zip(handles, handles[1:] + handles[:1], strict=True):
            node.send(a, "link", b)
        node.call(handles[-1], "link", handles[0])  # every link queued before is done
        link_s = time.perf_counter() - t0
        # Tokens: 64 concurrent tokens, each hopping through the whole ring.
        tokens = 64
        hops = max(n // 4, 1000)
        events = [threading.Event() for _ in range(tokens)]
        t0 = time.perf_counter()
        for i, ev in enumerate(events):
            node.send(handles[(i * n) // tokens], "token", hops, ev)
        for ev in events:
            ev.wait(1200)
        v = tokens * hops / (time.perf_counter() - t0)
        emit("services_ring_msgs", v, "msgs/s", services=n, tokens=tokens,
             ratio_to_baseline=round(v / base, 3))
        # Timers: one per service, all due at the same instant, set after the arming
        # (n messages from this thread, timed like the links above) is over: the
        # figures are the timer heap's and the global queue's, not this thread's.
        fired: list[tuple[float, float]] = []
        t0 = time.perf_counter()
        due = t0 + 3.0 * link_s + 2.0
        for h in handles:
            node.send(h, "arm", due, fired)
        armed = time.perf_counter() - t0
        deadline = time.monotonic() + 600
        while len(fired) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        emit("services_timers_fired", len(fired), "timers", services=n,
             arm_seconds=round(armed, 3), all_armed_before_due=t0 + armed < due)
        lateness = sorted((f - d) * 1000 for d, f in fired)
        if lateness:
            v = lateness[int(len(lateness) * 0.99) - 1]
            emit("services_timer_lateness_p99", v, "ms", services=n,
                 median_ms=round(lateness[len(lateness) // 2], 1),
                 max_ms=round(lateness[-1], 1), fired_per_s=round(n / lateness[-1] * 1000),
                 queue_after=node.stats()["global_queue"], heap_after=node.stats()["timers"])


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--calls", type=int, default=200_000)
    p.add_argument("--spawn", type=int, default=100_000)
    p.add_argument("--weights", help="worker weights, e.g. 0,0 (default: skynet's table)")
    p.add_argument("--gc0", type=int, default=0,
                   help="young-generation GC threshold for the baseline and the node (default: "
                        "the node's own, node.node.GC_THRESHOLD; 700 is Python's)")
    p.add_argument("--services", type=int, default=0,
                   help="instead: N services in one node (spawn, memory, ring, timers)")
    p.add_argument("--tracing", action="store_true",
                   help="tracing on, spans recorded by the OpenTelemetry SDK (not exported)")
    args = p.parse_args()
    tracing: dict[str, Any] = {}
    if args.tracing:
        from opentelemetry.sdk.trace import TracerProvider

        tracing = {"tracing": True, "tracer_provider": TracerProvider()}
        WEIGHTS["tracing"] = True
    weights = tuple(int(x) for x in args.weights.split(",")) if args.weights else None
    if weights is not None:
        WEIGHTS["weights"] = list(weights)
    # The baseline runs under the same young-generation threshold as the nodes.
    gc0 = args.gc0 or GC_THRESHOLD
    gc.set_threshold(gc0)
    WEIGHTS["gc0"] = gc0
    w, n = args.workers, args.n
    base = max(baseline(n) for _ in range(3))  # BASE_CPU keeps the last: fine, it is CPU time
    emit("baseline_deque_loop", base, "msgs/s", workers=0)
    if args.services:
        many_services(args.services, w, weights, base)
        return

    with Node.standalone(workers=w, gc_threshold=gc.get_threshold()[0],
                         log_file="/dev/null", call_timeout=60, weights=weights, **tracing) as node:
        # 1. one-way A -> B, counted at the receiver.
        rcv = node.newservice(Receiver)
        snd = node.newservice(Sender)
        r = next(s for s in node.iter_services() if s.handle == rcv)
        node.call(rcv, "expect", n)
        c0 = time.process_time()
        t0 = time.perf_counter()
        node.send(snd, "blast", rcv, n)
        r.done.wait(600)
        v = n / (r.finished_at - t0)
        emit("oneway_msgs", v, "msgs/s", workers=w, ratio_to_baseline=round(v / base, 3),
             cpu_ratio=cpu_ratio(n, c0))

        # 2. sequential call round trip.
        echo = node.newservice(Echo)
        caller = node.newservice(Caller)
        node.call(caller, "loop", echo, 1000)
        c0 = time.process_time()
        elapsed = node.call(caller, "loop", echo, args.calls, timeout=600)
        ratio = cpu_ratio(args.calls, c0)
        emit("call_rtt", elapsed / args.calls * 1e6, "us", workers=w)
        v = args.calls / elapsed
        emit("calls_per_s", v, "calls/s", workers=w, ratio_to_baseline=round(v / base, 3),
             cpu_ratio=ratio)

        # 3. 100 pairs ping-ponging.
        pairs, rounds = 100, max(1, n // 200)
        events = [threading.Event() for _ in range(pairs)]
        handles = [(node.newservice(Pinger), node.newservice(Pinger)) for _ in range(pairs)]
        c0 = time.process_time()
        t0 = time.perf_counter()
        for (a, b), ev in zip(handles, events, strict=True):
            node.send(a, "start", b, rounds, ev)
        for ev in events:
            ev.wait(600)
        v = pairs * rounds * 2 / (time.perf_counter() - t0)
        emit("pairs100_msgs", v, "msgs/s", workers=w, ratio_to_baseline=round(v / base, 3),
             cpu_ratio=cpu_ratio(pairs * rounds * 2, c0))

        # 4. fan-in 8 -> 1.
        senders = [node.newservice(Sender) for _ in range(8)]
        per = n // 8
        node.call(rcv, "expect", per * 8)
        c0 = time.process_time()
        t0 = time.perf_counter()
        for s in senders:
            node.send(s, "blast", rcv, per)
        r.done.wait(600)
        v = per * 8 / (r.finished_at - t0)
        emit("fanin8_msgs", v, "msgs/s", workers=w, ratio_to_baseline=round(v / base, 3),
             cpu_ratio=cpu_ratio(per * 8, c0))

    # 5. spawn rate and memory per idle service, on a fresh node.
    with Node.standalone(workers=w, gc_threshold=gc.get_threshold()[0],
                         log_file="/dev/null", call_timeout=60) as node:
        spawner = node.newservice(Spawner)
        node.call(spawner, "spawn", 100)
        gc.collect()
        before = rss_kb()
        elapsed = node.call(spawner, "spawn", args.spawn, timeout=600)
        gc.collect()
        after = rss_kb()
        emit("spawn_rate", args.spawn / elapsed, "services/s", workers=w, by="a service")
        t0 = time.perf_counter()
        for _ in range(2000):
            node.newservice(Idle)
        emit("spawn_rate_from_thread", 2000 / (time.perf_counter() - t0), "services/s",
             workers=w, by="a plain thread (blocking)")
        emit("memory_per_idle_service", (after - before) * 1024 / args.spawn, "bytes", workers=w)


if __name__ == "__main__":
    main()
