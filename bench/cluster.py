"""Cross-node benchmarks (issues 4, 13): two node processes over the real harbor.

Run: ``python -m bench.cluster [--n 300000] [--calls 20000] [--curve off|on|both]``.
Starts ZooKeeper and Redis with scripts/servers.sh if they are not up. One
JSON line per figure; the raw pyzmq limits (PUSH/PULL one per frame and 100
per frame, a DEALER/ROUTER round trip) are measured in the same run (one per
frame and the round trip both before and after the node figures, their mean
printed with ``before``/``after``: the load drifts within a run), and the
issue 13 targets are printed as ratios to them (``target_*`` lines, each with
``met``); CPU and voluntary context switches (hand-offs) per sequential call
are printed for both processes: sequential call RTT <= 1.2x the raw DEALER/ROUTER round trip (p99
printed beside), one-way >= 0.8x raw PUSH/PULL at one message per frame. The
32-caller and 100-pair figures have no raw counterpart: compare them with the
same figures of the previous code measured in the same sitting.

``--curve on`` runs both nodes with cluster credentials (a keys directory from
:func:`harbor.keys.generate`, given as ``keys_dir``/``SKYMESH_KEYS_DIR``): the
harbor speaks CURVE; figures get a ``_curve`` suffix and the raw pyzmq figures
are measured with CURVE too. ``both`` measures off then on in one run.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading
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
        """``n`` sequential calls: (total seconds, p99 of one call in µs)."""
        call = self.call
        clock = time.perf_counter
        samples = []
        t0 = clock()
        for i in range(n):
            t1 = clock()
            await call(dest, "echo", i)
            samples.append(clock() - t1)
        elapsed = clock() - t0
        samples.sort()
        return elapsed, samples[int(len(samples) * 0.99)] * 1e6


class Pinger(Service):
    """The local half of a pair: sends the ball ``rounds`` times, sets ``done`` after."""

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
        self.left -= 1
        if self.left:
            self.send(peer, "ball", self.handle)
        elif self.done is not None:
            self.done.set()


def _proc(pid: int) -> tuple[float, int]:
    """(CPU seconds, voluntary context switches of every thread) of process ``pid``.

    The switches count hand-offs: a thread that blocks and is woken again. Less
    sensitive to a busy machine than wall time (Linux /proc).
    """
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    switches += int(line.split()[1])
        except OSError:  # the thread ended meanwhile
            pass
    return cpu, switches


def _frames(node: Node) -> tuple[int, int, int, int]:
    """This node's harbor counters: (frames out, messages out, frames in, messages in)."""
    h = node.stats()["harbor"]
    return h["frames_out"], h["msgs_out"], h["frames_in"], h["msgs_in"]


def emit_frames(name: str, before: tuple[int, ...], after: tuple[int, ...]) -> None:
    """Messages per frame this node sent (and received) between two :func:`_frames`:
    how much the harbor batched. Per-frame costs (CURVE, the receiver's checks) are
    what batching saves."""
    d = [a - b for a, b in zip(after, before, strict=True)]
    emit(name, d[1] / max(d[0], 1), "msgs/frame out",
         msgs_per_frame_in=round(d[3] / max(d[2], 1), 2))


