"""Lock and election benchmarks: coord's locks against redis-py's and kazoo's.

Prints one JSON line per figure: {"name": ..., "value": ..., "unit": ...}.
Uses the servers of scripts/servers.sh (started, and stopped again, if they
are not up). All figures come from one run on the same servers.

    python bench/locks.py [--seconds 3] [--contenders 4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SERVERS = ROOT / "scripts" / "servers.sh"
CONTENDER = ROOT / "scripts" / "lock_contender.py"


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def server_env() -> dict[str, str]:
    out = subprocess.run([str(SERVERS), "env"], capture_output=True, text=True, check=True)
    env = dict(line.split("=", 1) for line in out.stdout.split())
    return {"zk": env["SKYMESH_ZK_HOSTS"], "redis": env["SKYMESH_REDIS_URL"]}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else 0.0


# uncontended


def uncontended(env: dict[str, str], cluster: str, seconds: float, redis_only: bool) -> None:
    import redis
    from kazoo.client import KazooClient

    import coord

    c = coord.connect(env["zk"], env["redis"], cluster, session_timeout=10)
    c.start(None, "localhost", os.getpid(), {})

    def ours(backend: str) -> None:
        done = threading.Event()
        box: list[Any] = []

        def got(r: Any) -> None:
            box.append(r)
            done.set()

        c.lock("bench-u", 5.0, 10.0, backend, got, lambda _h: None)
        done.wait(10)
        box[0].release()

    r = redis.Redis.from_url(env["redis"])
    zk = KazooClient(hosts=env["zk"])
    zk.start(15)
    zlock = zk.Lock(f"/skymesh/{cluster}/kazoo-u")

    def redispy() -> None:
        lk = r.lock(f"skymesh:{cluster}:redispy-u", timeout=5)
        lk.acquire()
        lk.release()

    def kazoo_lock() -> None:
        zlock.acquire()
        zlock.release()

    impls = [
        ("coord_redis", lambda: ours("redis")),
        ("redispy", redispy),
        ("coord_zk", lambda: ours("zk")),
        ("kazoo", kazoo_lock),
    ][: 2 if redis_only else 4]
    # Interleaved in short slices (A B C D A B C D ...), so that a neighbour's load on
    # a shared machine falls on every implementation alike; the ratios are same-run.
    slices = 6
    count = dict.fromkeys([name for name, _ in impls], 0)
    spent = dict.fromkeys(count, 0.0)
    for _name, fn in impls:
        fn()  # warm: connections, scripts loaded
    for _ in range(slices):
        for name, fn in impls:
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / slices:
                fn()
                n += 1
            count[name] += n
            spent[name] += time.perf_counter() - t0
    rate = {name: count[name] / spent[name] for name in count}
    for name in count:
        emit(f"uncontended_acquire_release.{name}", rate[name], "ops/s")
    emit("uncontended_ratio.coord_redis_to_redispy", rate["coord_redis"] / rate["redispy"],
         "ratio")
    if not redis_only:
        emit("uncontended_ratio.coord_zk_to_kazoo", rate["coord_zk"] / rate["kazoo"], "ratio")
    c.stop()
    r.close()
    zk.stop()
    zk.close()


# contended


def contended(
    env: dict[str, str], cluster: str, impl: str, backend: str, n: int, seconds: float, label: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start_at = time.time() + 3.0
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(CONTENDER),
                    "--zk",
                    env["zk"],
                    "--redis",
                    env["redis"],
                    "--cluster",
                    cluster,
                    "--impl",
                    impl,
                    "--backend",
                    backend,
                    "--key",
                    f"bench-{label}",
                    "--ttl",
                    "5",
                    "--duration",
                    str(seconds),
                    "--hold",
                    "0.001",
                    "--start-at",
                    str(start_at),
                    "--log",
                    f"{tmp}/c{i}.log",
                    "--resource",
                    f"{tmp}/resource",
                ],
            )
            for i in range(n)
        ]
        for p in procs:
            p.wait(seconds + 120)
        recs = []
        for i in range(n):
            recs += [json.loads(x) for x in Path(f"{tmp}/c{i}.log").read_text().splitlines()]
    recs.sort(key=lambda r: r["enter"])
    counts = [sum(1 for r in recs if r["pid"] == p.pid) for p in procs]
    span = (recs[-1]["exit"] - recs[0]["enter"]) / 1e9 if recs else 1.0
    waits = [r["wait"] / 1e6 for r in recs]
    handover = [(b["enter"] - a["exit"]) / 1e6 for a, b in itertools.pairwise(recs)]
    pre = f"contended{n}.{label}"
    emit(f"{pre}.acquisitions", len(recs) / span, "acq/s")
    emit(f"{pre}.min_max_ratio", min(counts) / max(counts) if max(counts) else 0.0, "ratio")
    emit(f"{pre}.wait_p50", pct(waits, 50), "ms")
    emit(f"{pre}.wait_p99", pct(waits, 99), "ms")
    emit(f"{pre}.wait_max", max(waits, default=0.0), "ms")
    emit(f"{pre}.handover_p50", pct(handover, 50), "ms")
    emit(f"{pre}.handover_p99", pct(handover, 99), "ms")


# failover


def failover_child(zk: str, cluster: str, session_timeout: float) -> None:
    import coord

    class L(coord.BaseListener):
        def on_master(self, is_master: bool, epoch: int, master_id: int | None) -> None:
            if is_master:
                print(f"MASTER {time.time()} {epoch}", flush=True)

    c = coord.connect(zk, None, cluster, session_timeout=session_timeout)
    c.add_listener(L())
    c.start(None, "localhost", os.getpid(), {})
    print("READY", flush=True)
    signal.sigwait({signal.SIGTERM})
    c.stop()


def failover(env: dict[str, str], cluster: str, session_timeout: float) -> None:
    args = [sys.executable, __file__, "--failover-child", env["zk"], cluster, str(session_timeout)]
    lines: dict[int, list[str]] = {}

    def spawn() -> subprocess.Popen[str]:
        p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        lines[p.pid] = []

        def read() -> None:
            assert p.stdout is not None
            for line in p.stdout:
                lines[p.pid].append(line.strip())

        threading.Thread(target=read, daemon=True).start()
        return p

    first = spawn()
    while not any(x.startswith("MASTER") for x in lines[first.pid]):
        time.sleep(0.01)
    second = spawn()
    while "READY" not in lines[second.pid]:
        time.sleep(0.01)
    time.sleep(0.5)
    t0 = time.time()
    first.kill()
    first.wait()
    deadline = time.monotonic() + session_timeout * 5 + 10
    while not any(x.startswith("MASTER") for x in lines[second.pid]):
        if time.monotonic() > deadline:
            raise SystemExit("no failover")
        time.sleep(0.005)
    t1 = float(next(x for x in lines[second.pid] if x.startswith("MASTER")).split()[1])
    emit("election.session_timeout", session_timeout, "s")
    emit("election.failover_after_kill9", t1 - t0, "s")
    second.send_signal(signal.SIGTERM)
    second.wait(20)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--failover-child":
        failover_child(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--contenders", type=int, default=4)
    p.add_argument("--session-timeout", type=float, default=2.0)
    p.add_argument("--redis-only", action="store_true",
                   help="only coord's Redis lock against redis-py's: no ZooKeeper, no failover")
    a = p.parse_args()
    started = subprocess.run([str(SERVERS), "status"], capture_output=True, check=False).returncode
    started = started != 0
    if started:
        subprocess.run([str(SERVERS), "start"], check=True)
    try:
        env = server_env()
        cluster = f"bench{uuid.uuid4().hex[:8]}"
        uncontended(env, cluster, a.seconds, a.redis_only)
        for impl, backend, label in [
            ("ours", "redis", "coord_redis"),
            ("redispy", "", "redispy"),
            ("ours", "zk", "coord_zk"),
            ("kazoo", "", "kazoo"),
        ][: 2 if a.redis_only else 4]:
            contended(env, cluster, impl, backend or "redis", a.contenders, a.seconds, label)
        if not a.redis_only:
            failover(env, cluster, a.session_timeout)
        emit("info.cpus", float(os.cpu_count() or 0), "count")
    finally:
        if started:
            subprocess.run([str(SERVERS), "stop"], check=False)


if __name__ == "__main__":
    main()
