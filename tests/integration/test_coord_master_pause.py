"""Two masters never act at once: the master is SIGSTOPped past its session timeout.

Each contender process samples ``is_master()`` every 2 ms and writes every sample.
A belief interval is a run of True samples; the paused process writes nothing while
stopped. After SIGCONT its first sample must already be False (its lease ran out),
so no True run of one process may contain a True sample of the other.
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

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SESSION = 2.0

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[4])
import coord
c = coord.connect(sys.argv[1], None, sys.argv[2], session_timeout=float(sys.argv[5]))
c.start(None, "h", 0, {})
out = open(sys.argv[3], "w", buffering=1)
end = time.monotonic() + 30
while time.monotonic() < end:
    out.write(f"{time.monotonic():.6f} {int(c.is_master())}\\n")
    time.sleep(0.002)
"""


def runs(samples: list[tuple[float, int]]) -> list[tuple[float, float]]:
    """Intervals covered by consecutive True samples (a gap over 50 ms ends a run)."""
    out: list[tuple[float, float]] = []
    start = last = None
    for t, s in samples:
        if s and start is not None and last is not None and t - last <= 0.05:
            last = t
            continue
        if start is not None and last is not None:
            out.append((start, last))
        start, last = (t, t) if s else (None, None)
    if start is not None and last is not None:
        out.append((start, last))
    return out


def read(path: Path) -> list[tuple[float, int]]:
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            rows.append((float(parts[0]), int(parts[1])))
    return rows


def pause_the_first(
    cmds: list[list[str]], logs: list[Path], stagger: float
) -> list[tuple[float, int]]:
    """Start both contenders (the first leads), SIGSTOP the first until the second leads,
    SIGCONT it, and check no True run of one contains a True sample of the other.
    Returns the first contender's samples."""
    procs = []
    try:
        for cmd in cmds:
            procs.append(subprocess.Popen(cmd))
            time.sleep(stagger)  # the first asks first: it leads
        deadline = time.monotonic() + 20
        while not (logs[0].exists() and read(logs[0]) and read(logs[0])[-1][1] == 1):
            assert time.monotonic() < deadline, "first contender never led"
            time.sleep(0.05)
        os.kill(procs[0].pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while not (logs[1].exists() and read(logs[1]) and read(logs[1])[-1][1] == 1):
            assert time.monotonic() < deadline, "no failover"
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
    return [(t, v) for t, v in a if t > runs_a[0][1] + 0.5]


def test_paused_master_never_overlaps_the_new_one(servers, cluster, tmp_path) -> None:
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    cmds = [[sys.executable, "-c", CHILD, servers["zk"], cluster, str(log), str(ROOT),
             str(SESSION)] for log in logs]
    resumed = pause_the_first(cmds, logs, 1.0)
    assert resumed  # the paused process ran again and sampled False from the first sample
