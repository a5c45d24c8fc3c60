"""InprocTransport: the in-process double the node's unit tests use."""

from __future__ import annotations

import threading
import time

import pytest

import harbor
from harbor import (
    InprocHub,
    InprocTransport,
    PayloadError,
    PeerDown,
    PeerInfo,
    PeerUnknown,
    Transport,
)


class Rec:
    def __init__(self, hub: InprocHub, node_id: int, inc: int) -> None:
        self.msgs: list = []
        self.pubs: list = []
        self.downs: list = []
        self.t = InprocTransport(
            node_id,
            inc,
            lambda s, i, ms: self.msgs.extend((s, i, m) for m in ms),
            lambda *a: self.pubs.append(a),
            lambda *a: self.downs.append(a),
            hub=hub,
        )
        self.t.start()

    def info(self) -> PeerInfo:
        return PeerInfo(self.t.incarnation, **self.t.endpoints)


def until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.fixture
def pair():
    hub = InprocHub()
    a, b = Rec(hub, 1, 11), Rec(hub, 2, 22)
    a.t.set_peers({2: b.info()})
    b.t.set_peers({1: a.info()})
    yield hub, a, b
    a.t.stop()
    b.t.stop()


def test_is_a_transport():
    assert issubclass(InprocTransport, Transport)
    assert issubclass(harbor.ZmqTransport, Transport)


def test_messages_keep_order_and_wire_semantics(pair):
    _, a, b = pair
    for i in range(1000):
        a.t.send(2, (2 << 32 | 1, 1 << 32 | 1, i, 0, ("t", i)))
    a.t.send(2, (1, 2, 0, 2, "stale"), incarnation=21)
    a.t.send(2, (1, 2, 0, 2, "pinned"), incarnation=22)
    until(lambda: len(b.msgs) == 1001)
    assert [m[2] for _, _, m in b.msgs[:1000]] == list(range(1000))
    assert b.msgs[0] == (1, 11, (2 << 32 | 1, 1 << 32 | 1, 0, 0, ["t", 0]))  # tuples -> lists
    assert b.msgs[-1][2][4] == "pinned"
    until(lambda: b.t.stats()["drop_stale-incarnation"] == 1)


def test_errors(pair):
    _, a, _ = pair
    with pytest.raises(PeerUnknown):
        a.t.send(3, (1, 2, 3, 0, None))
    with pytest.raises(PayloadError):
        a.t.send(2, (1, 2, 3, 0, object()))


def test_pubsub_and_kill(pair):
    hub, a, b = pair
    b.t.subscribe("chat")
    time.sleep(0.05)
    a.t.publish("chat", 7, [1])
    a.t.publish("other", 7, [2])
    until(lambda: b.pubs == [("chat", 1, 7, [1])])
    hub.kill(2)
    until(lambda: a.downs == [(2, 22, "disconnected")])
    with pytest.raises(PeerDown):
        a.t.send(2, (1, 2, 3, 0, None))
    a.t.set_peers({})
    time.sleep(0.05)
    assert a.downs == [(2, 22, "disconnected")]  # once per incarnation
    assert not [t for t in threading.enumerate() if t.name == "skymesh-harbor-inproc-2"]


def test_exports_are_exactly_the_public_names():
    public = {n for n in dir(harbor) if not n.startswith("_")}
    modules = {
        "curve", "errors", "inproc", "keys", "listener", "transport", "wire", "zmq_transport",
    }
    assert set(harbor.__all__) == public - modules
    for mod in modules:
        sub = getattr(harbor, mod)
        for name in sub.__all__:
            assert hasattr(sub, name)
            if name in harbor.__all__:
                assert getattr(harbor, name) is getattr(sub, name)


def test_wire_policy_applies_in_process_too():
    from harbor import WirePolicy

    hub = InprocHub()
    got: list = []
    policy = WirePolicy(frozenset({0}))
    a = InprocTransport(1, 11, lambda *x: None, lambda *x: None, lambda *x: None, hub=hub)
    b = InprocTransport(
        2, 22, lambda s, i, m: got.extend(m), lambda *x: None, lambda *x: None,
        hub=hub, wire_policy=policy,
    )  # fmt: skip
    for t in (a, b):
        t.start()
    try:
        a.set_peers({2: PeerInfo(22, **b.endpoints)})
        b.set_peers({1: PeerInfo(11, **a.endpoints)})
        time.sleep(0.05)
        a.send(2, (1, 2, 3, 4, None))  # TIMER-like kind 4: refused
        a.send(2, (1, 2, 3, 0, "ok"))
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [m[4] for m in got] == ["ok"]
        assert b.stats()["drop_kind"] == 1
    finally:
        a.stop()
        b.stop()
