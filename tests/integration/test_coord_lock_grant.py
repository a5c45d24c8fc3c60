"""The Redis lock's grant on release, attacked against a real Redis.

A release hands the lease straight to the live queue head (``GRANT_HEAD`` in
coord/_redis_scripts.py, taken by coord/redis_lock.py) and tells that head's
process on its own channel. Each test attacks one protection of that handover:

- the grant is exactly the head's: lease, fence, queue and notice;
- a granted head that is dead or frozen blocks the lock no longer than its
  heartbeat would have (the lease PX is bounded by it), and once thawed does
  not trust its stale notice;
- a delayed notice is not trusted past the lease it describes;
- a lost notice is recovered by the retry ("ours already", same fence);
- cancel racing a grant, heard or not, gives the lease back to the next head;
- a grant arriving while an attempt is in flight is taken by that attempt.

No test asserts speed; waits are generous bounds far from the figures they
separate (3 s heartbeat against a 60 s lease).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from coord_helpers import take, wait_for

import coord

pytestmark = pytest.mark.integration

WAITER_TTL_MS = 3000  # coord.redis_lock._WAITER_TTL_MS


def _locks(c: Any) -> Any:
    return c._redis_locks()  # noqa: SLF001 - the engine under test


def _waiting(locks: Any, key: str) -> Any:
    """The one request of ``locks`` waiting for ``key``."""
    with locks._cond:  # noqa: SLF001
        reqs = [r for r in locks._waiting if r.key == key]  # noqa: SLF001
    assert len(reqs) == 1, reqs
    return reqs[0]


def _queued(r: redis.Redis, cluster: str, key: str, n: int = 1) -> list[bytes]:
    """Wait until ``n`` tokens are queued for ``key``; return them in queue order."""
    q = f"skymesh:{cluster}:lock:{key}:q"
    wait_for(lambda: r.zcard(q) == n, what=f"{n} queued")
    return r.zrange(q, 0, -1)


def _release_raw(
    locks: Any, r: redis.Redis, cluster: str, key: str, heard: bool = True, stretch: bool = False
) -> None:
    """Release the hand-made lease of ``"holder"`` with the real release script; unless
    ``heard``, its grant notice goes to a channel nobody listens to: the head is
    granted the lease but never told. ``stretch``: in the same transaction, the head's
    heartbeat is made to last 60 s, so the grant lasts 60 s (bounded by the heartbeat):
    a test then tells a lease given back from one that ran out."""
    keys = locks._keys(key)  # noqa: SLF001
    channel = f"skymesh:{cluster}:" + ("lock-released" if heard else "nowhere")
    args = ["holder", channel, key, keys[0] + ":w:"]
    pipe = r.pipeline(transaction=True)
    if stretch:
        (head,) = r.zrange(keys[2], 0, 0)
        pipe.pexpire(keys[0] + ":w:" + head.decode(), 60000)
    locks._release([keys[0], keys[2], keys[1]], args, client=pipe)  # noqa: SLF001
    assert pipe.execute()[-1] == 1


def test_release_grants_the_live_head(make_coord, servers, cluster):
    """Lease, PX bound, fence, queue, heartbeat and the notice on the head's channel."""
    locks = _locks(make_coord())
    r = redis.Redis.from_url(servers["redis"])
    lease, fence_key, queue, _ = locks._keys("k")  # noqa: SLF001
    wprefix = lease + ":w:"
    channel = f"skymesh:{cluster}:lock-released"
    r.set(lease, "holder", px=5000)
    r.set(fence_key, 7)
    r.zadd(queue, {"ghost": 1, "live": 2, "next": 3})
    beat = "60000:123456:abc123"  # asks for 60 s; its heartbeat has 400 ms left
    r.set(wprefix + "live", beat, px=400)
    r.set(wprefix + "next", "60000:1:def456", px=5000)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(channel, channel + ":abc123", channel + ":def456")
    wait_for(lambda: r.pubsub_numsub(channel + ":abc123")[0][1] >= 1, what="subscribed")
    assert locks._release([lease, queue, fence_key], ["holder", channel, "k", wprefix]) == 1  # noqa: SLF001
    assert r.get(lease) == b"live"
    assert 0 < r.pttl(lease) <= 400, "a grant outlived the head's heartbeat"
    fence = int(r.get(fence_key))
    t_s, t_us = r.time()
    assert fence <= t_s * 1_000_000 + t_us and fence > 7  # the max(INCR, TIME) rule
    assert r.zrange(queue, 0, -1) == [b"next"]  # ghost dropped, live left the queue
    assert not r.exists(wprefix + "live")
    msgs = []
    deadline = time.monotonic() + 10
    while not msgs and time.monotonic() < deadline:
        m = sub.get_message(timeout=0.5)
        if m is not None:
            msgs.append(m)
    assert msgs[0]["channel"] == (channel + ":abc123").encode()
    assert msgs[0]["data"] == f"k\nlive\n{fence}\n{beat}".encode()
    time.sleep(0.3)
    assert sub.get_message(timeout=0.2) is None, "another process was woken"
    sub.close()


