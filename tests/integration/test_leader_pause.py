"""Per-service leadership keeps the node mastership's lease rule: two leaders never act
at once, even when the leader is SIGSTOPped past its lease.

Each contender process runs a node whose service leads ``"pause-test"`` through
``Service.leader`` and, while leading, samples ``lease.valid`` every few ms. A paused
leader writes nothing while stopped; after SIGCONT its first sample must already be
False (its lease ran out on its own clock), so no True run of one process may
contain a True sample of the other (the same check as test_coord_master_pause.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.test_coord_master_pause import pause_the_first

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
    cmds = [[sys.executable, "-c", CHILD, servers["redis"], cluster, str(log), str(ROOT),
             str(TTL)] for log in logs]
    resumed = pause_the_first(cmds, logs, 1.5)
    assert resumed and resumed[0][1] == 0  # the resumed leader's first act: step down
