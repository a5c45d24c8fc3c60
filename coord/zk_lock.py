"""ZooKeeper locks: an ephemeral sequential node under ``locks/<key>/``.

The lowest sequence holds the lock; a waiter watches only its predecessor.
The fence is the sequence number, which only grows under one parent (the
parent is never deleted). The lock lives as long as the session: on LOST it
is reported lost; while SUSPENDED ``Held.valid`` is False.
No thread blocks per waiter: watches and timeouts post work to coord's pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from coord._runtime import Pool, SerialWorker, Timer, TimerHandle, log
from coord._zkutil import seq_of
from coord.api import AcquiredCallback, Held, LockRequest, LostCallback
from coord.errors import CoordUnavailable, LockTimeout

__all__ = ["ZkLocks"]


class _ZkHeld(Held):
    def __init__(self, req: _ZkRequest, fence: int) -> None:
        self.key = req.key
        self.fence = fence
        self.backend = "zk"
        self.req = req
        self.released = False
        self.lost = False

    @property
    def valid(self) -> bool:
        return not (self.released or self.lost) and self.req.locks.connected()

    def release(self) -> None:
        self.req.locks.release(self)

    def __repr__(self) -> str:
        return f"<Held zk {self.key!r} fence={self.fence} valid={self.valid}>"


class _ZkRequest(LockRequest):
    def __init__(
        self,
        locks: ZkLocks,
        key: str,
        wait: float | None,
        on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> None:
        self.locks = locks
        self.key = key
        self.wait = wait
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.state = "waiting"  # -> held | done
        self.node: str | None = None  # my znode's name once created
        self.held: _ZkHeld | None = None
        self.timer: TimerHandle | None = None

    def cancel(self) -> None:
        self.locks.cancel(self)


class ZkLocks:
    """ZooKeeper locks of one coordinator."""

    def __init__(
        self,
        client: Any,
        root: str,
        pool: Pool,
        timer: Timer,
        notifier: SerialWorker,
        connected: Callable[[], bool],
    ) -> None:
        self._client = client
        self._root = f"{root}/locks"
        self._pool = pool
        self._timer = timer
        self._notifier = notifier
        self.connected = connected
        self._mutex = threading.Lock()
        self._requests: set[_ZkRequest] = set()  # waiting or held
        self.node_id = 0

    def _run(self, fn: Callable[[], None]) -> None:
        def ignore(_r: object, exc: BaseException | None) -> None:
            if exc is not None:
                log.warning("coord: zk lock work failed: %r", exc)

        try:
            self._pool.submit(fn, (), ignore)
        except CoordUnavailable:
            log.debug("coord: zk lock work after stop dropped")

    def lock(
        self, key: str, wait: float | None, on_acquired: AcquiredCallback, on_lost: LostCallback
    ) -> LockRequest:
        """Queue a request; returns at once."""
        req = _ZkRequest(self, key, wait, on_acquired, on_lost)
        with self._mutex:
            self._requests.add(req)
        if wait is not None:
            req.timer = self._timer.call_later(wait, lambda: self._run(lambda: self._expire(req)))
        self._run(lambda: self._create(req))
        return req

    def _finish(self, req: _ZkRequest, result: Held | BaseException) -> bool:
        with self._mutex:
            if req.state != "waiting":
                return False
            if isinstance(result, _ZkHeld):
                req.state = "held"
                req.held = result
            else:
                req.state = "done"
                self._requests.discard(req)
        if req.timer is not None:
            req.timer.cancel()
        self._notifier.post(lambda: req.on_acquired(result))
        return True

    def _create(self, req: _ZkRequest) -> None:
        try:
            path = self._client.create(
                f"{self._root}/{req.key}/lock-",
                str(self.node_id).encode(),
                ephemeral=True,
                sequence=True,
                makepath=True,
            )
        except (KazooException, KazooTimeoutError) as exc:
            self._finish(req, CoordUnavailable(f"zk lock {req.key!r}: {type(exc).__name__}"))
            return
        req.node = path.rsplit("/", 1)[1]
        if req.state == "done":  # cancelled or timed out while creating
            self._delete(req)
            return
        self._check(req)

    def _check(self, req: _ZkRequest) -> None:
        if req.state != "waiting" or req.node is None:
            return
        parent = f"{self._root}/{req.key}"
        try:
            while req.state == "waiting":
                children = sorted(self._client.get_children(parent), key=seq_of)
                if req.node not in children:
                    self._finish(req, CoordUnavailable(f"zk lock {req.key!r}: node vanished"))
                    return
                i = children.index(req.node)
                if i == 0:
                    if not self._finish(req, _ZkHeld(req, seq_of(req.node) + 1)) and (
                        req.state == "done"
                    ):
                        self._delete(req)
                    return
                watch = lambda _ev: self._run(lambda: self._check(req))  # noqa: E731
                if self._client.exists(f"{parent}/{children[i - 1]}", watch=watch) is not None:
                    return
        except (KazooException, KazooTimeoutError) as exc:
            # Retried when the session is CONNECTED again (recheck_all).
            log.debug("coord: zk lock %r check failed: %r", req.key, exc)

    def _expire(self, req: _ZkRequest) -> None:
        if self._finish(req, LockTimeout(f"zk lock {req.key!r} not acquired in {req.wait}s")):
            self._delete(req)

    def _delete(self, req: _ZkRequest) -> None:
        with self._mutex:
            self._requests.discard(req)
        if req.node is None:
            return
        try:
            self._client.delete(f"{self._root}/{req.key}/{req.node}")
        except NoNodeError:
            pass
        except (KazooException, KazooTimeoutError) as exc:  # gone with the session
            log.warning("coord: deleting zk lock node %r failed: %r", req.key, exc)

    def cancel(self, req: _ZkRequest) -> None:
        """Withdraw (deletes the node on the pool) or release."""
        with self._mutex:
            waiting = req.state == "waiting"
            if waiting:
                req.state = "done"
        if waiting:
            if req.timer is not None:
                req.timer.cancel()
            self._run(lambda: self._delete(req))
        elif req.held is not None:
            req.held.release()

    def release(self, held: _ZkHeld) -> None:
        """Delete the lock node (blocking); no-op when released or lost."""
        with self._mutex:
            if held.released:
                return
            held.released = True
            if held.lost:
                return
        self._delete(held.req)

    def recheck_all(self) -> None:
        """After reconnecting: re-check every waiting request."""
        with self._mutex:
            waiting = [r for r in self._requests if r.state == "waiting"]
        for req in waiting:
            self._run(partial(self._check, req))

    def session_lost(self) -> None:
        """The session expired: holders are lost, waiters fail."""
        with self._mutex:
            reqs = list(self._requests)
            self._requests.clear()
        for req in reqs:
            held = req.held
            if req.state == "held" and held is not None and not held.released:
                held.lost = True
                self._notifier.post(partial(req.on_lost, held))
            else:
                self._finish(req, CoordUnavailable(f"zk lock {req.key!r}: session lost"))

    def close(self) -> None:
        """Release holders (reported lost) and fail waiters, before the client closes."""
        with self._mutex:
            reqs = list(self._requests)
        for req in reqs:
            held = req.held
            if self._finish(req, CoordUnavailable("coordinator stopped")):
                self._delete(req)
            elif held is not None and not held.released:
                self.release(held)
                self._notifier.post(partial(req.on_lost, held))
