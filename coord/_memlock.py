"""In-process locks for the embedded backend: fences, wait timeouts, FIFO.

A holder lives in this process and cannot vanish without releasing, so the
lease (``ttl``) never expires here; ``on_lost`` fires only when the
coordinator stops while a lock is held.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from functools import partial

__all__ = ["MemLocks"]

from coord._runtime import SerialWorker, Timer, TimerHandle
from coord.api import AcquiredCallback, Held, LockRequest, LostCallback
from coord.errors import CoordUnavailable, LockTimeout


class _MemHeld(Held):
    def __init__(self, locks: MemLocks, key: str, fence: int, on_lost: LostCallback) -> None:
        self.key = key
        self.on_lost = on_lost
        self.fence = fence
        self.backend = "memory"
        self._locks = locks
        self.released = False
        self.lost = False

    @property
    def valid(self) -> bool:
        return not (self.released or self.lost)

    def release(self) -> None:
        self._locks.release(self)

    def __repr__(self) -> str:
        return f"<Held {self.backend} {self.key!r} fence={self.fence} valid={self.valid}>"


class _MemRequest(LockRequest):
    def __init__(
        self, locks: MemLocks, key: str, on_acquired: AcquiredCallback, on_lost: LostCallback
    ) -> None:
        self.key = key
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.held: _MemHeld | None = None
        self.done = False  # granted, timed out or cancelled
        self.timer: TimerHandle | None = None
        self._locks = locks

    def cancel(self) -> None:
        self._locks.cancel(self)


@dataclass
class _Slot:
    holder: _MemHeld | None = None
    waiters: deque[_MemRequest] = field(default_factory=deque)
    fence: int = 0


class MemLocks:
    """Lock table of one embedded coordinator."""

    def __init__(self, notifier: SerialWorker, timer: Timer) -> None:
        self._notifier = notifier
        self._timer = timer
        self._mutex = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._closed = False

    def lock(
        self,
        key: str,
        wait: float | None,
        on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """Queue a request; grant at once when free and nobody waits."""
        req = _MemRequest(self, key, on_acquired, on_lost)
        with self._mutex:
            if self._closed:
                req.done = True
                self._notifier.post(lambda: on_acquired(CoordUnavailable("stopped")))
                return req
            slot = self._slots.setdefault(key, _Slot())
            slot.waiters.append(req)
            self._grant(slot)
            if not req.done and wait is not None:
                req.timer = self._timer.call_later(wait, lambda: self._expire(req, wait))
        return req

    def _grant(self, slot: _Slot) -> None:
        # Invariant: called with _mutex held; only the queue head may take a free lock.
        if slot.holder is not None or not slot.waiters:
            return
        req = slot.waiters.popleft()
        slot.fence += 1
        held = _MemHeld(self, req.key, slot.fence, req.on_lost)
        slot.holder = held
        req.held = held
        req.done = True
        if req.timer is not None:
            req.timer.cancel()
        self._notifier.post(lambda: req.on_acquired(held))

    def _expire(self, req: _MemRequest, wait: float) -> None:
        with self._mutex:
            if req.done:
                return
            req.done = True
            self._slots[req.key].waiters.remove(req)
        self._notifier.post(
            lambda: req.on_acquired(LockTimeout(f"lock {req.key!r} not acquired in {wait}s"))
        )

    def cancel(self, req: _MemRequest) -> None:
        """Withdraw a waiting request, or release what it acquired."""
        with self._mutex:
            if not req.done:
                req.done = True
                slot = self._slots[req.key]
                slot.waiters.remove(req)
                if req.timer is not None:
                    req.timer.cancel()
                return
        if req.held is not None:
            self.release(req.held)

    def release(self, held: _MemHeld) -> None:
        """Release ``held``; no-op when already released."""
        with self._mutex:
            if held.released:
                return
            held.released = True
            slot = self._slots.get(held.key)
            if slot is not None and slot.holder is held:
                slot.holder = None
                self._grant(slot)

    def close(self) -> None:
        """Fail waiters with ``CoordUnavailable`` and report holders lost."""
        with self._mutex:
            self._closed = True
            slots = list(self._slots.values())
        for slot in slots:
            for req in list(slot.waiters):
                self.cancel(req)
                self._notifier.post(
                    partial(req.on_acquired, CoordUnavailable("coordinator stopped"))
                )
            with self._mutex:
                holder, slot.holder = slot.holder, None
            if holder is not None and holder.valid:
                holder.lost = True
                self._notifier.post(partial(holder.on_lost, holder))
