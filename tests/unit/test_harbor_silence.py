"""The harbor's silence timeout: a setting, and stretched by late heartbeats (issue 15).

Driven with explicit clock values on the I/O loop's own methods (``heard``,
``check_silence``): nothing here waits or depends on how fast the machine is.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from harbor import PeerInfo, ZmqTransport
from harbor._droplog import DropLog
from harbor._inbound import Inbound
from harbor._ioloop import IoLoop
from harbor._shared import Peer, Shared
from node.config import ConfigError, load_config


@pytest.fixture
def make_loop() -> Iterator:
    made: list[tuple[zmq.Context, list[zmq.Socket]]] = []

    def make(peer_timeout: float = 1.0, peer_timeout_max: float = 5.0):
        ctx: zmq.Context = zmq.Context()
        pull, pub, wake, rx, tx = (ctx.socket(t) for t in (zmq.PULL, zmq.PUB, *[zmq.PAIR] * 3))
        made.append((ctx, [pub, wake]))  # the loop's Inbound closes pull, rx and tx
        downs: list[tuple[int, int, str]] = []
        drops = DropLog(lambda line: None, "t")
        inbound = Inbound(pull, (rx, tx), node_id=1, incarnation=101, deliver=lambda *a: None,
                          droplog=drops, max_frame=1 << 20, policy=None, join_grace=2.0)
        loop = IoLoop(
            Shared(), node_id=1, incarnation=101, ctx=ctx, sockets=(pub, wake), inbound=inbound,
            callbacks=(lambda *a: None, lambda *a: downs.append(a)),
            droplog=drops, max_frame=1 << 20, timing=(0.2, peer_timeout, 2.0, peer_timeout_max),
        )
        made[-1][1].extend([pull, rx, tx])
        peer = Peer(2, PeerInfo(201, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"), added_at=0.0)
        loop.peers[2] = peer
        loop.members[2] = 201
        return loop, peer, downs

    yield make
    for ctx, socks in made:
        for s in socks:
            s.close(0)
        ctx.term()


def _beats(loop: IoLoop, peer: Peer, start: float, gap: float, n: int) -> float:
    t = start
    for _ in range(n):
        loop.heard(peer, t)
        t += gap
    return t - gap  # the last one


def test_on_time_peer_is_silent_after_peer_timeout(make_loop) -> None:
    loop, peer, downs = make_loop(peer_timeout=1.0)
    last = _beats(loop, peer, 10.0, 0.2, 20)
    loop.check_silence(last + 0.99)
    assert downs == []
    loop.check_silence(last + 1.01)
    assert downs == [(2, 201, "silent")]


def test_peer_timeout_is_a_setting(make_loop) -> None:
    loop, peer, downs = make_loop(peer_timeout=3.0, peer_timeout_max=15.0)
    last = _beats(loop, peer, 10.0, 0.2, 20)
    loop.check_silence(last + 2.9)
    assert downs == []  # the fixed 1 s of before would have declared it dead here
    loop.check_silence(last + 3.1)
    assert downs == [(2, 201, "silent")]


def test_late_heartbeats_stretch_the_timeout_up_to_the_cap(make_loop) -> None:
    loop, peer, downs = make_loop(peer_timeout=1.0, peer_timeout_max=5.0)
    # A starved peer heartbeats every 0.9 s instead of 0.2 s: alive, but late.
    last = _beats(loop, peer, 10.0, 0.9, 10)
    assert loop.timeout_of(peer) == pytest.approx(2.7)
    loop.check_silence(last + 2.6)
    assert downs == []  # a false NodeDown with the old fixed 1 s
    loop.check_silence(last + 2.8)
    assert downs == [(2, 201, "silent")]
    # However late it was, the timeout never passes the cap.
    loop2, peer2, _ = make_loop(peer_timeout=1.0, peer_timeout_max=5.0)
    _beats(loop2, peer2, 10.0, 4.0, 3)
    assert loop2.timeout_of(peer2) == 5.0


def test_timeout_shrinks_back_once_heartbeats_are_on_time(make_loop) -> None:
    loop, peer, downs = make_loop(peer_timeout=1.0, peer_timeout_max=5.0)
    last = _beats(loop, peer, 10.0, 1.5, 3)
    assert loop.timeout_of(peer) == pytest.approx(4.5)
    last = _beats(loop, peer, last + 0.2, 0.2, 40)  # 8 s of on-time heartbeats
    assert loop.timeout_of(peer) == 1.0
    loop.check_silence(last + 1.01)
    assert downs == [(2, 201, "silent")]


def test_bad_settings_are_refused() -> None:
    def cb(*a: object) -> None:
        return None

    with pytest.raises(ValueError):
        ZmqTransport(1, 101, cb, cb, cb, peer_timeout=0)
    with pytest.raises(ValueError):
        ZmqTransport(1, 101, cb, cb, cb, peer_timeout=2.0, peer_timeout_max=1.0)
    t = ZmqTransport(1, 101, cb, cb, cb, peer_timeout=2.0)
    assert t.silence_timeouts == (2.0, 10.0)
    with pytest.raises(ConfigError, match="harbor_peer_timeout"):
        load_config({"harbor_peer_timeout": 0}, env={})
    with pytest.raises(ConfigError, match="harbor_peer_timeout_max"):
        load_config({"harbor_peer_timeout": 2, "harbor_peer_timeout_max": 1}, env={})
    cfg = load_config({}, env={"SKYMESH_HARBOR_PEER_TIMEOUT": "3.5"})
    assert (cfg.harbor_peer_timeout, cfg.harbor_peer_timeout_max) == (3.5, 0.0)
