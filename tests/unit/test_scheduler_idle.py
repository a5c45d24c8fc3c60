"""An idle worker waits on an IdleWait (the harbor's inbound socket) instead of the
condition variable, and every wake-up a producer sends reaches it (issue 13).

The IdleWait here is a stand-in with the same contract as the harbor's; the real
one is exercised in tests/unit/test_harbor_direct.py and the cluster tests.
"""

from __future__ import annotations

import threading

from node import Node, Service, expose


class FakeIdle:
    """Blocks until wake() (never past its timeout); counts waits, wakes and threads."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.lock = threading.Lock()
        self.waiting = 0  # workers inside wait() now: must never exceed 1
        self.max_waiting = 0
        self.waits = 0
        self.wakes = 0

    def wait(self, timeout: float) -> bool:
        with self.lock:
            self.waiting += 1
            self.max_waiting = max(self.max_waiting, self.waiting)
            self.waits += 1
        try:
            self.event.wait(timeout)
            self.event.clear()
        finally:
            with self.lock:
                self.waiting -= 1
        return True

    def wake(self) -> None:
        self.wakes += 1
        self.event.set()


class Echo(Service):
    @expose
    def echo(self, x):
        return x


def _run(tmp_path, workers: int) -> FakeIdle:
    idle = FakeIdle()
    node = Node(workers=workers, log_file=str(tmp_path / f"log{workers}"))
    node._scheduler.idle = idle
    node.start()
    try:
        echo = node.newservice(Echo)
        for i in range(200):  # from a plain thread: Router.post wakes the scheduler
            assert node.call(echo, "echo", i, timeout=30) == i
    finally:
        node.stop()
    assert idle.waiting == 0
    return idle


def test_idle_workers_wait_there_one_at_a_time(tmp_path) -> None:
    idle = _run(tmp_path, workers=3)
    assert idle.waits > 0  # idle workers waited there ...
    assert idle.max_waiting == 1  # ... one at a time (a zmq socket has one user)


def test_a_producer_wake_reaches_the_only_idle_worker(tmp_path) -> None:
    idle = _run(tmp_path, workers=1)
    # The one worker waits in idle.wait between calls; a call from the plain thread that
    # finds it there must end that wait (the condition variable has no sleeper to
    # signal). Counted, not timed.
    assert idle.waits > 0
    assert idle.wakes > 0
