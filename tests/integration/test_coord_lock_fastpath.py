"""The Redis lock's fast path and head-by-name handover, attacked against a real Redis.

The fast path (first attempt in the caller's thread) must never overtake a
queued waiter, must fall back to the engine when Redis cannot be reached,
and its retried attempt must be idempotent; a release must name the live
queue head, skipping dead ones.
"""

from __future__ import annotations

import os
import time

import pytest
import redis
from coord_helpers import TcpProxy, take, wait_for

import coord

pytestmark = pytest.mark.integration


def _locks(c: object) -> object:
    return c._redis_locks()  # type: ignore[attr-defined]  # noqa: SLF001 - the engine under test


def test_fast_path_never_overtakes_a_queued_waiter(make_coord, servers, cluster):
    a, b, c = make_coord(), make_coord(), make_coord()
    r = redis.Redis.from_url(servers["redis"])
    queue = f"skymesh:{cluster}:lock:k:q"
    fences = []
    for _ in range(5):
        _, wa = take(a, "k", "redis")
        ha = wa.wait()
        _, wb = take(b, "k", "redis")
        wait_for(lambda: r.zcard(queue) == 1, what="b queued")
        ha.release()
        _, wc = take(c, "k", "redis")  # right behind the release: a free lease, b queued
        hb = wb.wait()
        assert isinstance(hb, coord.Held), hb
        time.sleep(0.2)
        assert not wc.done.is_set(), "the fast path took the lock ahead of a queued waiter"
        hb.release()
        hc = wc.wait()
        assert isinstance(hc, coord.Held), hc
        fences += [ha.fence, hb.fence, hc.fence]
        hc.release()
    assert fences == sorted(fences) and len(set(fences)) == len(fences)


def test_fast_path_takes_a_free_lock_before_lock_returns(make_coord):
    a = make_coord()
    took_inline = 0
    for i in range(5):  # robust to a slow machine: one short try may time out
        _, w = take(a, f"free{i}", "redis")
        if w.done.is_set():
            took_inline += 1
        h = w.wait()
        assert isinstance(h, coord.Held), h
        h.release()
    assert took_inline >= 1


def test_fast_path_cut_off_falls_back_to_the_engine(servers, cluster):
    host_port = servers["redis"].split("//", 1)[1].split("/", 1)[0]
    proxy = TcpProxy(host_port)
    c = coord.connect(None, f"redis://{proxy.address}/0", cluster)
    try:
        c.start(None, "localhost", os.getpid(), {})
        proxy.block()
        _, w = take(c, "k", "redis", wait=30)
        assert not w.done.is_set()
        assert _locks(c)._fast_off_until > time.monotonic() - 1  # type: ignore[attr-defined]
        proxy.unblock()
        h = w.wait(30)  # the engine went on with the same request
        assert isinstance(h, coord.Held), h
        h.release()
    finally:
        c.stop()
        proxy.close()


def test_acquire_script_is_idempotent_per_token(make_coord, servers):
    """An attempt whose answer was lost is repeated: same fence, lease ttl restarted."""
    locks = _locks(make_coord())
    r = redis.Redis.from_url(servers["redis"])
    keys = locks._keys("k")  # type: ignore[attr-defined]
    args = ["tok-1", 3000, 3000, keys[0] + ":w:"]
    f1 = int(locks._acquire(keys, args))  # type: ignore[attr-defined]
    r.pexpire(keys[0], 100)
    f2 = int(locks._acquire(keys, args))  # type: ignore[attr-defined]
    assert f1 == f2 > 0
    assert r.pttl(keys[0]) > 1000
    assert int(locks._acquire(keys, ["tok-2", 3000, 3000, keys[0] + ":w:"])) == 0  # type: ignore[attr-defined]


def test_release_names_the_live_head_and_drops_dead_ones(make_coord, servers, cluster):
    locks = _locks(make_coord())
    r = redis.Redis.from_url(servers["redis"])
    keys = locks._keys("k")  # type: ignore[attr-defined]
    lease, queue, wprefix = keys[0], keys[2], keys[0] + ":w:"
    r.set(lease, "holder", px=5000)
    r.zadd(queue, {"ghost": 1, "live": 2})
    r.set(wprefix + "live", "1", px=5000)  # the ghost has no heartbeat: dead
    sub = r.pubsub(ignore_subscribe_messages=True)
    channel = f"skymesh:{cluster}:lock-released"
    sub.subscribe(channel)
    wait_for(lambda: r.pubsub_numsub(channel)[0][1] >= 1, what="subscribed")
    assert locks._release([lease, queue], ["intruder", channel, "k", wprefix]) == 0  # type: ignore[attr-defined]
    assert r.get(lease) == b"holder"  # not the holder's token: nothing released, no notice
    assert locks._release([lease, queue], ["holder", channel, "k", wprefix]) == 1  # type: ignore[attr-defined]
    msg = None
    deadline = time.monotonic() + 10
    while msg is None and time.monotonic() < deadline:
        msg = sub.get_message(timeout=0.5)
    assert msg is not None and msg["data"] == b"k\nlive"
    assert r.zrange(queue, 0, -1) == [b"live"]  # the dead head was dropped
    sub.close()
