"""A service's mailbox: skynet's message queue.

Invariant: ``in_global`` is True exactly while the mailbox is in the global
queue or being run by a worker. Only ``push`` sets it (under ``lock``) and
only the worker that owns the mailbox clears it (under ``lock``, when it
finds the queue empty), so a mailbox is in the global queue at most once and
is never run by two workers.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import Service

OVERLOAD_THRESHOLD = 1024


class Mailbox:
    """A deque of messages plus the ``in_global`` flag."""

    __slots__ = ("global_queue", "in_global", "lock", "overload", "queue", "service")

    def __init__(self, service: Service, global_queue: deque[Mailbox]) -> None:
        self.service = service
        # Appended by any thread; popped only by the worker that owns the mailbox.
        self.queue: deque[tuple[int, int, int, Any]] = deque()
        self.lock = threading.Lock()
        # Owner: push (set) and the running worker (clear). Invariant: see module doc.
        self.in_global = False
        # Owner: the running worker. Reported length doubles at each report (skynet's rule).
        self.overload = OVERLOAD_THRESHOLD
        self.global_queue = global_queue

    def push(self, msg: tuple[int, int, int, Any]) -> bool:
        """Append ``msg``; return True when this push put the mailbox in the global queue."""
        with self.lock:
            self.queue.append(msg)
            if self.in_global:
                return False
            self.in_global = True
        self.global_queue.append(self)
        return True

    def push_front(self, msgs: list[tuple[int, int, int, Any]]) -> bool:
        """Put ``msgs`` before everything queued (kill notices, deferred messages)."""
        with self.lock:
            self.queue.extendleft(reversed(msgs))
            if self.in_global:
                return False
            self.in_global = True
        self.global_queue.append(self)
        return True

    def release(self) -> None:
        """Called by the owning worker after a batch: requeue at the tail or clear the flag."""
        with self.lock:
            if not self.queue:
                self.in_global = False
                self.overload = OVERLOAD_THRESHOLD
                return
        self.global_queue.append(self)
