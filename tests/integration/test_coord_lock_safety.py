"""Lock safety with real contender processes (scripts/lock_contender.py).

Each contender takes one lock repeatedly and logs (fence, enter, exit). No two
critical sections may overlap and fences must strictly increase in entry
order. With a holder SIGSTOPped past its lease, the paused holder must learn
it lost the lock and its late write must be refused by the fenced resource.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coord_helpers import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONTENDER = ROOT / "scripts" / "lock_contender.py"


def _spawn(tmp: Path, servers, cluster, backend, i, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(CONTENDER),
            "--zk",
            servers["zk"],
            "--redis",
            servers["redis"],
            "--cluster",
            cluster,
            "--backend",
            backend,
            "--log",
            str(tmp / f"c{i}.log"),
            "--resource",
            str(tmp / "resource"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / f"c{i}.err", "wb"),
    )


def _sections(tmp: Path) -> list[dict]:
    out = []
    for log in tmp.glob("c*.log"):
        out += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return sorted(out, key=lambda r: r["enter"])


def _check(sections: list[dict], min_sections: int) -> None:
    normal = [s for s in sections if not s.get("victim")]
    assert len(normal) >= min_sections, f"only {len(normal)} critical sections"
    for prev, cur in zip(normal, normal[1:], strict=False):
        assert cur["enter"] >= prev["exit"], f"overlap: {prev} / {cur}"
    fences = [s["fence"] for s in sections]
    assert fences == sorted(fences) and len(set(fences)) == len(fences), "fences not increasing"
    assert all(s["accepted"] for s in normal)
    assert len({s["pid"] for s in normal}) > 1


def _logged(log: Path) -> bool:
    return log.exists() and log.stat().st_size > 0


def _wait_all(procs, tmp: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    errs = {f.name: f.read_text() for f in tmp.glob("c*.err")}
    assert all(p.returncode == 0 for p in procs), f"contender failed: {errs}"


@pytest.mark.parametrize("backend", ["redis", "zk"])
def test_no_overlap_and_fences_increase(tmp_path, servers, cluster, backend):
    start_at = str(time.time() + 4)  # all contend over the same window
    procs = [
        _spawn(
            tmp_path,
            servers,
            cluster,
            backend,
            i,
            "--duration",
            "3",
            "--hold",
            "0.01",
            "--start-at",
            start_at,
        )
        for i in range(3)
    ]
    _wait_all(procs, tmp_path)
    sections = _sections(tmp_path)
    _check(sections, min_sections=20)
    counts = [sum(1 for s in sections if s["pid"] == p.pid) for p in procs]
    assert min(counts) / max(counts) >= 0.5, f"unfair: {counts}"  # FIFO waiting (loose bound)


@pytest.mark.parametrize("backend", ["redis", "zk"])
def test_paused_holder_loses_and_is_fenced(tmp_path, servers, cluster, backend):
    # redis: the lease (ttl 1.5 s) runs out; zk: the session (2 s) expires.
    common = ["--ttl", "1.5", "--session-timeout", "2", "--hold", "0.01"]
    victim = _spawn(tmp_path, servers, cluster, backend, 0, *common, "--duration", "1", "--victim")
    marker = tmp_path / "c0.log.in-cs"
    wait_for(marker.exists, timeout=30, what="victim inside its critical section")
    others = [
        _spawn(tmp_path, servers, cluster, backend, i, *common, "--duration", "6") for i in (1, 2)
    ]
    time.sleep(0.5)
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        # Others must get the lock while the victim is frozen.
        wait_for(
            lambda: any(_logged(tmp_path / f"c{i}.log") for i in (1, 2)),
            timeout=40,
            what="another contender acquiring while the holder is paused",
        )
        time.sleep(1.0)
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    (tmp_path / "c0.log.resume").write_text("go")
    _wait_all([victim, *others], tmp_path)
    sections = _sections(tmp_path)
    v = [s for s in sections if s.get("victim")]
    assert len(v) == 1
    assert v[0]["lost_seen"], "paused holder was not told it lost the lock"
    assert not v[0]["valid_after"]
    assert not v[0]["late_accepted"], "late write with a stale fence was accepted"
    _check(sections, min_sections=10)
