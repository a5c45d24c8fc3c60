"""skynet's scheduler: a global queue of mailboxes and N worker threads.

Workers pop a mailbox, run a batch of its messages sized by the worker's
weight, and push it back at the tail if it still has messages. A worker
with nothing to do sleeps on a condition variable -- or, when the node gave
the scheduler an :class:`IdleWait` (the harbor's inbound socket), one idle
worker at a time waits there instead: a message from another node is then
received, delivered and run by the same thread (no hand-off). Producers
outside the workers (timer, harbor, coord callbacks, plain threads) call
``wake`` after a push that put a mailbox in the global queue; it signals a
sleeper, or else ends the idle wait. A send from one service to another
wakes nobody: the sending worker is running and will reach that mailbox.
"""

from __future__ import annotations

import threading
from collections import deque
from threading import get_ident
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from .runner import run_turns

if TYPE_CHECKING:
    from collections.abc import Callable

    from .mailbox import Mailbox

# skynet's weights for the first 32 workers:
# -1 one message, 0 all, 1 half, 2 a quarter, 3 an eighth.
WEIGHTS = (-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
           2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)  # fmt: skip


# How long one idle wait lasts at most (the loop then re-checks that it still runs), and
# how long a worker sleeps when the idle wait refuses (closed).
IDLE_WAIT = 1.0
IDLE_BUSY = 0.005


