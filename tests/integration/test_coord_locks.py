"""Redis and ZooKeeper locks against the real servers, including faults."""

from __future__ import annotations

import time

import pytest
import redis
from coord_helpers import take, wait_for

import coord

pytestmark = pytest.mark.integration

BACKENDS = ["redis", "zk"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_acquire_release_fences_grow(make_coord, backend):
    a, b = make_coord(), make_coord()
    fences = []
    for c in (a, b, a):
        _, w = take(c, "k", backend)
        held = w.wait()
        assert isinstance(held, coord.Held), held
        assert held.valid and held.key == "k" and held.backend == backend
        fences.append(held.fence)
        held.release()
        held.release()  # twice is fine
        assert not held.valid
    assert fences == sorted(fences) and len(set(fences)) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_wait_timeout_and_fifo_handover(make_coord, backend):
    a, b = make_coord(), make_coord()
    _, w1 = take(a, "k", backend)
    h1 = w1.wait()
    _, w2 = take(b, "k", backend, wait=0.5)
    assert isinstance(w2.wait(), coord.LockTimeout)
    _, w3 = take(b, "k", backend, wait=30)
    time.sleep(0.3)
    _, w4 = take(a, "k", backend, wait=30)
    time.sleep(0.3)
    assert not w3.done.is_set()
    h1.release()
    h3 = w3.wait()
    assert isinstance(h3, coord.Held) and h3.fence > h1.fence
    time.sleep(0.3)
    assert not w4.done.is_set()  # FIFO: w4 came after w3
    h3.release()
    h4 = w4.wait()
    assert h4.fence > h3.fence
    h4.release()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_waiter_leaves_no_entry_and_cancel_held_releases(
    make_coord, backend, servers, cluster
):
    a, b = make_coord(), make_coord()
    req1, w1 = take(a, "k", backend)
    w1.wait()
    req2, w2 = take(b, "k", backend, wait=None)
    time.sleep(0.5)
    req2.cancel()
    req2.cancel()
    req1.cancel()  # releases the held lock
    assert not w1.result.valid
    _, w3 = take(b, "k", backend, wait=20)
    h3 = w3.wait()
    assert isinstance(h3, coord.Held)
    time.sleep(0.3)
    assert not w2.done.is_set()  # a cancelled request never fires
    if backend == "redis":
        r = redis.Redis.from_url(servers["redis"])
        assert r.zcard(f"skymesh:{cluster}:lock:k:q") == 0
    else:
        from kazoo.client import KazooClient

        zk = KazooClient(hosts=servers["zk"])
        zk.start(15)
        assert len(zk.get_children(f"/skymesh/{cluster}/locks/k")) == 1  # only h3
        zk.stop()
        zk.close()
    h3.release()


def test_redis_watchdog_keeps_lock_past_ttl(make_coord):
    a, b = make_coord(), make_coord()
    _, w = take(a, "k", "redis", ttl=1.0)
    h = w.wait()
    _, w2 = take(b, "k", "redis", ttl=1.0, wait=3.0)
    assert isinstance(w2.wait(10), coord.LockTimeout)
    assert h.valid and not w.lost.is_set()
    h.release()


def test_redis_restart_reports_lost_and_fences_keep_growing(make_coord, faults):
    a, b = make_coord(), make_coord()
    _, w = take(a, "k", "redis", ttl=2.0)
    h = w.wait()
    faults.restart_redis()
    assert w.lost.wait(20), "holder was not told it lost the lock"
    assert w.lost_held is h and not h.valid
    _, w2 = take(b, "k", "redis", ttl=2.0, wait=20)
    h2 = w2.wait(30)
    assert isinstance(h2, coord.Held), h2
    assert h2.fence > h.fence
    h2.release()


def test_redis_key_taken_over_reports_lost(make_coord, servers, cluster):
    a = make_coord()
    _, w = take(a, "k", "redis", ttl=2.0)
    h = w.wait()
    redis.Redis.from_url(servers["redis"]).set(f"skymesh:{cluster}:lock:k", "intruder")
    assert w.lost.wait(10)
    assert not h.valid


def test_zk_session_expiry(make_coord, faults):
    """Names re-registered or reported lost, zk lock lost, master steps down."""
    from coord_helpers import Recorder

    rec = Recorder()
    a = make_coord(listener=rec)
    b = make_coord()
    wait_for(lambda: a.is_master(), what="a master")
    _, epoch0 = a.master()
    a.register_name("kept", 1)
    a.register_name("stolen", 2)
    a.join_group("g", 1)
    _, w = take(a, "k", "zk")
    h = w.wait()
    _, wr = take(a, "rk", "redis", ttl=2.0)
    hr = wr.wait()
    faults.expire_session(a)
    wait_for(lambda: b.query_name("stolen") is None, what="names gone with the session")
    b.register_name("stolen", 99)
    assert w.lost.wait(30), "zk lock not reported lost"
    assert not h.valid
    assert ("master", False) in [e[:2] for e in rec.events]
    wait_for(lambda: ("name_lost", "stolen", 2) in rec.events, what="on_name_lost")
    wait_for(lambda: b.query_name("kept") == 1, what="name re-registered")
    wait_for(lambda: b.group_members("g") == [1], what="group re-joined")
    wait_for(lambda: a.health is coord.Health.CONNECTED, what="reconnected")
    assert (coord.Health.LOST,) in [e[1:] for e in rec.of("health")]
    wait_for(lambda: a.node.node_id in b.members(), what="membership restored")
    wait_for(lambda: b.is_master() or a.is_master(), what="a master again")
    # a's view is watch-fed: it may learn the new master's epoch a moment after b acts.
    wait_for(lambda: a.master()[1] > epoch0, what="a sees a larger epoch")
    assert hr.valid and not wr.lost.is_set()  # redis locks do not depend on the session
    hr.release()
    _, w2 = take(b, "k", "zk")
    assert w2.wait().fence > h.fence


def test_zk_stop_and_restart(make_coord, faults):
    from coord_helpers import Recorder

    rec = Recorder()
    a = make_coord(listener=rec, session_timeout=20.0)
    wait_for(lambda: a.is_master(), what="master")
    _, epoch0 = a.master()
    _, w = take(a, "k", "zk")
    h = w.wait()
    faults.stop_zk()
    try:
        wait_for(lambda: a.health is coord.Health.SUSPENDED, what="suspended")
        assert not a.is_master()  # stepped down on SUSPENDED
        assert not h.valid
    finally:
        faults.start_zk()
    wait_for(lambda: a.health is coord.Health.CONNECTED, timeout=40, what="reconnected")
    # If the restart outlasted the session (a loaded machine), the node joins again with
    # a new session, which may wait for its old znodes to go first: up to 1.5 x the
    # session timeout + 2 s (coord/zk.py), then the election. (A restart slower than
    # the 10 s lease once left the node without mastership for 66 s: the test below.)
    wait_for(lambda: a.is_master(), timeout=70, what="master again")
    assert a.master()[1] > epoch0
    assert h.valid and not w.lost.is_set()  # the session survived
    a.register_name("x", 1)
    health = [e[1] for e in rec.of("health")]
    assert coord.Health.SUSPENDED in health and health[-1] is coord.Health.CONNECTED
    h.release()


def test_master_again_after_an_outage_longer_than_the_lease(make_coord, faults):
    """ZooKeeper gone for longer than the mastership lease (half the session timeout)
    but not the session: once it is back, the node that led leads again. The
    election's refresh at the reconnect ran before the lease was renewed, and no
    znode changed after it; before the fix the node waited for an unrelated change
    (for ever, in a quiet cluster)."""
    a = make_coord(session_timeout=8.0)
    wait_for(lambda: a.is_master(), what="master")
    _, epoch0 = a.master()
    faults.stop_zk()
    try:
        wait_for(lambda: a.health is coord.Health.SUSPENDED, what="suspended")
        assert not a.is_master()
        time.sleep(5.0)  # the outage: past the 4 s lease, within the 8 s session
    finally:
        faults.start_zk()
    wait_for(lambda: a.health is coord.Health.CONNECTED, timeout=40, what="reconnected")
    wait_for(lambda: a.is_master(), timeout=30, what="master again")
    assert a.master()[1] > epoch0


def test_redis_dead_waiter_at_queue_head_is_skipped(make_coord, servers, cluster):
    """A waiter that died (heartbeat expired) cannot block the FIFO queue."""
    r = redis.Redis.from_url(servers["redis"])
    prefix = f"skymesh:{cluster}:lock:k"
    r.zadd(prefix + ":q", {"ghost": 0})
    r.set(prefix + ":w:ghost", "1", px=1500)  # its last heartbeat
    a = make_coord()
    _, w = take(a, "k", "redis", wait=30)
    h = w.wait(40)
    assert isinstance(h, coord.Held), h
    assert r.zscore(prefix + ":q", "ghost") is None
    h.release()
