"""skynet's scheduler: a global queue of mailboxes and N worker threads.

Workers pop a mailbox, run a batch of its messages sized by the worker's
weight, and push it back at the tail if it still has messages. A worker
with nothing to do sleeps on a condition variable. Producers outside the
workers (timer, harbor, coord callbacks, plain threads) call ``wake`` after
a push that put a mailbox in the global queue; it signals only when a
worker sleeps. A send from one service to another wakes nobody: the
sending worker is running and will reach that mailbox.
"""

from __future__ import annotations

import threading
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from .mailbox import Mailbox

# skynet's weights for the first 32 workers:
# -1 one message, 0 all, 1 half, 2 a quarter, 3 an eighth.
WEIGHTS = (-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
           2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)  # fmt: skip


def batch_size(length: int, weight: int) -> int:
    """How many of ``length`` queued messages a worker of ``weight`` runs in one turn."""
    if weight < 0:
        return 1
    return max(1, length >> weight)


class Worker:
    """One worker thread's observable state, read by the monitor thread."""

    __slots__ = ("index", "message", "service", "thread", "weight")

    def __init__(self, index: int, weight: int) -> None:
        self.index = index
        self.weight = weight
        # Owner: the worker thread. Written before each message; read racily by the
        # monitor, which compares message identity between checks (skynet's version).
        self.service: Any = None
        self.message: tuple[int, int, int, Any] | None = None
        self.thread: threading.Thread | None = None


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
        # Per-service busy time (skynet's "profile" option): two clock reads per batch;
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
        for w in self.workers:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join(timeout)

    def wake(self) -> None:
        """Wake one sleeping worker, if any sleeps. For producers outside the workers."""
        if self.sleeping:
            with self._cond:
                self.wakeups += 1
                self._cond.notify()

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
        return bool(queue) or sleeping < len(self.workers)

    def _loop(self, w: Worker) -> None:
        queue = self.queue
        weight = w.weight
        cond = self._cond
        profile = self.profile
        while self._running:
            try:
                mb = queue.popleft()
            except IndexError:
                with cond:
                    self.sleeping += 1
                    # Re-checked under the lock: a producer appends before it reads
                    # `sleeping`, so either we see its mailbox or it sees us asleep.
                    if not queue and self._running:
                        cond.wait(1.0)  # spurious wakeup is harmless
                    self.sleeping -= 1
                # After `sleeping` dropped (the timer's poke relies on this order).
                awake = self.on_awake
                if awake is not None:
                    awake()
                continue
            q = mb.queue
            n = len(q)
            if n > mb.overload:
                mb.overload *= 2
                self._on_overload(mb.service, n)
            n = batch_size(n, weight)
            svc = mb.service
            dispatch = svc._dispatch
            w.service = svc
            t0 = perf_counter() if profile else 0.0
            try:
                while n:
                    n -= 1
                    try:
                        msg = q.popleft()
                    except IndexError:
                        break
                    w.message = msg
                    try:
                        dispatch(msg)
                    except BaseException as exc:  # an interrupt that landed after its handler
                        self._on_stray(exc)
            finally:
                if profile:
                    svc._cpu += perf_counter() - t0
                w.message = None
                w.service = None
                mb.release()