CHILD = r"""
import os, sys, threading, time
sys.path.insert(0, sys.argv[1])
import coord
c = coord.connect(None, sys.argv[2], sys.argv[3])
c.start(None, "localhost", os.getpid(), {})
got = threading.Event()
def on_acquired(r):
    print(f"acquired {getattr(r, 'fence', r)} {time.monotonic()}", flush=True)
    got.set()
    box.append(r)
box = []
c.lock("k", 60.0, 120.0, "redis", on_acquired, lambda h: print("lost", flush=True))
print("requested", flush=True)
got.wait(120)
time.sleep(0.2)
print(f"valid {box[0].valid}", flush=True)
box[0].release()
c.stop()
"""


def test_frozen_granted_head_blocks_no_longer_than_its_heartbeat(
    make_coord, servers, cluster, tmp_path
):
    """B asks for a 60 s lease, is frozen, and is granted. C must still get the lock
    (after B's heartbeat bound, 3 s); B, thawed, must not trust its stale notice and
    gets the lock only after C, with a larger fence."""
    a, c = make_coord(), make_coord()
    r = redis.Redis.from_url(servers["redis"])
    lease = f"skymesh:{cluster}:lock:k"
    _, wa = take(a, "k", "redis", ttl=60.0)
    ha = wa.wait()
    out = open(tmp_path / "b.out", "w+")  # noqa: SIM115 - read while the child runs
    root = str(Path(__file__).resolve().parents[2])
    b = subprocess.Popen(
        [sys.executable, "-c", CHILD, root, servers["redis"], cluster],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        (token,) = _queued(r, cluster, "k")
        os.kill(b.pid, signal.SIGSTOP)
        ha.release()  # granted to B, whose process cannot hear it
        assert r.get(lease) == token
        assert 0 < r.pttl(lease) <= WAITER_TTL_MS, "the grant is bounded by the heartbeat"
        _, wc = take(c, "k", "redis", ttl=5.0, wait=30.0)  # well under B's 60 s
        hc = wc.wait(40)
        assert isinstance(hc, coord.Held), hc
        os.kill(b.pid, signal.SIGCONT)
        # Thawed, B reads its grant notice: stale (its lease expired), so it asks Redis,
        # finds C holding and queues. It must not report the lock while C holds it.
        _queued(r, cluster, "k")
        time.sleep(1.0)
        out.seek(0)
        assert "acquired" not in out.read(), "B trusted a stale grant"
        assert hc.valid
        hc.release()
        b.wait(60)
        out.seek(0)
        lines = out.read().split("\n")
        got = [x for x in lines if x.startswith("acquired")]
        assert got, lines
        assert int(got[0].split()[1]) > hc.fence > ha.fence
        assert "valid True" in lines
    finally:
        if b.poll() is None:
            os.kill(b.pid, signal.SIGCONT)
            b.kill()
            b.wait()
        out.close()


def test_delayed_grant_notice_is_not_trusted(make_coord, servers, cluster):
    """A grant notice whose attempt started longer ago than the lease it granted could
    last arrives while another holds the lock: the waiter must ask Redis and wait."""
    a, b = make_coord(), make_coord()
    r = redis.Redis.from_url(servers["redis"])
    _, wa = take(a, "k", "redis", ttl=30.0)
    ha = wa.wait()
    _, wb = take(b, "k", "redis", ttl=30.0, wait=60.0)
    (token,) = _queued(r, cluster, "k")
    lb = _locks(b)
    stale = int((time.monotonic() - WAITER_TTL_MS / 1000 - 1) * 1_000_000)
    notice = f"k\n{token.decode()}\n{ha.fence + 1}\n30000:{stale}:{lb._id}"  # noqa: SLF001
    r.publish(f"skymesh:{cluster}:lock-released:{lb._id}", notice)  # noqa: SLF001
    time.sleep(1.0)
    assert not wb.done.is_set(), "a stale grant was trusted while another holds the lock"
    assert r.zrange(f"skymesh:{cluster}:lock:k:q", 0, -1) == [token]  # still queued
    ha.release()
    hb = wb.wait(30)
    assert isinstance(hb, coord.Held) and hb.fence > ha.fence and hb.valid
    hb.release()


def test_lost_grant_notice_is_recovered_by_the_retry(make_coord, servers, cluster):
    """A grant whose notice never arrives: the waiter's retry finds the lease its own
    and takes it with the grant's fence; nobody else gets the lock meanwhile."""
    b, c = make_coord(), make_coord()
    r = redis.Redis.from_url(servers["redis"])
    lease, fence_key = f"skymesh:{cluster}:lock:k", f"skymesh:{cluster}:lock:k:fence"
    r.set(lease, "holder", px=30000)
    _, wb = take(b, "k", "redis", ttl=30.0, wait=30.0)
    (token,) = _queued(r, cluster, "k")
    _release_raw(_locks(b), r, cluster, "k", heard=False)
    assert r.get(lease) == token
    granted_fence = int(r.get(fence_key))
    _, wc = take(c, "k", "redis", wait=30.0)  # arrives after the grant: must wait
    hb = wb.wait(30)
    assert isinstance(hb, coord.Held), hb
    assert hb.fence == granted_fence
    assert r.pttl(lease) > WAITER_TTL_MS  # the retry restarted the full ttl
    assert not wc.done.is_set()
    hb.release()
    hc = wc.wait(30)
    assert isinstance(hc, coord.Held) and hc.fence > hb.fence
    hc.release()


@pytest.mark.parametrize("heard", [False, True])
def test_cancel_racing_a_grant_gives_the_lease_back(make_coord, servers, cluster, heard):
    """B is granted the lease around its cancel(): unheard before it, or heard after
    cancel() but before B's engine dequeued it. Either way the lease goes on to C."""
    b, c = make_coord(), make_coord()
    r = redis.Redis.from_url(servers["redis"])
    lease = f"skymesh:{cluster}:lock:k"
    r.set(lease, "holder", px=60000)
    req_b, wb = take(b, "k", "redis", ttl=120.0, wait=60.0)
    _queued(r, cluster, "k")
    _, wc = take(c, "k", "redis", wait=30.0)
    token_b, _ = _queued(r, cluster, "k", 2)
    lb = _locks(b)
    if heard:
        # Holding B's engine lock: cancel() goes through (it is reentrant), but B's
        # engine cannot dequeue and B's pub/sub thread cannot act until we let go.
        with lb._cond:  # noqa: SLF001
            req_b.cancel()
            _release_raw(lb, r, cluster, "k", stretch=True)  # granted, told on B's channel
            assert r.get(lease) == token_b
            assert r.pttl(lease) > 30000  # outlives C's wait: C gets it only if given back
    else:
        _release_raw(lb, r, cluster, "k", heard=False, stretch=True)
        assert r.get(lease) == token_b
        assert r.pttl(lease) > 30000
        req_b.cancel()
    hc = wc.wait(40)
    assert isinstance(hc, coord.Held), hc
    time.sleep(0.3)
    assert not wb.done.is_set(), "a cancelled request fired"
    assert r.zcard(f"skymesh:{cluster}:lock:k:q") == 0
    hc.release()


@pytest.mark.parametrize("cancel", [False, True])
def test_grant_during_an_attempt_in_flight(make_coord, servers, cluster, cancel):
    """B's retry has run in Redis (queued, answer 0) but not returned when the grant
    notice comes: the attempt's end takes the grant. Cancelled meanwhile, it gives the
    lease back instead."""
    b, c = make_coord(), make_coord()
    r = redis.Redis.from_url(servers["redis"])
    lease, fence_key = f"skymesh:{cluster}:lock:k", f"skymesh:{cluster}:lock:k:fence"
    r.set(lease, "holder", px=60000)
    lb = _locks(b)
    ran, go = threading.Event(), threading.Event()
    script = lb._acquire  # noqa: SLF001

    def held_back(keys: Any, args: Any) -> Any:
        res = script(keys, args)
        if not go.is_set():  # the retries after the first: answer late
            ran.set()
            go.wait(30)
        return res

    req_b, wb = take(b, "k", "redis", ttl=120.0, wait=60.0)
    (token_b,) = _queued(r, cluster, "k")
    lb._acquire = held_back  # noqa: SLF001
    assert ran.wait(10), "no retry"
    assert _waiting(lb, "k").inflight
    _release_raw(lb, r, cluster, "k", stretch=cancel)  # granted while in flight
    assert r.get(lease) == token_b
    assert not cancel or r.pttl(lease) > 30000  # outlives C's wait (see _release_raw)
    granted = int(r.get(fence_key))
    _, wc = take(c, "k", "redis", wait=30.0)
    wait_for(lambda: req_b.granted is not None, what="the notice deferred to the attempt")
    if cancel:
        req_b.cancel()
    go.set()
    if cancel:
        hc = wc.wait(40)  # the grant lasts 60 s: C gets the lock only if it is given back
        assert isinstance(hc, coord.Held) and hc.fence > granted
        time.sleep(0.3)
        assert not wb.done.is_set(), "a cancelled request fired"
        hc.release()
    else:
        hb = wb.wait(30)
        assert isinstance(hb, coord.Held) and hb.valid and hb.fence == granted
        assert r.get(lease) == token_b
        assert not wc.done.is_set()
        hb.release()
        hc = wc.wait(30)
        assert isinstance(hc, coord.Held) and hc.fence > hb.fence
        hc.release()
