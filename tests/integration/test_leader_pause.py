"""Per-service leadership keeps the node mastership's lease rule: two leaders never act
at once, even when the leader is SIGSTOPped past its lease.

Each contender process runs a node whose service leads ``"pause-test"`` through
``Service.leader`` and, while leading, samples ``lease.valid`` every few ms. A paused
leader writes nothing while stopped; after SIGCONT its first sample must already be
False (its lease ran out on its own clock), so no True run of one process may
contain a True sample of the other (the same check as test_coord_master_pause.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_coord_master_pause import read, runs

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TTL = 2.0

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[4])
from node import Node, Service

class Lead(Service):
    def on_start(self, path, ttl):
        self.out = open(path, "w", buffering=1)
        self.ttl = ttl
        self.fork(self.run)

    async def run(self):
        while True:
            async with self.leader("pause-test", ttl=self.ttl) as lease:
                while lease.valid:
                    self.out.write(f"{time.monotonic():.6f} 1\\n")
                    await self.sleep(0.002)
                self.out.write(f"{time.monotonic():.6f} 0\\n")  # stepped down: stop acting

node = Node.standalone(cluster=sys.argv[2], redis_url=sys.argv[1], log_file=sys.argv[3] + ".log")
node.newservice(Lead, sys.argv[3], float(sys.argv[5]))
time.sleep(30)
"""


def test_a_paused_leader_never_overlaps_the_next(servers, cluster, tmp_path) -> None:
    logs = [tmp_path / "a.samples", tmp_path / "b.samples"]
    procs = []
    try:
        for log in logs:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", CHILD, servers["redis"], cluster, str(log), str(ROOT),
                 str(TTL)]))
            time.sleep(1.5)  # a asks first: it leads
        deadline = time.monotonic() + 20
        while not (logs[0].exists() and read(logs[0]) and read(logs[0])[-1][1] == 1):
            assert time.monotonic() < deadline, "first contender never led"
            time.sleep(0.05)
        os.kill(procs[0].pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while not (logs[1].exists() and read(logs[1]) and read(logs[1])[-1][1] == 1):
            assert time.monotonic() < deadline, "no new leader"
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(procs[0].pid, signal.SIGCONT)
        time.sleep(2.0)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait(10)
    a, b = read(logs[0]), read(logs[1])
    runs_a, runs_b = runs(a), runs(b)
    assert runs_a and runs_b
    for s, e in runs_b:
        assert not [t for t, v in a if v and s <= t <= e], "both believed they led"
    for s, e in runs_a:
        assert not [t for t, v in b if v and s <= t <= e], "both believed they led"
    after = [v for t, v in a if t > runs_a[0][1] + 0.5]
    assert after and after[0] == 0  # the resumed leader's first act was to step down
