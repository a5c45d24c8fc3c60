"""The cross-node path with fewer hand-offs (issue 13).

- A caller sends a quiet peer's message on its PUSH socket itself; a busy
  caller (``batch``) or a stream is queued for the I/O thread and packed.
  Mixed, the order per sender holds.
- An idle worker waits on PULL (``ZmqTransport.idle_wait``) and the message
  is delivered in that worker's thread; with no worker waiting, the I/O
  thread still delivers.

Nothing here measures speed: the checks are which thread delivered, what the
counters say, and order.
"""

from __future__ import annotations

import threading

import pytest

from harbor import TransportClosed
from harbor import keys as hk
from tests.unit.test_harbor_zmq import Peer, make, mesh  # noqa: F401 (make: a fixture)

DEST = 2 << 32 | 1


class ThreadPeer(Peer):
    """A Peer that also records the name of the thread each frame was delivered in."""

    def __init__(self, *a, **kw) -> None:
        self.threads: list[str] = []
        super().__init__(*a, **kw)

    def _deliver(self, src, inc, msgs):
        self.threads.append(threading.current_thread().name)
        super()._deliver(src, inc, msgs)


def test_quiet_sends_go_direct_busy_ones_are_packed_and_order_holds(make):
    a, b = make(1), make(2)
    mesh(a, b)
    a.t.send(2, (DEST, 1, -1, 0, "warm"))  # opens the PUSH socket (through the I/O thread)
    assert b.wait(lambda: len(b.msgs) == 1)
    assert a.wait(lambda: a.t._shared.pending.get(2) == 0)  # "warm" handed to ZeroMQ
    direct0 = a.t.stats()["frames_out_direct"]
    a.t.send(2, (DEST, 1, -2, 0, "quiet"))  # nothing queued, nothing else to do: direct
    assert b.wait(lambda: len(b.msgs) == 2)
    assert a.t.stats()["frames_out_direct"] == direct0 + 1
    n = 20_000
    for i in range(n):  # a caller with more work queued, mixed with quiet ones
        a.t.send(2, (DEST, 1, i, 0, i), 0, i % 100 != 0)
    assert b.wait(lambda: len(b.msgs) == n + 2)
    assert [m[2] for _, _, m in b.msgs[2:]] == list(range(n))  # order per sender
    st = a.t.stats()
    assert st["msgs_out"] == n + 2
    assert st["frames_out"] * 10 < st["msgs_out"], st  # busy sends were packed


def test_an_idle_worker_receives_and_delivers_in_its_own_thread(make):
    b = ThreadPeer(2, 201)
    threads = b.threads
    waiter = b.t.idle_wait()
    b.t.start()
    a = make(1)
    try:
        mesh(a, b)
        stop = threading.Event()

        def worker():
            while not stop.is_set():
                waiter.wait(0.5)

        w = threading.Thread(target=worker, name="idle-worker")
        w.start()
        try:
            # Until a worker waits, the I/O thread reads PULL (nobody else would): send
            # once the worker is blocked in its wait.
            inbound = b.t._waiter.inbound  # type: ignore[union-attr]
            assert b.wait(lambda: inbound._waiting)
            for i in range(50):
                a.t.send(2, (DEST, 1, i, 0, i))
            assert b.wait(lambda: len(b.msgs) == 50)
            assert set(threads) == {"idle-worker"}  # no hand-off from the harbor thread
        finally:
            stop.set()
            waiter.wake()
            w.join(10)
        assert not w.is_alive()
        # Every worker busy (none waits): the I/O thread reads PULL itself.
        threads.clear()
        a.t.send(2, (DEST, 1, 99, 0, 99))
        assert b.wait(lambda: len(b.msgs) == 51)
        assert threads == ["skymesh-harbor-2"]
        assert [m[2] for _, _, m in b.msgs] == [*range(50), 99]
    finally:
        b.t.stop()
    assert waiter.wait(0.01) is False  # stopped: the worker waits its own way


@pytest.mark.parametrize("secure", [False, True])
def test_wake_ends_a_wait_and_is_never_lost(tmp_path, secure):
    kw = {"credentials": hk.load(hk.generate(tmp_path / "k", node_ids=[2]), 2)} if secure else {}
    b = Peer(2, 201, **kw)
    waiter = b.t.idle_wait()
    b.t.start()
    try:
        waiter.wake()  # before anyone waits: the next wait does not block
        done = threading.Event()

        def wait_long():
            waiter.wait(60)
            done.set()

        t = threading.Thread(target=wait_long)
        t.start()
        assert done.wait(10)
        done.clear()
        t = threading.Thread(target=wait_long)
        t.start()
        while not b.t._waiter.inbound._waiting:  # type: ignore[union-attr]
            threading.Event().wait(0.001)
        waiter.wake()  # ends a wait in progress (a frame on PULL, CURVE server or not)
        assert done.wait(10)
        t.join(10)
        st = b.t.stats()
        assert st["frames_in"] == 0 and not any(
            v for k, v in st.items() if k.startswith("drop_")
        ), st  # a wake-up is neither a message nor a drop
    finally:
        b.t.stop()
    try:
        b.t.idle_wait()
    except TransportClosed:
        pass
    else:
        raise AssertionError("idle_wait() after start must refuse")
