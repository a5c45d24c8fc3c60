"""One lock contender process, for the lock-safety tests and bench/locks.py.

Takes one lock repeatedly for ``--duration`` seconds and appends one JSON
line per critical section to ``--log``: fence, enter/exit (monotonic ns,
comparable across processes on one machine), wait, and whether the write to
the fenced resource was accepted. The fenced resource (``--resource``, a
file guarded by flock) refuses a fence lower than the highest it has seen.

``--victim``: in its first critical section it writes ``<log>.in-cs`` and
stays inside until ``<log>.resume`` exists (the test SIGSTOPs it meanwhile),
then makes a late write and logs whether it was told the lock was lost.

``--impl``: ``ours`` (coord), ``redispy`` (redis-py Lock) or ``kazoo``
(kazoo Lock), the latter two as baselines for the benchmark.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fenced_write(resource: str, fence: int) -> bool:
    """Write ``fence`` to the resource unless a higher fence was written before."""
    with open(resource, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read().strip()
        top = int(text) if text else 0
        if fence < top:
            return False
        f.seek(0)
        f.truncate()
        f.write(str(fence))
        return True


class Ours:
    """coord's locks."""

    def __init__(self, a: argparse.Namespace) -> None:
        import coord

        self.a = a
        self.c = coord.connect(a.zk, a.redis, a.cluster, session_timeout=a.session_timeout)
        self.c.start(None, "localhost", os.getpid(), {})
        self.lost = threading.Event()

    def warm(self) -> None:
        """One lock of another key: redis-py imported, connections and scripts ready."""
        _, held = self.acquire(self.a.key + ".warm")
        held.release()

    def acquire(self, key: str | None = None) -> tuple[int, Any]:
        done = threading.Event()
        box: list[Any] = []

        def got(r: Any) -> None:
            box.append(r)
            done.set()

        self.lost.clear()
        self.c.lock(
            key or self.a.key, self.a.ttl, 60.0, self.a.backend, got, lambda _h: self.lost.set()
        )
        if not done.wait(90) or isinstance(box[0], BaseException):
            raise RuntimeError(f"lock failed: {box}")
        return box[0].fence, box[0]

    def release(self, held: Any) -> None:
        held.release()

    def close(self) -> None:
        self.c.stop()


class RedisPy:
    """redis-py's Lock (polling, no fence)."""

    def __init__(self, a: argparse.Namespace) -> None:
        import redis

        self.a = a
        self.r = redis.Redis.from_url(a.redis)
        self.lost = threading.Event()

    def warm(self) -> None:
        """Connect before the start."""
        self.r.ping()

    def acquire(self) -> tuple[int, Any]:
        lk = self.r.lock(
            f"skymesh:{self.a.cluster}:redispy:{self.a.key}",
            timeout=self.a.ttl,
            blocking_timeout=60,
        )
        if not lk.acquire():
            raise RuntimeError("redis-py lock timed out")
        return 0, lk

    def release(self, held: Any) -> None:
        held.release()

    def close(self) -> None:
        self.r.close()


class Kazoo:
    """kazoo's Lock recipe (no fence)."""

    def __init__(self, a: argparse.Namespace) -> None:
        from kazoo.client import KazooClient

        self.a = a
        self.zk = KazooClient(hosts=a.zk, timeout=a.session_timeout)
        self.zk.start(15)
        self.lk = self.zk.Lock(f"/skymesh/{a.cluster}/kazoo-locks/{a.key}")
        self.lost = threading.Event()

    def warm(self) -> None:
        """Connected at construction already."""

    def acquire(self) -> tuple[int, Any]:
        if not self.lk.acquire(timeout=60):
            raise RuntimeError("kazoo lock timed out")
        return 0, self.lk

    def release(self, held: Any) -> None:
        held.release()

    def close(self) -> None:
        self.zk.stop()
        self.zk.close()


def main() -> None:
    """Parse arguments and contend until the duration is over."""
    p = argparse.ArgumentParser()
    p.add_argument("--zk")
    p.add_argument("--redis")
    p.add_argument("--cluster", required=True)
    p.add_argument("--backend", default="redis")
    p.add_argument("--impl", default="ours", choices=["ours", "redispy", "kazoo"])
    p.add_argument("--key", default="safety")
    p.add_argument("--ttl", type=float, default=3.0)
    p.add_argument("--session-timeout", type=float, default=4.0)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--hold", type=float, default=0.005)
    p.add_argument("--start-at", type=float, default=0.0, help="time.time() to begin at")
    p.add_argument("--log", required=True)
    p.add_argument("--resource", required=True)
    p.add_argument("--victim", action="store_true")
    a = p.parse_args()
    impl: Any = {"ours": Ours, "redispy": RedisPy, "kazoo": Kazoo}[a.impl](a)
    out = open(a.log, "a", buffering=1)  # noqa: SIM115 - lives for the whole process
    # Imports and connections before the start: a first wait that includes importing
    # redis-py on a loaded machine would skew the shares the benchmark reports.
    impl.warm()
    if a.start_at:
        time.sleep(max(0.0, a.start_at - time.time()))
    end = time.monotonic() + a.duration
    victim_pending = a.victim
    while time.monotonic() < end or victim_pending:
        t_req = time.monotonic_ns()
        fence, held = impl.acquire()
        t_enter = time.monotonic_ns()
        rec: dict[str, Any] = {
            "pid": os.getpid(),
            "fence": fence,
            "req": t_req,
            "enter": t_enter,
            "wait": t_enter - t_req,
            "accepted": fenced_write(a.resource, fence) if fence else True,
        }
        if victim_pending:
            victim_pending = False
            Path(a.log + ".in-cs").write_text(str(os.getpid()))
            while not Path(a.log + ".resume").exists():
                time.sleep(0.02)
            rec["victim"] = True
            rec["lost_seen"] = impl.lost.wait(10)
            rec["valid_after"] = bool(getattr(held, "valid", False))
            rec["late_accepted"] = fenced_write(a.resource, fence)
        elif a.hold:
            time.sleep(a.hold)
        rec["exit"] = time.monotonic_ns()
        impl.release(held)
        out.write(json.dumps(rec) + "\n")
    out.close()
    impl.close()


if __name__ == "__main__":
    main()
