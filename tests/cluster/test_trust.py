"""Trust between nodes (issue 10): every attack of the issue replayed against a secured
two-node cluster (real node processes, CURVE keys from ``skymesh keys init``), with raw
pyzmq and the harbor's own wire format. Nothing is delivered, nothing is executed,
memory stays bounded, and the real peers keep being served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from harbor.wire import encode_message, join_frame
from node import CallError, Node
from node.message import CALL, REPLY, SEND, SOCKET, SYSTEM, TIMER
from tests.cluster.conftest import ROOT, SESSION_TIMEOUT, wait_members
from tests.conftest import wait_for

pytestmark = pytest.mark.cluster

TARGET = "tests.cluster.services:Target"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    out = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "node.cli", "keys", "init", str(out), "--nodes",
                    "1,2,100"], cwd=ROOT, check=True, capture_output=True)
    return out


@pytest.fixture
def secured(nodes, keys: Path, servers: dict[str, str], cluster: str, tmp_path: Path):
    p1 = nodes(1, [{"class": TARGET, "args": ["t1"]}], SKYMESH_KEYS_DIR=str(keys))
    p2 = nodes(2, [{"class": TARGET, "args": ["t2"]}], SKYMESH_KEYS_DIR=str(keys))
    driver = Node(node_id=100, workers=2, cluster=cluster, zk_hosts=servers["zk"],
                  redis_url=servers["redis"], session_timeout=SESSION_TIMEOUT,
                  log_file=str(tmp_path / "driver.log"), call_timeout=20, keys_dir=str(keys))
    driver.start()
    try:
        wait_members(driver, {1, 2})
        t1 = wait_for(lambda: driver.coord.query_name("t1"), timeout=30)
        wait_for(lambda: driver.coord.query_name("t2"), timeout=30)
        yield driver, p1, p2, t1
    finally:
        driver.stop()


def _frames(
    driver: Node, target: int, kind: int, payload: Any, session: int = 0, claim: int = 2
) -> bytes:
    info = driver.coord.members()[1]
    me = driver.coord.members()[claim]  # claim to be that node, with its real incarnation
    msg = encode_message((target, (claim << 32) | 1, session, kind, payload))
    return join_frame(claim, me.incarnation, 1, info.incarnation, [msg])


def _raw_push(endpoint: str, frames: list[bytes], curve: dict[str, bytes] | None = None) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 2000)
    if curve:
        s.curve_publickey, s.curve_secretkey = curve["public"], curve["secret"]
        s.curve_serverkey = curve["server"]
    s.connect(endpoint)
    for f in frames:
        s.send(f)
    time.sleep(0.5)
    s.close()
    ctx.term()


def _state(driver: Node, t1: int) -> dict[str, Any]:
    return driver.call(t1, "state")


def test_forged_frames_without_keys_deliver_nothing(secured) -> None:
    driver, p1, _, t1 = secured
    pull = driver.coord.members()[1].endpoints["pull"]
    assert driver.coord.members()[1].endpoints["key"]  # the key is advertised
    before = _state(driver, t1)
    frames = [
        _frames(driver, t1, CALL, ["hit", []], session=7),
        _frames(driver, t1, SEND, ["hit", []]),
        _frames(driver, t1, SYSTEM, ["kill", None]),
        _frames(driver, t1, SYSTEM, ["start", ["evil"]]),
        _frames(driver, t1, SOCKET, ["data", 1, b"x"]),
        _frames(driver, t1, TIMER, None),
    ]
    # Incarnation guessing: a node id with every incarnation near the real one.
    inc = driver.coord.members()[2].incarnation
    for guess in range(inc - 100, inc + 100):
        msg = encode_message((t1, 0, 0, SEND, ["hit", []]))
        frames.append(join_frame(2, guess, 1, 0, [msg]))
    _raw_push(pull, frames)
    time.sleep(0.5)
    after = _state(driver, t1)
    assert after["hits"] == before["hits"] and after["starts"] == 1 and after["socket"] == 0
    assert driver.call(t1, "hit") == before["hits"] + 1  # still serving its real peers


def test_a_key_outside_the_allow_list_is_refused(secured, tmp_path: Path) -> None:
    driver, _, _, t1 = secured
    ep = driver.coord.members()[1].endpoints
    public, secret = zmq.curve_keypair()
    before = _state(driver, t1)
    _raw_push(ep["pull"], [_frames(driver, t1, SEND, ["hit", []])],
              {"public": public, "secret": secret, "server": ep["key"].encode()})
    assert _state(driver, t1)["hits"] == before["hits"]


def test_a_member_key_cannot_speak_as_another_member(secured, keys: Path) -> None:
    """Node 100's key, sending frames that claim node 2: dropped as an impostor."""
    from harbor.keys import load

    driver, _, _, t1 = secured
    creds = load(keys, 100)
    ep = driver.coord.members()[1].endpoints
    before = _state(driver, t1)
    _raw_push(ep["pull"], [_frames(driver, t1, SEND, ["hit", []])],
              {"public": creds.public_key.encode(), "secret": creds.secret_key.encode(),
               "server": ep["key"].encode()})
    assert _state(driver, t1)["hits"] == before["hits"]


