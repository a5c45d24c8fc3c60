"""Liveness without heartbeats in Python (issue 15): ZMTP heartbeats on the PUSH
sockets a node talks through, SUB sockets only while it subscribes, and nothing
at all between idle peers.

What libzmq's heartbeats do against a frozen, killed or starved peer process is
in ``test_harbor_kill.py``; here: the settings and the sockets an idle mesh holds.
"""

from __future__ import annotations

import time

import pytest

from harbor import ZmqTransport
from harbor._ioloop import zmtp_heartbeat
from node.config import ConfigError, load_config

from .test_harbor_zmq import make, mesh  # noqa: F401  (the fixture)


@pytest.mark.parametrize("timeout", [0.3, 1.0, 2.5])
def test_a_frozen_peer_is_cut_within_peer_timeout(timeout: float) -> None:
    ivl, wait = zmtp_heartbeat(timeout)
    # A PING leaves at most IVL after the peer froze; the connection closes WAIT later.
    assert ivl + wait <= timeout * 1000
    assert ivl >= 50 and wait >= ivl  # and a live peer gets twice a ping's time to answer


def test_bad_settings_are_refused() -> None:
    def cb(*a: object) -> None:
        return None

    with pytest.raises(ValueError):
        ZmqTransport(1, 101, cb, cb, cb, peer_timeout=0)
    assert ZmqTransport(1, 101, cb, cb, cb, peer_timeout=2.0).peer_timeout == 2.0
    with pytest.raises(ConfigError, match="harbor_peer_timeout"):
        load_config({"harbor_peer_timeout": 0}, env={})
    # The stretched silence timeout is gone with the Python heartbeats: a leftover
    # setting is a typo-class error, not silently ignored.
    with pytest.raises(ConfigError, match="harbor_peer_timeout_max"):
        load_config({"harbor_peer_timeout_max": 5}, env={})
    assert load_config({}, env={"SKYMESH_HARBOR_PEER_TIMEOUT": "3.5"}).harbor_peer_timeout == 3.5


def test_an_idle_mesh_opens_no_socket_to_its_peers(make) -> None:  # noqa: F811
    ps = [make(i) for i in (1, 2, 3, 4)]
    mesh(*ps)
    time.sleep(0.5)
    for p in ps:
        st = p.t.stats()
        assert (st["peers"], st["pushes"], st["subs"]) == (3, 0, 0), st
        assert st["frames_out"] == st["pubs_out"] == 0
        assert st["ticks"] > 0  # the loop turns (the health check's sign of life)
    # Talking opens one PUSH, to that peer only; a channel opens a SUB to every peer.
    ps[0].t.send(2, (1, 2, 3, 0, "hi"))
    assert ps[1].wait(lambda: len(ps[1].msgs) == 1)
    assert ps[0].wait(lambda: ps[0].t.stats()["pushes"] == 1)
    ps[0].t.subscribe("chat")
    assert ps[0].wait(lambda: ps[0].t.stats()["subs"] == 3)
    ps[0].t.unsubscribe("chat")
    assert ps[0].wait(lambda: ps[0].t.stats()["subs"] == 0)
    assert [p.downs for p in ps] == [[], [], [], []]  # closing a SUB reports nobody down


def test_an_idle_push_is_closed_unless_the_node_still_needs_the_peer(make, monkeypatch) -> None:  # noqa: F811
    import harbor._ioloop as ioloop

    monkeypatch.setattr(ioloop, "IDLE_CLOSE", 0.3)
    needed: set[int] = set()
    a = make(1, in_use=lambda nid: nid in needed)
    b, c = make(2), make(3)
    mesh(a, b, c)
    needed.add(3)  # say, a call pending on node 3
    for dst, peer in ((2, b), (3, c)):
        a.t.send(dst, (1, 2, 3, 0, "hi"))
        assert peer.wait(lambda p=peer: len(p.msgs) == 1)
    assert a.wait(lambda: a.t.stats()["pushes_idle_closed"] == 1, timeout=5)
    time.sleep(0.5)
    st = a.t.stats()
    assert (st["pushes"], st["pushes_idle_closed"]) == (1, 1), st  # node 3's stays open
    assert a.downs == [] and b.downs == []  # closing is not a failure on either side
    a.t.send(2, (1, 2, 3, 0, "again"))  # reopened on demand
    assert b.wait(lambda: len(b.msgs) == 2)
    needed.clear()
    assert a.wait(lambda: a.t.stats()["pushes"] == 0, timeout=5)


def test_an_idle_loop_ticks_once_a_second_and_wakes_for_a_frame(make) -> None:  # noqa: F811
    a, b = make(1), make(2)
    mesh(a, b)
    time.sleep(1.5)  # nothing happens: deep sleep
    t0 = a.t.stats()["ticks"]
    time.sleep(2.0)
    assert a.t.stats()["ticks"] - t0 <= 4  # ~2, not ~20
    b.t.send(1, (1, 2, 3, 0, "wake"))
    assert a.wait(lambda: len(a.msgs) == 1)
    t1 = a.t.stats()["ticks"]
    time.sleep(0.5)
    assert a.t.stats()["ticks"] - t1 >= 3  # back to 0.1 s turns after activity
