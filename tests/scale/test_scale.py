"""64 real node processes on loopback in one cluster (issue 15, item 1).

Prints the figures bench/scale.py prints (convergence, idle CPU, RSS, fds,
threads, ZooKeeper watches, the all-pairs sweep, a SIGKILL seen by the
others) and asserts only correctness, never speed: every node sees every
member and name, the 4,032-call sweep has no error, the killed node's
parked calls fail with ``NodeDown`` on all 63 others and it leaves their
membership, and no node exits on its own. ``SKYMESH_SCALE_NODES`` changes
the count (64 by default). Every process is stopped whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from bench.scale import ScaleCluster
from tests.integration.conftest import _dump_logs_on_failure, servers  # noqa: F401

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

N = int(os.environ.get("SKYMESH_SCALE_NODES", "64"))


def test_many_nodes_converge_call_each_other_and_see_a_kill(
    servers: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[dict[str, Any]] = []

    def record(name: str, value: Any, unit: str, **extra: Any) -> dict[str, Any]:
        rec = {"name": name, "value": value, "unit": unit, **extra}
        lines.append(rec)
        with capsys.disabled():
            print(f"\nscale: {json.dumps(rec)}", end="")
        return rec

    env = {"SKYMESH_ZK_HOSTS": servers["zk"], "SKYMESH_REDIS_URL": servers["redis"]}
    c = ScaleCluster(N, env, tmp_path, session_timeout=10.0, stagger=0.15, out=record)
    problems: list[str] = []
    try:
        c.start()
        c.converge(timeout=240)
        if not c.figures["converged"]:
            problems.append(f"not converged on nodes {c.figures['not_converged']}")
        c.idle(30.0)
        c.resources()
        sweep = c.sweep(timeout=60)
        if sweep["errors"] or sweep["calls"] != N * (N - 1):
            problems.append(f"sweep: {sweep['calls']} of {N * (N - 1)} calls answered, "
                            f"{len(sweep['errors'])} errors, first {sweep['errors'][:5]}")
        kill = c.kill_one(timeout=60)
        if kill["failed_before_kill"]:
            problems.append(f"kill: parked calls failed before the kill on nodes "
                            f"{kill['failed_before_kill']} (a false NodeDown)")
        if kill["not_armed"] or kill["calls_failed"] != N - 1 or kill["errors"] != ["NodeDown"]:
            problems.append(f"kill: parked calls failed on {kill['calls_failed']} of {N - 1} "
                            f"nodes with {kill['errors']}, not armed {kill['not_armed']}")
        if kill["members_dropped"] != N - 1 or kill["still_member"]:
            problems.append(f"kill: dropped from membership on {kill['members_dropped']} of "
                            f"{N - 1}; still a member on {kill['still_member']}")
        exited = {nid: rc for nid, rc in c.exited().items() if nid != kill["victim"]}
        if exited:
            problems.append(f"node processes exited on their own: {exited}")
    finally:
        c.stop()
    bad = {nid: rc for nid, rc in c.exited().items() if rc not in (0, -signal.SIGKILL)}
    if bad:
        problems.append(f"exit status after SIGTERM: {bad}")
    if problems:
        sample = sorted(set(c.figures.get("not_converged", [])[:2]) | {1})
        logs = "\n".join(f"----- node {nid} -----\n{c.output(nid)}" for nid in sample)
        pytest.fail("\n".join(problems) + "\n" + logs)