def test_a_forged_reply_from_a_member_does_not_wake_a_sleeper(secured, keys: Path) -> None:
    """Even a real member's key (node 100's, as itself) cannot answer a call it was not
    asked: a REPLY is taken only from the node and handle the call went to."""
    import threading

    from harbor.keys import load

    driver, _, _, t1 = secured
    out: list[Any] = []
    threading.Thread(target=lambda: out.append(driver.call(t1, "nap", 2.0)), daemon=True).start()
    time.sleep(0.3)
    creds = load(keys, 100)
    ep = driver.coord.members()[1].endpoints
    forged = [_frames(driver, t1, REPLY, "forged", session=s, claim=100) for s in range(1, 50)]
    _raw_push(ep["pull"], forged, {"public": creds.public_key.encode(),
                                   "secret": creds.secret_key.encode(),
                                   "server": ep["key"].encode()})
    assert _state(driver, t1)["woke"] == 0 and not out
    wait_for(lambda: out == ["rested"], timeout=10)


def test_launcher_and_logger_routes_are_closed(secured, tmp_path: Path) -> None:
    driver, p1, _, t1 = secured
    planted = tmp_path / "planted.pth"
    with pytest.raises(CallError) as info:
        driver.call("@launcher:1", "spawn", "os:system", ["touch /tmp/pwned"])
    assert "PermissionError" in str(info.value)
    with pytest.raises(CallError):
        driver.call("@launcher:1", "host_unique", "os:system", ["true"], timeout=5)
    with pytest.raises(CallError) as info:
        driver.call("@launcher:1", "write", 0.0, 0, "error", "x")
    # The logger is reached only through the node's own log path: no such handler.
    logger = driver.call("@launcher:1", "list")
    assert any(c == "Logger" for c in logger.values())
    assert not planted.exists() and not Path("/tmp/pwned").exists()


def test_insecure_is_refused_off_loopback_without_keys(servers: dict[str, str], cluster: str,
                                                       tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    env.update({"PYTHONPATH": str(ROOT), "SKYMESH_CLUSTER": cluster, "SKYMESH_NODE_ID": "7",
                "SKYMESH_ZK_HOSTS": servers["zk"], "SKYMESH_BIND": "0.0.0.0",
                "SKYMESH_ADVERTISE": "127.0.0.1"})
    p = subprocess.run([sys.executable, "-m", "node.cli", "node"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "config error: the harbor binds" in lines[0], p.stderr
    env["SKYMESH_INSECURE"] = "true"
    env["SKYMESH_SERVICES"] = json.dumps([])
    log = tmp_path / "insecure.log"
    env["SKYMESH_LOG_FILE"] = str(log)
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "node"], cwd=ROOT, env=env)
    try:
        wait_for(lambda: log.exists() and "INSECURE" in log.read_text(), timeout=30)
    finally:
        proc.terminate()
        proc.wait(15)
