"""The timer thread: a heap of deadlines turned into messages.

Entries are lists so the owner of a deadline can cancel it in O(1) by
clearing its ``alive`` slot; the heap drops cancelled entries lazily and is
compacted when they outnumber the live ones, so memory stays bounded under
a steady stream of calls that are answered before their timeout.

A deadline at least one ``TICK`` away (every call timeout, in practice) does
not take the lock: it is appended to an inbox deque (atomic under the GIL)
that the thread drains into the heap on each wake-up. The thread never
sleeps longer than ``TICK``, so it drains the entry before it is due; most
calls are answered first, and their entries are dropped at the drain
without ever touching the heap.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

# Entry layout: [deadline, seq, handle, session, payload, alive]
_DEADLINE, _SEQ, _HANDLE, _SESSION, _PAYLOAD, _ALIVE = range(6)
TimerEntry = list[Any]

# How often the thread runs the scheduler's safety net while a worker is awake
# (skynet's tick wake-up). With every worker asleep and no work queued it sleeps
# until its next deadline instead (issue 15: 100 wake-ups/s per idle node).
TICK = 0.01
# At most this many due entries are popped per turn: the lock is held while popping,
# and every add() (each call's timeout) waits on it. 100,000 timers due at once used
# to hold it for 0.4 s before the first one fired.
BATCH = 256


class TimerThread:
    """Turns deadlines into ``fire(handle, session, payload)`` calls on its own thread.

    After each turn it calls ``tick()``, the scheduler's safety net, which
    returns whether it is still needed (a worker is awake or work is queued).
    While it is, the thread turns every ``TICK``; once it is not, the thread
    sleeps until its next deadline, and a worker leaving its sleep calls
    :meth:`poke` to resume ticking.
    """

    def __init__(
        self,
        fire: Callable[[int, int, Any], None],
        tick: Callable[[], bool],
        name: str = "skymesh-timer",
    ) -> None:
        self._fire = fire
        self._tick = tick
        self._heap: list[TimerEntry] = []
        # Appended by any thread without the lock (deadlines >= TICK away); drained
        # into the heap by the timer thread only.
        self._inbox: deque[TimerEntry] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._seq = itertools.count()
        # Approximate (racy increments are fine): drives compaction only.
        self.cancelled = 0
        # Invariant: True only between the thread deciding the safety net may be
        # idle and the next poke; read racily by poke(), written under _cond by it.
        self._idle = False
        self.turns = 0  # loop turns (tests and stats: the idle cost)
        self._running = False
        self._thread: threading.Thread | None = None
        self._name = name

    def start(self) -> None:
        """Start the timer thread."""
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the timer thread; pending deadlines are dropped."""
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5.0)

    def add(self, delay: float, handle: int, session: int, payload: Any) -> TimerEntry:
        """Schedule ``fire(handle, session, payload)`` after ``delay`` seconds."""
        deadline = time.monotonic() + delay
        if delay >= TICK:
            # The thread wakes within TICK of now, before this is due: no lock, no
            # notify. Its heap sequence number is given at the drain. An idle thread
            # (every worker asleep: it no longer ticks) is poked awake first.
            entry: TimerEntry = [deadline, 0, handle, session, payload, True]
            self._inbox.append(entry)
            if self._idle:
                self.poke()
            return entry
        entry = [deadline, next(self._seq), handle, session, payload, True]
        with self._cond:
            heap = self._heap
            heapq.heappush(heap, entry)
            if heap[0] is entry:
                self._cond.notify()
        return entry

    def cancel(self, entry: TimerEntry) -> None:
        """Cancel a scheduled entry; harmless if it already fired."""
        if entry[_ALIVE]:
            entry[_ALIVE] = False
            self.cancelled += 1

    def poke(self) -> None:
        """Resume ticking (a worker left its sleep). Cheap unless the thread is idle.

        Ordering (the GIL orders each thread's bytecodes): the worker has
        already counted itself awake when it reads ``_idle``, and the thread
        sets ``_idle`` before ``tick()`` reads the workers; so either the
        tick sees the worker awake or this sees ``_idle`` and wakes the thread.
        """
        if self._idle:
            with self._cond:
                self._idle = False
                self._cond.notify()

    def pending(self) -> int:
        """Number of entries not yet fired or dropped, cancelled ones included."""
        return len(self._heap) + len(self._inbox)

    def _loop(self) -> None:
        heap = self._heap
        inbox = self._inbox
        cond = self._cond
        seq = self._seq
        busy = True
        while True:
            due: list[TimerEntry] = []
            with cond:
                if not self._running:
                    return
                self.turns += 1
                while inbox:  # only this thread pops: never empty after the check
                    e = inbox.popleft()
                    if e[_ALIVE]:
                        e[_SEQ] = next(seq)
                        heapq.heappush(heap, e)
                    else:
                        self.cancelled -= 1  # answered before it reached the heap
                now = time.monotonic()
                while heap and heap[0][_DEADLINE] <= now and len(due) < BATCH:
                    e = heapq.heappop(heap)
                    if e[_ALIVE]:
                        due.append(e)
                    else:
                        self.cancelled -= 1
                if self.cancelled > 1024 and self.cancelled * 2 > len(heap):
                    heap[:] = [e for e in heap if e[_ALIVE]]
                    heapq.heapify(heap)
                    self.cancelled = 0
                if not due:
                    wait = heap[0][_DEADLINE] - now if heap else None
                    if busy or not self._idle:
                        wait = TICK if wait is None else min(wait, TICK)
                    cond.wait(wait)
            for e in due:
                if e[_ALIVE]:
                    e[_ALIVE] = False
                    self._fire(e[_HANDLE], e[_SESSION], e[_PAYLOAD])
            self._idle = True  # from here a worker leaving its sleep pokes us
            busy = self._tick()
            if busy:
                self._idle = False
