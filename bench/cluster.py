"""Cross-node benchmarks (issue 4): two node processes over the real harbor.

Run: ``python -m bench.cluster [--n 300000] [--calls 20000]``. Starts ZooKeeper
and Redis with scripts/servers.sh if they are not up. One JSON line per
figure; the raw pyzmq limits (PUSH/PULL one per frame and 100 per frame, a
DEALER/ROUTER round trip) are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from node import Node, Service, expose

ROOT = Path(__file__).resolve().parents[1]


def emit(name: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, **extra}), flush=True)


class Blaster(Service):
    @expose
    async def blast(self, dest, n):
        send = self.send
        for i in range(n):
            send(dest, "hit", i)
            if i % 5000 == 4999:
                await self.sleep(0)  # let replies and timers in
        return n

    @expose
    async def calls(self, dest, n):
        call = self.call
        t0 = time.perf_counter()
        for i in range(n):
            await call(dest, "echo", i)
        return time.perf_counter() - t0


def servers_env() -> dict[str, str]:
    script = ROOT / "scripts" / "servers.sh"
    if subprocess.run([script, "status"], check=False, capture_output=True).returncode != 0:
        subprocess.run([script, "start"], check=True, capture_output=True)
    out = subprocess.run([script, "env"], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=300_000)
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--callers", type=int, default=32)
    args = p.parse_args()
    env = servers_env()
    cluster = f"bench{uuid.uuid4().hex[:8]}"
    penv = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    penv.update(env)
    penv.update({
        "PYTHONPATH": str(ROOT), "SKYMESH_CLUSTER": cluster, "SKYMESH_NODE_ID": "1",
        "SKYMESH_SERVICES": "bench.cluster_services:Sink", "SKYMESH_LOG_FILE": "/dev/null",
    })
    remote = subprocess.Popen([sys.executable, "-m", "node.cli", "node"], env=penv, cwd=ROOT)
    node = Node(node_id=2, workers=2, cluster=cluster, zk_hosts=env["SKYMESH_ZK_HOSTS"],
                log_file="/dev/null", call_timeout=120)
    node.start()
    try:
        deadline = time.monotonic() + 60
        while node.coord.query_name("bench-sink") is None:
            assert time.monotonic() < deadline, "remote node did not come up"
            time.sleep(0.05)
        sink = node.coord.query_name("bench-sink")
        while 1 not in node.coord.members():
            time.sleep(0.05)
        time.sleep(0.5)
        b = node.newservice(Blaster)
        node.call(b, "calls", sink, 200)  # warm up
        # one-way, counted at the receiver
        node.call(sink, "reset")
        t0 = time.perf_counter()
        node.call(b, "blast", sink, args.n, timeout=600)
        count, _ = node.call(sink, "until", args.n, timeout=600)
        v = count / (time.perf_counter() - t0)
        emit("cluster_oneway_msgs", v, "msgs/s")
        # sequential round trip
        elapsed = node.call(b, "calls", sink, args.calls, timeout=600)
        emit("cluster_call_rtt", elapsed / args.calls * 1e6, "us")
        # concurrent callers
        callers = [node.newservice(Blaster) for _ in range(args.callers)]
        per = max(1, args.calls // args.callers * 4)
        import threading

        t0 = time.perf_counter()
        threads = [threading.Thread(target=node.call, args=(c, "calls", sink, per),
                                    kwargs={"timeout": 600}) for c in callers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        v = per * len(callers) / (time.perf_counter() - t0)
        emit("cluster_calls_concurrent", v, "calls/s", callers=len(callers))
    finally:
        node.stop()
        remote.terminate()
        remote.wait(30)
    # raw limits, same run
    from bench import zmq_baseline as zb

    emit("pyzmq_push_pull_1_per_frame", zb.push_pull(args.n, 1), "msgs/s")
    emit("pyzmq_push_pull_100_per_frame", zb.push_pull(args.n, 100), "msgs/s")
    mean, p99 = zb.dealer_router(max(2000, args.calls // 4))
    emit("pyzmq_dealer_router_rtt", mean, "us", p99=round(p99, 2))


if __name__ == "__main__":
    main()