def servers_env() -> dict[str, str]:
    script = ROOT / "scripts" / "servers.sh"
    if subprocess.run([script, "status"], check=False, capture_output=True).returncode != 0:
        subprocess.run([script, "start"], check=True, capture_output=True)
    out = subprocess.run([script, "env"], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def _raw(args: argparse.Namespace, curve: Any) -> tuple[float, float, float]:
    """Raw pyzmq: (PUSH/PULL msgs/s at 1 per frame, DEALER/ROUTER mean µs, its p99)."""
    from bench import zmq_baseline as zb

    mean, p99 = zb.dealer_router(max(2000, args.calls // 4), curve)
    return zb.push_pull(args.n, 1, curve), mean, p99


def run(args: argparse.Namespace, env: dict[str, str], keys_dir: str | None) -> None:
    """The cross-node figures, with CURVE when ``keys_dir`` is given.

    The raw pyzmq limits are measured before and after the node figures (the
    machine's load drifts over a run) and the targets use their mean.
    """
    from bench import zmq_baseline as zb

    sfx = "_curve" if keys_dir else ""
    curve = zb.curve_keys() if keys_dir else None
    raw_before = _raw(args, curve)
    secure: dict[str, Any] = {"keys_dir": keys_dir} if keys_dir else {}
    cluster = f"bench{uuid.uuid4().hex[:8]}"
    penv = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    penv.update(env)
    penv.update({
        "PYTHONPATH": str(ROOT), "SKYMESH_CLUSTER": cluster, "SKYMESH_NODE_ID": "1",
        "SKYMESH_SERVICES": "bench.cluster_services:Sink", "SKYMESH_LOG_FILE": "/dev/null",
    })
    if keys_dir:
        penv["SKYMESH_KEYS_DIR"] = keys_dir
    remote = subprocess.Popen([sys.executable, "-m", "node.cli", "node"], env=penv, cwd=ROOT)
    node = Node(node_id=2, workers=2, cluster=cluster, zk_hosts=env["SKYMESH_ZK_HOSTS"],
                log_file="/dev/null", call_timeout=120, **secure)
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
        oneway = count / (time.perf_counter() - t0)
        emit(f"cluster_oneway_msgs{sfx}", oneway, "msgs/s")
        # sequential round trip, with CPU and hand-offs (voluntary switches) per call
        before = _proc(os.getpid()), _proc(remote.pid)
        h0 = _frames(node)
        elapsed, p99 = node.call(b, "calls", sink, args.calls, timeout=600)
        after = _proc(os.getpid()), _proc(remote.pid)
        rtt = elapsed / args.calls * 1e6
        emit(f"cluster_call_rtt{sfx}", rtt, "us", p99=round(p99, 2))
        cpu = [(a[0] - b0[0]) / args.calls * 1e6 for a, b0 in zip(after, before, strict=True)]
        sw = [(a[1] - b0[1]) / args.calls for a, b0 in zip(after, before, strict=True)]
        emit(f"cluster_call_cpu{sfx}", cpu[0], "us/call", callee=round(cpu[1], 1))
        emit(f"cluster_call_switches{sfx}", sw[0], "per call", callee=round(sw[1], 2))
        emit_frames(f"cluster_call_frames{sfx}", h0, _frames(node))
        # concurrent callers
        callers = [node.newservice(Blaster) for _ in range(args.callers)]
        per = max(1, args.calls // args.callers * 4)
        h0 = _frames(node)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=node.call, args=(c, "calls", sink, per),
                                    kwargs={"timeout": 600}) for c in callers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        v = per * len(callers) / (time.perf_counter() - t0)
        emit(f"cluster_calls_concurrent{sfx}", v, "calls/s", callers=len(callers))
        emit_frames(f"cluster_calls_concurrent_frames{sfx}", h0, _frames(node))
        # 100 pairs ping-ponging across the two nodes (skynet's pairs, one side per node)
        pairs, rounds = 100, max(1, args.n // 200)
        bouncers = node.call(sink, "bouncers", pairs, timeout=120)
        pingers = [node.newservice(Pinger) for _ in range(pairs)]
        events = [threading.Event() for _ in range(pairs)]
        t0 = time.perf_counter()
        for p, b2, ev in zip(pingers, bouncers, events, strict=True):
            node.send(p, "start", b2, rounds, ev)
        for ev in events:
            ev.wait(600)
        v = pairs * rounds * 2 / (time.perf_counter() - t0)
        emit(f"cluster_pairs100_msgs{sfx}", v, "msgs/s", pairs=pairs, rounds=rounds)
    finally:
        node.stop()
        remote.terminate()
        remote.wait(30)
    # raw limits, same run (CURVE key pairs of their own when this run is secure)
    raw_after = _raw(args, curve)
    raw_1pf = (raw_before[0] + raw_after[0]) / 2
    emit(f"pyzmq_push_pull_1_per_frame{sfx}", raw_1pf, "msgs/s",
         before=round(raw_before[0]), after=round(raw_after[0]))
    emit(f"pyzmq_push_pull_100_per_frame{sfx}", zb.push_pull(args.n, 100, curve), "msgs/s")
    mean = (raw_before[1] + raw_after[1]) / 2
    raw_p99 = (raw_before[2] + raw_after[2]) / 2
    emit(f"pyzmq_dealer_router_rtt{sfx}", mean, "us", p99=round(raw_p99, 2),
         before=round(raw_before[1], 1), after=round(raw_after[1], 1))
    emit(f"target_call_rtt_ratio{sfx}", rtt / mean, "x raw", goal="<= 1.2",
         met=rtt / mean <= 1.2, p99_ratio=round(p99 / raw_p99, 3))
    emit(f"target_oneway_ratio{sfx}", oneway / raw_1pf, "x raw", goal=">= 0.8",
         met=oneway / raw_1pf >= 0.8)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=300_000)
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--callers", type=int, default=32)
    p.add_argument("--curve", choices=("off", "on", "both"), default="off")
    args = p.parse_args()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.curve]
    if True in modes and "keys_dir" not in inspect.signature(Node).parameters:
        sys.exit("--curve needs a node with a keys_dir setting (issue 10 wiring)")
    env = servers_env()
    for on in modes:
        if not on:
            run(args, env, None)
            continue
        from harbor.keys import generate

        with tempfile.TemporaryDirectory() as tmp:
            run(args, env, str(generate(f"{tmp}/keys", node_ids=[1, 2])))


if __name__ == "__main__":
    main()
