"""A service's mailbox: skynet's message queue.

Invariant: ``in_global`` is True exactly while the mailbox is in the global
queue or being run by a worker, so a mailbox is in the global queue at most
once and is never run by two workers. ``_claim`` (a non-blocking lock) is
the test-and-set that turns it on; ``release`` turns it off.

The push path takes no lock when the mailbox is already queued: a producer
appends, then reads ``in_global``. If it reads True, the owning worker has
not yet cleared the flag, and ``release`` re-checks the queue *after*
clearing it, so it sees that message and re-queues the mailbox. (This relies
on the GIL ordering each thread's bytecodes; CPython 3.11 has one.)

The scheduler's busy path (``Scheduler._loop`` and ``runner.run_turns``) keeps
this invariant with two shortcuts, both taken only by the owning worker while ``in_global`` is True:

- it may start another turn on the mailbox instead of handing it back when
  the global queue is empty. The flag is untouched and the worker still owns
  the mailbox, so a producer that reads True is right not to queue it: the
  worker reads the queue again before deciding, and every later exit goes
  through the two cases below.
- it inlines ``release``'s first case (messages left: append to the global
  queue, flag still True). The last-message case always calls ``release``,
  whose clear-then-re-check is the only place the flag turns False.

A message appended after the worker's last emptiness check is therefore
seen either by that worker's ``release`` re-check (flag read True by the
producer) or by the producer's own claim (flag read False): never lost,
never queued twice.

Compiled (``mailbox.pxd``, ``node.core.native``), ``Mailbox`` is a native
class and each method runs as C while holding the GIL: the deque calls and
``_claim.acquire(False)`` never release it, so no other thread runs inside
``push``/``offer``/``push_front``/``release`` at all. Each method keeps the
source's order (append, then read the flag; clear the flag, then re-check
the queue), and the C compiler cannot move the flag's load or store across
those calls (opaque functions that may read it). So the compiled build
allows a subset of the pure build's interleavings and the argument above
holds for it unchanged. The busy path's shortcuts moved with the loop into
``runner.run_turns`` (compiled with the runner) and keep the same order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import Overloaded

OVERLOAD_THRESHOLD = 1024


class Runnable(Protocol):
    """What a worker runs a mailbox's messages on (``runner.Core``)."""

    handle: int
    _cpu: float
    _hook: Callable[[tuple[int, int, int, Any]], None] | None

    def _dispatch(self, msg: tuple[int, int, int, Any]) -> None: ...


class Mailbox:
    """A deque of messages plus the ``in_global`` flag."""

    __slots__ = (
        "_claim", "global_queue", "in_global", "limit", "overload", "queue", "service",
    )

    def __init__(
        self, service: Runnable | None, global_queue: deque[Mailbox], limit: int = 0
    ) -> None:
        # What the workers run this mailbox's messages on: the service's core, set when
        # the service binds (``ServiceCore._bind_core``) if not given here.
        self.service: Any = service
        # Past this many queued messages `offer` refuses (0: unbounded, skynet's default).
        self.limit = limit
        # Appended by any thread; popped only by the worker that owns the mailbox.
        self.queue: deque[tuple[int, int, int, Any]] = deque()
        # Held exactly while in_global is True. Owner: whoever acquired it.
        self._claim = threading.Lock()
        self.in_global = False
        # Owner: the running worker. Reported length doubles at each report (skynet's rule).
        self.overload = OVERLOAD_THRESHOLD
        self.global_queue = global_queue

    def push(self, msg: tuple[int, int, int, Any]) -> bool:
        """Append ``msg``; return True when this push put the mailbox in the global queue."""
        self.queue.append(msg)
        if self.in_global or not self._claim.acquire(False):
            return False
        self.in_global = True
        self.global_queue.append(self)
        return True

    def offer(self, msg: tuple[int, int, int, Any]) -> bool:
        """:meth:`push` a SEND or CALL, unless the mailbox is at its limit: then raise
        ``Overloaded`` and queue nothing. Replies and notices use :meth:`push` (never
        refused: a caller must always hear back)."""
        if self.limit and len(self.queue) >= self.limit:
            raise Overloaded(f"service {self.service.handle:#x} has {self.limit} messages queued")
        self.queue.append(msg)
        if self.in_global or not self._claim.acquire(False):
            return False
        self.in_global = True
        self.global_queue.append(self)
        return True

    def push_front(self, msgs: list[tuple[int, int, int, Any]]) -> bool:
        """Put ``msgs`` before everything queued (kill notices, deferred messages).

        Only the owning worker pops, and it only pops from the left between
        messages, so extending on the left cannot reorder what it is running.
        """
        self.queue.extendleft(reversed(msgs))
        if self.in_global or not self._claim.acquire(False):
            return False
        self.in_global = True
        self.global_queue.append(self)
        return True

    def release(self) -> None:
        """Called by the owning worker after a batch: requeue at the tail or clear the flag."""
        if self.queue:
            self.global_queue.append(self)  # still ours: in_global stays True
            return
        self.overload = OVERLOAD_THRESHOLD
        self.in_global = False
        self._claim.release()
        # A producer that read in_global == True before we cleared it did not queue us.
        if self.queue and self._claim.acquire(False):
            self.in_global = True
            self.global_queue.append(self)
