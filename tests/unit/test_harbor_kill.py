"""A peer in another process is SIGKILLed, SIGSTOPped or starved: the transport
reports the first two down within its peer timeout and not the third.

Liveness is libzmq's ZMTP heartbeat on the PUSH socket to the peer (issue 15):
answered by the peer's libzmq I/O thread, which needs no GIL.
"""

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
import json, re, sys, threading, time
from harbor import PeerDown, PeerInfo, ZmqTransport
t = ZmqTransport(2, 202, lambda *a: None, lambda *a: None, lambda *a: None)
t.start()
print(json.dumps(t.endpoints), flush=True)
other = json.loads(sys.stdin.readline())
t.set_peers({1: PeerInfo(other["incarnation"], other["pull"], other["pub"])})
t.send(1, (1 << 32 | 1, 2 << 32 | 1, 0, 0, "hello"))
gaps = [0.0]
def ticker():  # how long the longest stretch without the GIL was, seen from Python
    last = time.monotonic()
    while True:
        time.sleep(0.01)
        now = time.monotonic()
        gaps[0] = max(gaps[0], now - last)
        last = now
threading.Thread(target=ticker, daemon=True).start()
for line in sys.stdin:
    if line.strip() == "hog":
        # Hold the GIL for seconds: the regex engine never releases it. Every Python
        # thread of this process starves, the harbor's included; libzmq's does not.
        # Each longer input doubles the time; stop after one call held it >= 2.5 s.
        gaps[0] = 0.0
        n = 18
        while True:
            t0 = time.monotonic()
            re.match(r"(a+)+$", "a" * n + "b")
            if time.monotonic() - t0 >= 2.5:
                break
            n += 1
        time.sleep(0.05)
        print(json.dumps({"held": gaps[0]}), flush=True)
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
    """Start transport 1, mesh it with the peer process; each has sent the other a frame."""
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
    t.send(2, (2 << 32 | 1, 1 << 32 | 1, 0, 0, "hi"))  # opens the PUSH socket: liveness
    deadline = time.monotonic() + 10
    while t.stats()["frames_out"] == 0:  # sent: the PUSH connected (IMMEDIATE)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return t, downs, down


def test_sigkilled_peer_is_reported_disconnected_quickly(peer_process):
    t, downs, down = _connect(peer_process)
    try:
        killed = time.monotonic()
        peer_process.send_signal(signal.SIGKILL)
        assert down.wait(3), "killed peer not reported"
        time.sleep(1.5)  # the heartbeat timeout follows: it must not report a second time
        assert [d[1:] for d in downs] == [(2, 202, "disconnected")]
        assert downs[0][0] - killed < 2.0  # typically a few ms: the TCP connection drops
        with pytest.raises(PeerDown):
            t.send(2, (2 << 32 | 1, 1 << 32 | 1, 0, 0, "too late"))
    finally:
        t.stop()


def test_stopped_peer_is_reported_within_the_peer_timeout(peer_process):
    t, downs, down = _connect(peer_process)
    try:
        stopped = time.monotonic()
        peer_process.send_signal(signal.SIGSTOP)  # TCP stays up: only heartbeats can tell
        assert down.wait(3), "frozen peer not reported"
        assert [d[1:] for d in downs] == [(2, 202, "disconnected")]
        # libzmq closes the connection 0.67-1.0 s after the freeze (peer_timeout 1 s).
        assert 0.5 < downs[0][0] - stopped < 2.0
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
        assert [d[1:] for d in downs] == [(2, 202, "disconnected")]
    finally:
        peer_process.send_signal(signal.SIGCONT)
        t.stop()


def test_a_starved_peer_is_not_reported_down(peer_process):
    """The attack on the old design: a peer whose Python threads cannot run for 2.5 s
    and more (over twice the peer timeout) is alive, and its libzmq thread still
    answers the pings."""
    t, downs, down = _connect(peer_process)
    try:
        assert peer_process.stdin is not None and peer_process.stdout is not None
        peer_process.stdin.write(b"hog\n")
        peer_process.stdin.flush()
        held = json.loads(peer_process.stdout.readline())["held"]
        assert held > 2.0, f"the peer's Python threads were starved only {held:.2f}s"
        time.sleep(0.5)
        assert downs == [], downs
        t.send(2, (2 << 32 | 1, 1 << 32 | 1, 0, 0, "still there"))  # not PeerDown
    finally:
        t.stop()
