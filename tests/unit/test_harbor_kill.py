"""A peer in another process is SIGKILLed (or SIGSTOPped): the transport reports it down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harbor import PeerDown, PeerInfo, ZmqTransport

ROOT = Path(__file__).resolve().parents[2]

PEER = """
import json, sys, time
from harbor import PeerDown, PeerInfo, ZmqTransport
t = ZmqTransport(2, 202, lambda *a: None, lambda *a: None, lambda *a: None)
t.start()
print(json.dumps(t.endpoints), flush=True)
other = json.loads(sys.stdin.readline())
t.set_peers({1: PeerInfo(other["incarnation"], other["pull"], other["pub"])})
t.send(1, (1 << 32 | 1, 2 << 32 | 1, 0, 0, "hello"))
time.sleep(60)
"""


@pytest.fixture
def peer_process():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", PEER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def _connect(proc: subprocess.Popen) -> tuple[ZmqTransport, list, threading.Event]:
    """Start transport 1, mesh it with the peer process, wait until each has heard the other."""
    downs: list = []
    got, down = threading.Event(), threading.Event()

    def on_down(*a):
        downs.append((time.monotonic(), *a))
        down.set()

    t = ZmqTransport(1, 101, lambda *a: got.set(), lambda *a: None, on_down)
    t.start()
    assert proc.stdin is not None
    assert proc.stdout is not None
    endpoints = json.loads(proc.stdout.readline())
    t.set_peers({2: PeerInfo(202, endpoints["pull"], endpoints["pub"])})
    proc.stdin.write((json.dumps({"incarnation": 101, **t.endpoints}) + "\n").encode())
    proc.stdin.flush()
    assert got.wait(10), "no message from the peer process"
    deadline = time.monotonic() + 10
    while t.stats()["heartbeats_in"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t.send(2, (2 << 32 | 1, 1 << 32 | 1, 0, 0, "hi"))  # opens the PUSH socket too
    time.sleep(0.1)
    return t, downs, down


def test_sigkilled_peer_is_reported_disconnected_quickly(peer_process):
    t, downs, down = _connect(peer_process)
    try:
        killed = time.monotonic()
        peer_process.send_signal(signal.SIGKILL)
        assert down.wait(3), "killed peer not reported"
        time.sleep(1.5)  # heartbeat silence follows: it must not report a second time
        assert [d[1:] for d in downs] == [(2, 202, "disconnected")]
        assert downs[0][0] - killed < 2.0  # typically a few ms: the TCP connection drops
        with pytest.raises(PeerDown):
            t.send(2, (2 << 32 | 1, 1 << 32 | 1, 0, 0, "too late"))
    finally:
        t.stop()


def test_stopped_peer_is_reported_silent(peer_process):
    t, downs, down = _connect(peer_process)
    try:
        stopped = time.monotonic()
        peer_process.send_signal(signal.SIGSTOP)  # TCP stays up: only heartbeats can tell
        assert down.wait(3), "frozen peer not reported"
        assert [d[1:] for d in downs] == [(2, 202, "silent")]
        assert 0.7 < downs[0][0] - stopped < 3.0  # ~1 s of silence
    finally:
        peer_process.send_signal(signal.SIGCONT)
        t.stop()


def test_stopped_peer_heard_again_is_revived(peer_process):
    t, downs, down = _connect(peer_process)
    try:
        peer_process.send_signal(signal.SIGSTOP)
        assert down.wait(3), "frozen peer not reported"
        with pytest.raises(PeerDown):
            t.send(2, (2 << 32 | 1, 1 << 32 | 1, 0, 0, "while down"))
        peer_process.send_signal(signal.SIGCONT)  # the partition heals
        deadline = time.monotonic() + 10
        while t.stats().get("peers_revived", 0) == 0:
            assert time.monotonic() < deadline, "peer never revived"
            time.sleep(0.01)
        t.send(2, (2 << 32 | 1, 1 << 32 | 1, 0, 0, "after"))  # accepted again
        assert [d[1:] for d in downs] == [(2, 202, "silent")]
    finally:
        peer_process.send_signal(signal.SIGCONT)
        t.stop()