class IdleWait(Protocol):
    """Where one idle worker waits instead of the condition variable (the harbor's
    inbound socket: ``harbor.zmq_transport.IdleWaiter``). Structural: neither side
    imports the other."""

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for work; push what arrives into mailboxes (their
        wake-ups are the caller's own). False at once if it cannot wait (closed)."""
        ...

    def wake(self) -> None:
        """End a wait in progress, or make the next one return at once. Any thread."""
        ...


def batch_size(length: int, weight: int) -> int:
    """How many of ``length`` queued messages a worker of ``weight`` runs in one turn."""
    if weight < 0:
        return 1
    return max(1, length >> weight)


class Worker:
    """One worker thread's observable state, read by the monitor thread."""

    __slots__ = ("busy", "index", "message", "service", "thread", "weight")

    def __init__(self, index: int, weight: int) -> None:
        self.index = index
        self.weight = weight
        # Owner: the worker thread. Written before each message; read racily by the
        # monitor, which compares message identity between checks (skynet's version).
        self.service: Any = None
        self.message: tuple[int, int, int, Any] | None = None
        self.thread: threading.Thread | None = None
        # Seconds spent running batches (with ``profile``). Owner: the worker; read racily.
        self.busy = 0.0


class Scheduler:
    """The global queue, the workers and their sleep/wake protocol."""

    def __init__(
        self,
        workers: int,
        on_stray: Callable[[BaseException], None],
        on_overload: Callable[[Any, int], None],
        name: str = "skymesh",
        profile: bool = True,
        weights: tuple[int, ...] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.queue: deque[Mailbox] = deque()
        self._cond = threading.Condition(threading.Lock())
        # Owner: workers, under _cond. Producers read it without the lock: a stale 0
        # only means the sleeper re-checks the queue under the lock before waiting.
        self.sleeping = 0
        # Set once before start(): where one idle worker waits instead of _cond.
        self.idle: IdleWait | None = None
        # Owner: workers, under _cond. Thread id of the worker in idle.wait (0: none).
        # Producers read it without the lock: a worker sets it, then re-reads the queue.
        self.poller = 0
        self.idle_waits = 0  # waits in idle.wait (a counter for tests and stats)
        # Counters for tests and stats: wake-ups by producers, and by the timer's tick.
        self.wakeups = 0
        self.tick_wakeups = 0
        # Called by a worker leaving its sleep (the timer's poke): the safety net
        # below runs only while some worker is awake, so it must hear of one waking.
        self.on_awake: Callable[[], None] | None = None
        self._running = False
        self._on_stray = on_stray
        self._on_overload = on_overload
        table = WEIGHTS if weights is None else weights
        if any(w < -1 for w in table):
            raise ValueError("worker weights are -1 (one message), 0 (all) or n (1/2**n)")
        self.workers = [Worker(i, table[i] if i < len(table) else 0) for i in range(workers)]
        self._name = name
        # Per-service busy time (skynet's "profile" option): one clock read per turn;
        # wall time on a worker, since thread_time() costs 4x perf_counter() here.
        self.profile = profile

    def start(self) -> None:
        """Start the worker threads."""
        self._running = True
        for w in self.workers:
            t = threading.Thread(
                target=self._loop, args=(w,), name=f"{self._name}-worker-{w.index}", daemon=True
            )
            w.thread = t
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers after their current batch and join them."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self.idle is not None:
            self.idle.wake()
        for w in self.workers:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join(timeout)

    def wake(self) -> None:
        """Wake one sleeping worker, if any sleeps, else end the idle wait. For producers
        outside the workers, and for the idle waiter delivering (it wakes nobody: it
        runs what it delivered itself)."""
        if self.sleeping:
            if self.poller == get_ident():
                return
            with self._cond:
                self.wakeups += 1
                self._cond.notify()
        elif self.poller:
            idle = self.idle
            if idle is not None and self.poller != get_ident():
                self.wakeups += 1
                idle.wake()

    def wake_if_idle_work(self) -> bool:
        """Periodic safety net (skynet's timer tick): work queued while workers sleep.

        A worker's send to another service wakes nobody, so a long handler can
        leave queued work while other workers sleep; this wakes one. Returns
        whether the net is still needed: False only when every worker sleeps
        and nothing is queued, since then only a producer's ``wake`` (which a
        waking worker reports through ``on_awake``) can start work again.
        """
        queue = self.queue
        sleeping = self.sleeping
        if queue and sleeping:
            with self._cond:
                self.tick_wakeups += 1
                self._cond.notify()
        elif queue and self.poller and self.idle is not None:
            self.tick_wakeups += 1
            self.idle.wake()
        # The worker in the harbor's idle wait (poller) counts as asleep too.
        return bool(queue) or sleeping + (1 if self.poller else 0) < len(self.workers)

    def _idle(self, cond: threading.Condition) -> None:
        """No work: wait on the idle waiter if no other worker does, else on ``cond``."""
        idle, queue = self.idle, self.queue
        pause = 1.0
        if idle is not None and not self.poller:
            with cond:
                if self.poller or queue or not self._running:
                    return
                self.poller = get_ident()
            # Re-read after claiming: a producer appends before it reads `poller`, so
            # either we see its mailbox or it sees us waiting and calls idle.wake().
            waited = False
            try:
                if not queue:
                    self.idle_waits += 1
                    waited = idle.wait(IDLE_WAIT)
            finally:
                self.poller = 0
            if waited:
                # Several mailboxes got work: wake a sleeper to run them in parallel
                # (it takes over the idle wait once it runs out). One mailbox (a reply,
                # a ping, a burst for one service): nobody is woken, this thread runs it
                # at once -- waking a follower for one hot mailbox measured more context
                # switches and fewer calls/s (docs/design.md, "Cross-node path").
                if self.sleeping and len(queue) > 1:
                    with cond:
                        self.wakeups += 1
                        cond.notify()
                return
            pause = IDLE_BUSY  # the idle wait is closed (the harbor stopped)
        with cond:
            self.sleeping += 1
            # Re-checked under the lock: a producer appends before it reads
            # `sleeping`, so either we see its mailbox or it sees us asleep.
            if not queue and self._running:
                cond.wait(pause)  # spurious wakeup is harmless
            self.sleeping -= 1

    def _loop(self, w: Worker) -> None:
        """Run mailboxes until stopped. One *turn* takes a batch by the worker's weight.

        Busy-path rules (measured in docs/design.md "Scheduler"):
        - When the turn's batch is done, the mailbox still has messages and no
          other mailbox waits in the global queue, the worker starts the next turn
          on the same mailbox without handing it back: skynet would push it at the
          tail and pop it again at once, so nobody is passed over (the queue is
          re-read before every further turn; a mailbox queued meanwhile waits at
          most one batch, as it would have anyway).
        - Busy time (``profile``) takes one clock read per turn, not two: each read
          closes the turn that ends there, and the time spent between turns
          (handing a mailbox back, popping the next) is charged to the next one.
          Time asleep is charged to nobody.
        """
        queue = self.queue
        popleft = queue.popleft
        requeue = queue.append
        weight = w.weight
        cond = self._cond
        profile = self.profile
        clock = perf_counter
        t0 = clock()
        while self._running:
            try:
                mb = popleft()
            except IndexError:
                w.service = None  # idle: nothing for the watchdog or interrupt() to see
                self._idle(cond)
                # After `sleeping` dropped and the idle wait was left (the timer's
                # poke relies on this order).
                awake = self.on_awake
                if awake is not None:
                    awake()
                if profile:
                    t0 = clock()
                continue
            q = mb.queue
            svc = mb.service
            w.service = svc
            try:
                run_turns(self, mb, w, weight)
            finally:
                w.message = None
                if profile:
                    t1 = clock()
                    svc._cpu += t1 - t0
                    w.busy += t1 - t0
                    t0 = t1
                if q:
                    requeue(mb)  # Mailbox.release's first case inlined: still ours
                else:
                    mb.release()
