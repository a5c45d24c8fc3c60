"""ZmqTransport over real ZeroMQ on 127.0.0.1, several transports in this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import msgpack
import pytest
import zmq

from harbor import (
    PayloadError,
    PeerDown,
    PeerInfo,
    PeerUnknown,
    TransportClosed,
    ZmqTransport,
    wire,
)


class Peer:
    """A transport plus recorders for everything it hands to the node."""

    def __init__(self, node_id: int, incarnation: int, slow: float = 0.0, **kw) -> None:
        self.slow = slow  # seconds each deliver call takes
        self.cond = threading.Condition()
        self.msgs: list[tuple] = []  # (src_node, src_inc, message)
        self.pubs: list[tuple] = []
        self.downs: list[tuple] = []
        self.logs: list[str] = []
        self.t = ZmqTransport(
            node_id, incarnation, self._deliver, self._pub, self._down, log=self.logs.append, **kw
        )

    def _deliver(self, src, inc, msgs):
        time.sleep(self.slow)
        with self.cond:
            self.msgs.extend((src, inc, m) for m in msgs)
            self.cond.notify_all()

    def _pub(self, channel, src, source, payload):
        with self.cond:
            self.pubs.append((channel, src, source, payload))
            self.cond.notify_all()

    def _down(self, node_id, inc, reason):
        with self.cond:
            self.downs.append((node_id, inc, reason))
            self.cond.notify_all()

    def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait for ``pred``; polled too, since stats() changes notify nobody."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.01))
            return True

    def info(self) -> PeerInfo:
        return PeerInfo(self.t.incarnation, **self.t.endpoints)


def mesh(*peers: Peer) -> None:
    for p in peers:
        p.t.set_peers({q.t.node_id: q.info() for q in peers if q is not p})


@pytest.fixture
def make() -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def _make(node_id: int, incarnation: int | None = None, **kw) -> Peer:
        p = Peer(node_id, incarnation or node_id * 100 + 1, **kw)
        p.t.start()
        made.append(p)
        return p

    yield _make
    for p in made:
        p.t.stop()


def test_100k_messages_in_order_and_batched(make):
    a, b = make(1), make(2)
    mesh(a, b)
    n = 100_000

    def sender(node, tag):
        for i in range(n // 2):
            node.t.send(3 - node.t.node_id, (2 << 32 | 1, tag, i, 0, ["m", i]))

    threads = [threading.Thread(target=sender, args=(a, tag)) for tag in (7, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.wait(lambda: len(b.msgs) >= n)
    for tag in (7, 8):  # order is kept per sender
        assert [m[2] for _, _, m in b.msgs if m[1] == tag] == list(range(n // 2))
    assert all((src, inc) == (1, 101) for src, inc, _ in b.msgs)
    sa, sb = a.t.stats(), b.t.stats()
    assert sa["msgs_out"] == sb["msgs_in"] == n
    assert sa["frames_out"] == sb["frames_in"]
    assert sa["frames_out"] * 20 < sa["msgs_out"], sa  # batching
    assert b.msgs[0][2] in [(2 << 32 | 1, tag, 0, 0, ["m", 0]) for tag in (7, 8)]


def test_publish_subscribe_three_nodes_each_message_once(make):
    a, b, c = make(1), make(2), make(3)
    mesh(a, b, c)
    for p in (b, c):
        p.t.subscribe("sync")
        p.t.subscribe("chat")
    a.t.subscribe("other")
    # PUB/SUB subscriptions propagate asynchronously: probe on "sync" until both see it.
    # Subscriptions travel in order on each connection, so "chat" is live after "sync".
    deadline = time.monotonic() + 10
    while not all(any(x[0] == "sync" for x in p.pubs) for p in (b, c)):
        assert time.monotonic() < deadline
        a.t.publish("sync", 0, None)
        time.sleep(0.02)
    for i in range(500):
        a.t.publish("chat", 1 << 32 | 9, {"i": i})
        a.t.publish("chatroom", 1 << 32 | 9, i)  # a prefix of nobody's topic
    for p in (b, c):
        assert p.wait(lambda p=p: sum(x[0] == "chat" for x in p.pubs) >= 500)
    time.sleep(0.2)
    for p in (b, c):
        chat = [x for x in p.pubs if x[0] == "chat"]
        assert chat == [("chat", 1, 1 << 32 | 9, {"i": i}) for i in range(500)]
        assert not [x for x in p.pubs if x[0] == "chatroom"]
    assert not a.pubs  # no loopback: local delivery is the node's job
    b.t.unsubscribe("chat")
    time.sleep(0.2)
    a.t.publish("chat", 0, "late")
    c.wait(lambda: c.pubs[-1][3] == "late")
    time.sleep(0.1)
    assert b.pubs[-1][3] != "late"


def test_garbage_while_real_traffic_flows(make):
    # max_frame is a cluster-wide setting: a sender packs frames up to its own limit.
    a, b = make(1, max_frame=64 * 1024), make(2, max_frame=64 * 1024)
    mesh(a, b)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(b.t.endpoints["pull"])
    bad = {
        "decode": [b"\xc1", b"not msgpack at all", msgpack.packb({"a": 1})],
        "truncated": [b"", wire.encode_frame(1, 101, 2, 0, [(1, 2, 3, 0, "x" * 50)])[:-7]],
        "version": [msgpack.packb([99, 1, 101, 2, 0, []])],
        "nonmember": [wire.encode_frame(9, 901, 2, 0, [(1, 2, 3, 0, None)])],
        "stale-incarnation": [wire.encode_frame(1, 101, 2, 999, [(1, 2, 3, 0, None)])],
        "misrouted": [wire.encode_frame(1, 101, 5, 0, [(1, 2, 3, 0, None)])],
    }
    n = 20_000
    for i in range(n):
        a.t.send(2, (2 << 32 | 1, 1 << 32 | 1, i, 0, i))
        if i % 2000 == 0:
            for frames in bad.values():
                for f in frames:
                    raw.send(f)
    assert b.wait(lambda: len(b.msgs) >= n)
    rounds = n // 2000
    expected = {r: rounds * len(fs) for r, fs in bad.items()}
    assert b.wait(lambda: all(b.t.stats()[f"drop_{r}"] == c for r, c in expected.items())), (
        b.t.stats(),
        expected,
    )
    assert [m[2] for _, _, m in b.msgs] == list(range(n))
    # Logged at most once per (peer, reason) per 10 s despite `rounds` drops each.
    assert len(b.logs) == len(bad), b.logs
    raw.close()
    ctx.term()


def test_stale_incarnation_and_pinned_replies(make):
    a, b = make(1), make(2, 202)
    mesh(a, b)
    a.t.send(2, (1, 2, 1, 2, "old"), incarnation=201)  # meant for b's predecessor
    a.t.send(2, (1, 2, 2, 2, "pinned"), incarnation=202)
    a.t.send(2, (1, 2, 3, 0, "any"))
    assert b.wait(lambda: len(b.msgs) >= 2)
    time.sleep(0.1)
    assert [m[4] for _, _, m in b.msgs] == ["pinned", "any"]
    assert b.t.stats()["drop_stale-incarnation"] == 1


def test_sender_not_a_member_is_dropped(make):
    a, b = make(1), make(2)
    a.t.set_peers({2: b.info()})  # b does not know a
    a.t.send(2, (1, 2, 3, 0, None))
    assert b.wait(lambda: b.t.stats()["drop_nonmember"] >= 1)
    assert not b.msgs


def test_send_errors(make):
    a, b = make(1), make(2, max_frame=4096)
    mesh(a, b)
    with pytest.raises(PeerUnknown) as info:
        a.t.send(99, (1, 2, 3, 0, None))
    assert info.value.node_id == 99
    with pytest.raises(PayloadError) as perr:
        a.t.send(2, (1, 2, 3, 0, object()))
    assert perr.value.reason == "encode"
    with pytest.raises(PayloadError) as perr:
        b.t.send(1, (1, 2, 3, 0, b"x" * 5000))
    assert perr.value.reason == "oversize"
    with pytest.raises(ValueError):
        a.t.publish("", 0, None)
    a.t.set_peers({})
    with pytest.raises(PeerUnknown):
        a.t.send(2, (1, 2, 3, 0, None))
    a.t.stop()
    with pytest.raises(TransportClosed):
        a.t.send(2, (1, 2, 3, 0, None))


def test_peer_left_replaced_and_unreachable(make):
    a, b = make(1, peer_timeout=0.3, join_grace=0.2), make(2)
    mesh(a, b)
    a.t.send(2, (1, 2, 3, 0, None))
    assert b.wait(lambda: len(b.msgs) == 1)
    a.t.set_peers({2: PeerInfo(299, **b.t.endpoints)})  # b "restarted"
    assert a.wait(lambda: (2, 201, "replaced") in a.downs)
    a.t.set_peers({})
    assert a.wait(lambda: (2, 299, "left") in a.downs)
    # A member whose process never answers: reported once, after grace + timeout.
    a.t.set_peers({3: PeerInfo(301, "tcp://127.0.0.1:9", "tcp://127.0.0.1:9")})
    a.t.send(3, (1, 2, 3, 0, None))
    assert a.wait(lambda: (3, 301, "unreachable") in a.downs, timeout=5)
    time.sleep(0.5)
    assert a.downs == [(2, 201, "replaced"), (2, 299, "left"), (3, 301, "unreachable")]
    assert a.t.stats()["peers_down"] == 3
    with pytest.raises(PeerDown):  # reported down: refused, until membership changes it
        a.t.send(3, (1, 2, 3, 0, None))
    a.t.set_peers({3: PeerInfo(302, "tcp://127.0.0.1:9", "tcp://127.0.0.1:9")})
    a.t.send(3, (1, 2, 3, 0, None))  # the new incarnation is alive until shown otherwise


def test_stop_leaves_no_thread_and_is_idempotent(make):
    before = {t.name for t in threading.enumerate()}
    a, b = make(1), make(2)
    mesh(a, b)
    a.t.send(2, (1, 2, 3, 0, None))
    assert b.wait(lambda: len(b.msgs) == 1)
    assert {"skymesh-harbor-1", "skymesh-harbor-2"} <= {t.name for t in threading.enumerate()}
    for p in (a, b):
        p.t.stop()
        p.t.stop()
    assert {t.name for t in threading.enumerate()} <= before
    with pytest.raises(TransportClosed):
        a.t.start()


def test_slow_deliver_reports_nobody_down(make):
    # Each deliver call takes 0.15 s and ~10 frames queue up: 1.5 s of work, three peer
    # timeouts. libzmq answers the connection's heartbeats meanwhile.
    a = make(1, peer_timeout=0.5)
    b = make(2, peer_timeout=0.5, slow=0.15)
    mesh(a, b)
    for burst in range(10):
        for i in range(100):
            a.t.send(2, (1, 2, burst * 100 + i, 0, None))
        time.sleep(0.02)
    assert b.wait(lambda: b.t.stats()["msgs_in"] == 1000)
    assert b.t.stats()["frames_in"] >= 5
    assert a.downs == []
    assert b.downs == []


def test_a_raising_callback_is_counted_not_fatal(make):
    a = make(1)
    calls = []

    def deliver(src, inc, msgs):
        calls.append(msgs)
        if len(calls) == 1:
            raise RuntimeError("node bug")

    c = Peer(4, 401)
    c.t = ZmqTransport(4, 401, deliver, c._pub, c._down, log=c.logs.append)
    c.t.start()
    try:
        mesh(a, c)
        a.t.send(4, (1, 2, 1, 0, "first"))
        assert c.wait(lambda: c.t.stats()["drop_callback"] == 1)
        a.t.send(4, (1, 2, 2, 0, "second"))
        assert c.wait(lambda: len(calls) == 2)
        assert calls[1][0][4] == "second"
        assert any("node bug" in line for line in c.logs)
    finally:
        c.t.stop()


def test_frames_from_a_node_not_yet_in_membership_wait_for_it(make):
    a, b = make(1), make(2)
    a.t.set_peers({2: b.info()})  # a sees b; b's membership has not shown a yet
    a.t.send(2, (2 << 32 | 1, 1 << 32 | 1, 0, 0, "early"))
    time.sleep(0.3)
    assert b.msgs == []  # parked, not delivered, not dropped
    b.t.set_peers({1: a.info()})
    assert b.wait(lambda: [m[2][4] for m in b.msgs] == ["early"])
    assert b.t.stats()["drop_nonmember"] == 0
