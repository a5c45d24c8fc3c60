"""Many real node processes on loopback in one cluster (issue 15).

Run: ``python -m bench.scale [--nodes 64] [--idle 30] [--session-timeout 10]``.
Starts ZooKeeper and Redis with scripts/servers.sh if they are not up (or
uses ``SKYMESH_ZK_HOSTS``/``SKYMESH_REDIS_URL``). One JSON line per figure:

- ``converge_s``: from the last process start until every node sees every
  node as a member and resolves every node's ``scale<id>`` name;
- ``sweep_*``: every node calls ``echo`` on every other node at once
  (n*(n-1) calls), errors and duration;
- ``idle_cpu_cores_after_sweep``: CPU of all node processes over ``--idle``
  seconds right after the sweep (its connections still open, ZMTP heartbeats
  on them); ``idle_cpu_cores``: the same once ``--settle`` seconds passed and
  idle connections closed (``/proc/<pid>/stat`` utime+stime), and
  ZooKeeper's and Redis's;
- ``rss_mb``, ``fds``, ``threads`` per node (median and max);
- ``zk_watches``: ZooKeeper's ``wchs`` (connections, paths, watches);
- ``kill_calls_failed_s``: after SIGKILL of one node, until every other
  node's call parked on it has failed (``NodeDown``); ``kill_member_left_s``:
  until every other node's membership dropped it (bounded by the ZooKeeper
  session timeout: the dead process's ephemeral znode lives until then).

The in-process driver node (id 1000) that asks the nodes is a member too.
:class:`ScaleCluster` is what tests/scale uses; it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from node import Node

ROOT = Path(__file__).resolve().parents[1]
DRIVER_ID = 1000
PROBE = [{"class": "bench.scale_services:ScaleProbe"}]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def emit(name: str, value: Any, unit: str, **extra: Any) -> dict[str, Any]:
    """Print one figure as a JSON line and return it."""
    rec = {"name": name, "value": round(value, 3) if isinstance(value, float) else value,
           "unit": unit, **extra}
    print(json.dumps(rec), flush=True)
    return rec


def servers_env() -> dict[str, str]:
    """ZooKeeper and Redis addresses: from the environment, else scripts/servers.sh."""
    if os.environ.get("SKYMESH_ZK_HOSTS") and os.environ.get("SKYMESH_REDIS_URL"):
        return {k: os.environ[k] for k in ("SKYMESH_ZK_HOSTS", "SKYMESH_REDIS_URL")}
    script = ROOT / "scripts" / "servers.sh"
    if subprocess.run([script, "status"], check=False, capture_output=True).returncode != 0:
        subprocess.run([script, "start"], check=True, capture_output=True)
    out = subprocess.run([script, "env"], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def proc_figures(pid: int) -> dict[str, float]:
    """RSS (MB), open fds and OS threads of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fig: dict[str, float] = {}
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            fig["rss_mb"] = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            fig["threads"] = int(line.split()[1])
    fig["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fig


def zk_four(hosts: str, word: str) -> str:
    """A ZooKeeper four-letter word's answer ('' if refused)."""
    host, port = hosts.split(",", maxsplit=1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(word.encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def zk_watches(hosts: str) -> dict[str, int]:
    """``wchs``: connections watching, watched paths, total watches."""
    text = zk_four(hosts, "wchs")
    out: dict[str, int] = {}
    for line in text.splitlines():
        words = line.split()
        if "connections" in words and "watching" in words:
            out["connections"] = int(words[0])
            out["paths"] = int(words[3])
        elif line.startswith("Total watches:"):
            out["watches"] = int(line.split(":")[1])
    return out


def zk_mntr(hosts: str) -> dict[str, int]:
    """``mntr``'s integer figures plus the last zxid from ``srvr`` (a write bumps it)."""
    out: dict[str, int] = {}
    for line in zk_four(hosts, "mntr").splitlines():
        key, _, value = line.partition("\t")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    for line in zk_four(hosts, "srvr").splitlines():
        if line.startswith("Zxid:"):
            out["zxid"] = int(line.split(":")[1].strip(), 16) & 0xFFFFFFFF
    return out


def server_pids() -> dict[str, int]:
    """ZooKeeper's and Redis's pids from scripts/servers.sh's pidfiles, when readable."""
    base = Path(os.environ.get("SKYMESH_SERVERS_DIR", "/tmp/skymesh-servers"))
    out = {}
    for name, f in (("zookeeper", base / "zookeeper/zookeeper.pid"),
                    ("redis", base / "redis/redis.pid")):
        with contextlib.suppress(OSError, ValueError):
            out[name] = int(f.read_text().strip())
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2),
            "min": round(min(values), 2)}


class ScaleCluster:
    """``n`` ``skymesh node`` processes (ids 1..n) plus an in-process driver node."""

    def __init__(self, n: int, env: dict[str, str], log_dir: Path,
                 session_timeout: float = 10.0, stagger: float = 0.15,
                 out: Callable[..., dict[str, Any]] = emit) -> None:
        self.n = n
        self.ids = list(range(1, n + 1))
        self.env = env
        self.log_dir = log_dir
        self.cluster = f"scale{uuid.uuid4().hex[:8]}"
        self.session_timeout = session_timeout
        self.stagger = stagger
        self.emit = out
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.driver: Node | None = None
        self.last_start = 0.0
        self.figures: dict[str, Any] = {}

    # -- processes -------------------------------------------------------------------------

    def _proc_env(self, nid: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
        env.update({
            "PYTHONPATH": str(ROOT),
            "SKYMESH_CLUSTER": self.cluster,
            "SKYMESH_NODE_ID": str(nid),
            "SKYMESH_ZK_HOSTS": self.env["SKYMESH_ZK_HOSTS"],
            "SKYMESH_REDIS_URL": self.env["SKYMESH_REDIS_URL"],
            "SKYMESH_SESSION_TIMEOUT": str(self.session_timeout),
            "SKYMESH_SERVICES": json.dumps(PROBE),
            "SKYMESH_LOG_FILE": str(self.log_dir / f"node{nid}.log"),
            "SKYMESH_CALL_TIMEOUT": "30",
        })
        return env

    def start(self) -> None:
        """The driver, then the node processes ``stagger`` seconds apart."""
        self.driver = Node(node_id=DRIVER_ID, workers=2, cluster=self.cluster,
                           zk_hosts=self.env["SKYMESH_ZK_HOSTS"],
                           redis_url=self.env["SKYMESH_REDIS_URL"],
                           session_timeout=self.session_timeout,
                           log_file=str(self.log_dir / "driver.log"), call_timeout=30)
        self.zk_before = self._mntr()
        self.driver.start()
        for nid in self.ids:
            out = open(self.log_dir / f"node{nid}.out", "ab")  # noqa: SIM115
            self.procs[nid] = subprocess.Popen(
                [sys.executable, "-m", "node.cli", "node"], cwd=ROOT, env=self._proc_env(nid),
                stdout=out, stderr=subprocess.STDOUT)
            out.close()
            time.sleep(self.stagger)
        self.last_start = time.monotonic()

    def exited(self) -> dict[int, int]:
        """Node processes that exited on their own: id -> status."""
        return {nid: rc for nid, p in self.procs.items() if (rc := p.poll()) is not None}

    def stop(self) -> None:
        """SIGTERM every node process, SIGKILL what is left after 20 s; stop the driver."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        if self.driver is not None:
            self.driver.stop()
            self.driver = None

    def output(self, nid: int, tail: int = 3000) -> str:
        text = ""
        for suffix in (".log", ".out"):
            f = self.log_dir / f"node{nid}{suffix}"
            if f.exists():
                text += f.read_text(errors="replace")[-tail:]
        return text

    def _mntr(self) -> dict[str, int]:
        try:
            return zk_mntr(self.env["SKYMESH_ZK_HOSTS"])
        except OSError:
            return {}

    # -- asking the nodes ------------------------------------------------------------------

    def _call(self, nid: int, method: str, *args: Any, timeout: float = 30) -> Any:
        assert self.driver is not None
        return self.driver.call(f"scale{nid}", method, *args, timeout=timeout)

    def ask_all(self, method: str, *args: Any, ids: list[int] | None = None,
                timeout: float = 30) -> dict[int, Any]:
        """``method`` on every node's probe at once; each value or the exception raised."""
        ids = self.ids if ids is None else ids

        def one(nid: int) -> Any:
            try:
                return self._call(nid, method, *args, timeout=timeout)
            except Exception as exc:
                return exc

        with ThreadPoolExecutor(16) as pool:
            return dict(zip(ids, pool.map(one, ids), strict=True))

    # -- the figures -----------------------------------------------------------------------

    def converge(self, timeout: float = 120.0) -> float:
        """Seconds from the last start until every node sees all members and names."""
        want = set(self.ids)
        pending = set(self.ids)
        deadline = self.last_start + timeout
        while pending and time.monotonic() < deadline:
            views = self.ask_all("view", ids=sorted(pending), timeout=5)
            for nid, v in views.items():
                if isinstance(v, dict) and want <= set(v["members"]) and want <= set(v["names"]):
                    pending.discard(nid)
            if pending:
                time.sleep(0.25)
        took = time.monotonic() - self.last_start
        zk = self._mntr()
        writes = zk.get("zxid", 0) - self.zk_before.get("zxid", 0)
        rkey = "zk_cnt_skymesh_read_per_namespace"
        reads = zk.get(rkey, 0) - self.zk_before.get(rkey, 0)
        self.emit("zk_writes_per_join", writes / (self.n + 1), "writes", nodes=self.n + 1,
                  writes=writes, reads=reads, reads_per_join=round(reads / (self.n + 1), 1),
                  znodes=zk.get("zk_znode_count"))
        self.figures["converged"] = not pending
        self.figures["not_converged"] = sorted(pending)
        self.figures["converge_s"] = took
        self.emit("converge_s", took, "s", nodes=self.n, converged=not pending,
                  not_converged=len(pending), exited=len(self.exited()))
        return took

    def sweep(self, timeout: float = 60.0) -> dict[str, Any]:
        """Every node calls every other node once, all at the same time."""
        t0 = time.monotonic()
        res = self.ask_all("sweep", self.ids, timeout, timeout=timeout + 10)
        took = time.monotonic() - t0
        ok = sum(r["ok"] for r in res.values() if isinstance(r, dict))
        errors = [e for r in res.values() if isinstance(r, dict) for e in r["errors"]]
        errors += [f"node {nid}: {r!r}" for nid, r in res.items() if not isinstance(r, dict)]
        out = {"calls": ok, "expected": self.n * (self.n - 1), "errors": errors,
               "seconds": took}
        self.figures["sweep"] = out
        self.emit("sweep_s", took, "s", calls=ok, expected=out["expected"],
                  errors=len(errors), first_errors=errors[:5])
        return out

    def idle(self, seconds: float = 30.0, name: str = "idle_cpu_cores") -> dict[str, Any]:
        """CPU of the node processes (and the servers) over ``seconds`` with no traffic."""
        pids = {nid: p.pid for nid, p in self.procs.items() if p.poll() is None}
        servers = server_pids()
        before = {nid: cpu_ticks(pid) for nid, pid in pids.items()}
        sbefore = {k: cpu_ticks(pid) for k, pid in servers.items()}
        zk0 = self._mntr()
        t0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        zk1 = self._mntr()
        zk_rate = {k: round((zk1.get(k, 0) - zk0.get(k, 0)) / wall, 1)
                   for k in ("zxid", "zk_packets_received", "zk_packets_sent",
                             "zk_cnt_skymesh_read_per_namespace")}
        self.emit("zk_idle_writes_per_s", zk_rate["zxid"], "writes/s", seconds=round(wall, 1),
                  packets_in_per_s=zk_rate["zk_packets_received"],
                  packets_out_per_s=zk_rate["zk_packets_sent"],
                  reads_per_s=zk_rate["zk_cnt_skymesh_read_per_namespace"])
        per = [(cpu_ticks(pid) - before[nid]) / CLK_TCK / wall for nid, pid in pids.items()]
        total = sum(per)
        srv = {k: round((cpu_ticks(pid) - sbefore[k]) / CLK_TCK / wall, 3)
               for k, pid in servers.items()}
        out = {"cores": total, "per_node_millicores": summary([c * 1000 for c in per]),
               "servers": srv}
        self.figures[name] = out
        self.emit(name, total, "cores", seconds=round(wall, 1), nodes=len(pids),
                  per_node_millicores=out["per_node_millicores"], servers=srv)
        return out

    def resources(self) -> dict[str, Any]:
        """RSS, fds and threads per node process; ZooKeeper's watch count."""
        figs = [proc_figures(p.pid) for p in self.procs.values() if p.poll() is None]
        out: dict[str, Any] = {}
        for key, unit in (("rss_mb", "MB"), ("fds", "fds"), ("threads", "threads")):
            s = summary([f[key] for f in figs])
            out[key] = s
            self.emit(key, s["median"], unit, per="node", **s)
        try:
            w = zk_watches(self.env["SKYMESH_ZK_HOSTS"])
        except OSError as exc:
            w = {"error": str(exc)}  # type: ignore[dict-item]
        out["zk_watches"] = w
        self.emit("zk_watches", w.get("watches", -1), "watches", **w)
        try:
            sample = self._call(self.ids[0], "process", timeout=10)
            self.emit("threads_by_name", sum(sample["threads"].values()), "threads",
                      node=1, by_name=sample["threads"])
        except Exception as exc:
            self.emit("threads_by_name", -1, "threads", error=repr(exc))
        self.figures["resources"] = out
        return out

    def threads_cpu(self, nid: int = 1, seconds: float = 10.0) -> dict[str, float]:
        """Millicores per Python thread of node ``nid`` over ``seconds`` (where idle goes)."""
        info = self._call(nid, "process", timeout=10)
        pid = info["pid"]
        native = {int(k): v for k, v in info["native"].items()}
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]

        def ticks() -> dict[int, int]:
            out = {}
            for t in tids:
                try:
                    f = Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
                    out[t] = int(f[11]) + int(f[12])
                except OSError:
                    out[t] = 0
            return out

        a = ticks()
        time.sleep(seconds)
        b = ticks()
        per: dict[str, float] = {}
        for t in tids:
            name = native.get(t, "(native: zmq/libc)")
            per[name] = per.get(name, 0) + round((b[t] - a[t]) / CLK_TCK / seconds * 1000, 1)
        self.emit("idle_threads_millicores", sum(per.values()), "millicores", node=nid,
                  by_thread=dict(sorted(per.items(), key=lambda kv: -kv[1])))
        return per

    def kill_one(self, victim: int | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """SIGKILL ``victim`` while every other node has a call parked on it."""
        victim = self.ids[len(self.ids) // 2] if victim is None else victim
        others = [i for i in self.ids if i != victim]
        armed = self.ask_all("arm", victim, ids=others, timeout=10)
        not_armed = [nid for nid, r in armed.items() if r is not True]
        time.sleep(1.0)  # the parked calls reach the victim
        t_kill = time.monotonic()
        self.procs[victim].send_signal(signal.SIGKILL)
        self.procs[victim].wait(10)
        outcomes: dict[int, Any] = {}
        deadline = t_kill + timeout
        while time.monotonic() < deadline:
            outcomes = self.ask_all("outcome", victim, ids=others, timeout=5)
            done = [o for o in outcomes.values() if isinstance(o, dict)
                    and o["failed_at"] is not None and o["left_at"] is not None]
            if len(done) == len(others):
                break
            time.sleep(0.5)
        ok = [o for o in outcomes.values() if isinstance(o, dict)]
        # A parked call that failed before the kill was failed by something else (a
        # false NodeDown): it is reported, not timed.
        early = [o["node"] for o in ok if o["failed_at"] is not None and o["failed_at"] < t_kill]
        failed = [o["failed_at"] - t_kill for o in ok
                  if o["failed_at"] is not None and o["failed_at"] >= t_kill]
        left = [o["left_at"] - t_kill for o in ok if o["left_at"] is not None]
        errors = sorted({o["error"] for o in ok if o["error"] is not None})
        out = {
            "victim": victim, "others": len(others), "not_armed": not_armed,
            "failed_before_kill": early,
            "calls_failed": len(failed), "errors": errors,
            "calls_failed_s": max(failed) if failed else None,
            "members_dropped": len(left),
            "member_left_s": max(left) if left else None,
            "still_member": [o["node"] for o in ok if o["member"]],
        }
        self.figures["kill"] = out
        self.emit("kill_calls_failed_s", out["calls_failed_s"] or -1.0, "s", victim=victim,
                  failed=len(failed), of=len(others), errors=errors,
                  failed_before_kill=len(early),
                  median=round(statistics.median(failed), 3) if failed else None)
        self.emit("kill_member_left_s", out["member_left_s"] or -1.0, "s",
                  dropped=len(left), of=len(others), session_timeout=self.session_timeout)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU sampling")
    ap.add_argument("--session-timeout", type=float, default=10.0)
    ap.add_argument("--threads", type=float, default=10.0,
                    help="seconds of per-thread CPU sampling on node 1 (0: skip)")
    ap.add_argument("--stagger", type=float, default=0.15, help="seconds between starts")
    ap.add_argument("--settle", type=float, default=32.0,
                    help="seconds after the sweep before the quiet idle sample: the sweep's "
                         "connections close after 30 s without traffic")
    args = ap.parse_args()
    env = servers_env()
    with tempfile.TemporaryDirectory(prefix="skymesh-scale-") as d:
        c = ScaleCluster(args.nodes, env, Path(d), args.session_timeout, args.stagger)
        try:
            c.start()
            c.converge()
            c.sweep()
            c.idle(args.idle, "idle_cpu_cores_after_sweep")  # the sweep's connections open
            time.sleep(max(0.0, args.settle - args.idle))
            c.idle(args.idle)  # a quiet cluster: no connection left between nodes
            c.resources()
            if args.threads:
                c.threads_cpu(1, args.threads)
            c.kill_one()
        finally:
            c.stop()
        exited = c.exited()
        bad = {nid: rc for nid, rc in exited.items() if rc not in (0, -signal.SIGKILL)}
        emit("exited_early", len(bad), "processes", status=bad)


if __name__ == "__main__":
    main()
