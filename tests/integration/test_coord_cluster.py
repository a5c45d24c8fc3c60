"""Membership, names, groups, config and election against a real ZooKeeper."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from coord_helpers import Recorder, wait_for

import coord

pytestmark = pytest.mark.integration


def test_membership_ids_incarnations_and_events(make_coord):
    rec = Recorder()
    a = make_coord(listener=rec)
    b = make_coord()
    assert a.node.node_id != b.node.node_id
    wait_for(lambda: set(a.members()) == {a.node.node_id, b.node.node_id}, what="members")
    assert a.members()[b.node.node_id] == b.node
    wait_for(lambda: ("join", b.node.node_id, b.node.incarnation) in rec.events, what="join")
    b_id, b_inc = b.node.node_id, b.node.incarnation
    b.stop()
    b.stop()  # idempotent
    wait_for(lambda: ("leave", b_id, b_inc) in rec.events, what="leave event")
    assert b_id not in a.members()
    again = make_coord(node_id=b_id)
    assert again.node.incarnation != b_inc
    wait_for(lambda: a.members().get(b_id) == again.node, what="rejoin")


def test_node_id_taken_at_once(make_coord):
    # The holder answers on an endpoint it advertised: a live node, refused at once.
    with socket.create_server(("127.0.0.1", 0)) as live:
        port = live.getsockname()[1]
        a = make_coord(endpoints={"pull": f"tcp://127.0.0.1:{port}"})
        t0 = time.monotonic()
        with pytest.raises(coord.NodeIdTaken, match="live node"):
            make_coord(node_id=a.node.node_id, endpoints={"pull": "tcp://127.0.0.1:2"})
        assert time.monotonic() - t0 < 3


def test_node_id_of_a_silent_live_session_refused_after_a_bounded_wait(make_coord, caplog):
    # Nothing answers on the holder's endpoints, but its session is alive: the newcomer
    # waits (about its session timeout plus a margin), then gives up; the holder keeps it.
    a = make_coord()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="coord"), pytest.raises(
        coord.NodeIdTaken, match="did not end within"
    ):
        make_coord(node_id=a.node.node_id, session_timeout=2.0)
    took = time.monotonic() - t0
    assert 4.5 < took < 10, took  # the bound is 1.5 * 2 s + 2 s
    assert len([r for r in caplog.records if "waiting up to" in r.getMessage()]) == 1
    assert a.members()[a.node.node_id] == a.node


def test_names_register_query_wait_and_taken(make_coord):
    a, b = make_coord(), make_coord()
    a.register_name("lobby", 0x100000001)
    a.register_name("lobby", 0x100000001)  # same handle again is fine
    assert a.query_name("lobby") == 0x100000001
    assert b.wait_name("lobby", 20) == 0x100000001
    with pytest.raises(coord.NameTaken):
        b.register_name("lobby", 0x200000001)
    with pytest.raises(coord.NameNotFound):
        b.wait_name("nobody", 0.3)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(a.wait_name("later", 20)))
    t.start()
    b.register_name("later", 7)
    t.join(30)
    assert got == [7]
    assert b.names() == {"lobby": 0x100000001, "later": 7} or wait_for(
        lambda: b.names() == {"lobby": 0x100000001, "later": 7}, what="names"
    )
    a.unregister_name("lobby", 999)  # wrong handle: no-op
    assert a.query_name("lobby") == 0x100000001
    a.unregister_name("lobby", 0x100000001)
    wait_for(lambda: b.query_name("lobby") is None, what="name gone on b")
    b.register_name("lobby", 0x200000001)


def test_unregister_handle_drops_names_and_groups(make_coord):
    a, b = make_coord(), make_coord()
    a.register_name("x", 5)
    a.register_name("y", 5)
    a.register_name("z", 6)
    a.join_group("g", 5)
    a.join_group("g", 6)
    wait_for(lambda: b.group_members("g") == [5, 6], what="group")
    a.unregister_handle(5)
    wait_for(lambda: b.names() == {"z": 6}, what="names of 5 gone")
    wait_for(lambda: b.group_members("g") == [6], what="group member 5 gone")


def test_names_vanish_when_node_stops(make_coord):
    a, b = make_coord(), make_coord()
    a.register_name("svc", 1)
    a.join_group("grp", 1)
    wait_for(lambda: b.query_name("svc") == 1, what="name")
    a.stop()
    wait_for(
        lambda: b.query_name("svc") is None and b.group_members("grp") == [],
        what="ephemeral entries gone",
    )


def test_groups_and_pick_agree_across_nodes(make_coord):
    a, b = make_coord(), make_coord()
    for h in (11, 12, 13):
        a.join_group("chat", h)
    b.join_group("chat", 14)
    a.join_group("chat", 14)  # idempotent from another node too
    wait_for(lambda: a.group_members("chat") == [11, 12, 13, 14], what="a sees group")
    wait_for(lambda: b.group_members("chat") == [11, 12, 13, 14], what="b sees group")
    assert all(a.pick("chat", k) == b.pick("chat", k) for k in range(200))
    assert {a.pick("chat", k) for k in range(200)} == {11, 12, 13, 14}
    assert a.groups() == {"chat": [11, 12, 13, 14]}
    before = {k: a.pick("chat", k) for k in range(2000)}
    a.leave_group("chat", 12)
    wait_for(lambda: b.group_members("chat") == [11, 13, 14], what="leave")
    after = {k: b.pick("chat", k) for k in range(2000)}
    moved = [k for k in before if before[k] != after[k]]
    assert all(before[k] == 12 for k in moved)
    assert b.pick("nogroup", 1) is None


def test_config_set_get_watch(make_coord):
    rec = Recorder()
    a, b = make_coord(listener=rec), make_coord()
    a.watch_config("limits")
    b.config_set("limits", {"max": 10})
    wait_for(lambda: a.config_get("limits") == {"max": 10}, what="config seen")
    wait_for(lambda: ("config", "limits", {"max": 10}) in rec.events, what="on_config")
    b.config_set("other", [1, 2])
    wait_for(lambda: a.config_list() == {"limits": {"max": 10}, "other": [1, 2]}, what="list")
    assert a.config_get("missing", 42) == 42
    b.config_set("limits", {"max": 11})
    wait_for(lambda: ("config", "limits", {"max": 11}) in rec.events, what="second change")
    assert not [e for e in rec.of("config") if e[1] == "other"]  # not watched


def test_one_master_and_epoch_grows_on_failover(make_coord):
    recs = [Recorder() for _ in range(3)]
    cs = [make_coord(listener=r) for r in recs]
    wait_for(lambda: sum(c.is_master() for c in cs) == 1, what="one master")
    master = next(c for c in cs if c.is_master())
    mid, epoch = master.master()
    assert mid == master.node.node_id and epoch >= 1
    wait_for(lambda: all(c.master() == (mid, epoch) for c in cs), what="all agree")
    master.stop()
    rest = [c for c in cs if c is not master]
    wait_for(lambda: sum(c.is_master() for c in rest) == 1, what="new master")
    new = next(c for c in rest if c.is_master())
    new_id, new_epoch = new.master()
    assert new_id == new.node.node_id and new_id != mid
    assert new_epoch > epoch
    rec = recs[cs.index(new)]
    wait_for(lambda: ("master", True, new_epoch, new_id) in rec.events, what="on_master")


def test_submit_runs_on_coord_thread(make_coord):
    a = make_coord()
    done = threading.Event()
    out: list[object] = []

    def cb(result, exc):
        out.append((result, exc, threading.current_thread().name))
        done.set()

    a.submit(a.register_name, "via-pool", 3, callback=cb)
    assert done.wait(20)
    assert out[0][0] is None and out[0][1] is None and "coord" in out[0][2]
    done.clear()
    a.submit(a.register_name, "", 3, callback=cb)
    assert done.wait(20)
    assert isinstance(out[1][1], ValueError)


def test_epoch_created_after_nodes_watch_reaches_every_node(make_coord, servers, cluster):
    # Issue 12: a node that read the election while ``epoch`` did not exist yet set no
    # watch on it (``get`` on a missing node sets none) and kept reporting epoch 0.
    # A foreign candidate holds the lowest election seat, so none of the coordinators
    # leads or bumps the epoch; the epoch appears only once all of them are watching.
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=servers["zk"], timeout=10)
    zk.start(15)
    try:
        zk.ensure_path(f"/skymesh/{cluster}/election")
        zk.create(f"/skymesh/{cluster}/election/n-", b"99", ephemeral=True, sequence=True)
        recs = [Recorder() for _ in range(3)]
        cs = [make_coord(listener=r) for r in recs]
        wait_for(lambda: all(c.master() == (99, 0) for c in cs), what="all see master 99")
        assert not zk.exists(f"/skymesh/{cluster}/epoch")
        zk.create(f"/skymesh/{cluster}/epoch", b"7")
        wait_for(lambda: all(c.master() == (99, 7) for c in cs), timeout=10, what="epoch 7")
        for r in recs:
            wait_for(lambda r=r: ("master", False, 7, 99) in r.events, what="on_master epoch 7")
        assert not any(c.is_master() for c in cs)
    finally:
        zk.stop()
        zk.close()
