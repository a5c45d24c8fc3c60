"""What both backends share: threads, listeners, the ring cache, lock dispatch."""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from coord._runtime import Pool, SerialWorker, Timer, log
from coord.api import (
    AcquiredCallback,
    Coordinator,
    CoordListener,
    LockRequest,
    LostCallback,
    NodeInfo,
)
from coord.errors import CoordAuthError, CoordUnavailable
from coord.hashring import HashRing
from coord.security import TlsFiles

if TYPE_CHECKING:
    from coord.redis_lock import RedisLocks

T = TypeVar("T")


def check_name(name: str) -> None:
    """A name, group or lock key must be non-empty, without ``/``, not ``.``/``..``."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid name {name!r}")


class CoordBase(Coordinator):
    """Threads, listener fan-out and ``pick`` for a concrete backend."""

    def __init__(
        self, name: str, redis_url: str | None, cluster: str, redis_tls: TlsFiles | None = None
    ) -> None:
        self._notifier = SerialWorker(f"coord-{name}-notify")
        self._timer = Timer(f"coord-{name}-timer")
        self._pool = Pool(f"coord-{name}-pool")
        self._listeners: list[CoordListener] = []
        self._rings: dict[str, HashRing] = {}
        self._ring_lock = threading.Lock()
        self._cluster = cluster
        # Redis locks (and redis-py, 7-9 MB and 130-260 ms of CPU per process) are
        # made on the first Redis lock, not at start: most nodes never take one
        # (issue 15). The URL is checked now; credentials and TLS at start
        # (_check_redis). _redis: under _redis_lock until made, then read freely.
        self._redis_url = redis_url
        self._redis_tls = redis_tls
        self._redis: RedisLocks | None = None
        self._redis_lock = threading.Lock()
        self._redis_closed = False  # under _redis_lock
        if redis_url is not None:
            from coord._redis_probe import validate_url

            validate_url(redis_url, redis_tls)
        self._info: NodeInfo | None = None
        self._stopped = False

    @property
    def node(self) -> NodeInfo | None:
        """This node's info once started, else None."""
        return self._info

    def add_listener(self, listener: CoordListener) -> None:
        """Deliver events to ``listener`` on the notifier thread."""
        self._listeners.append(listener)

    def _emit(self, method: str, *args: Any) -> None:
        """Call ``method(*args)`` on every listener, on the notifier thread."""

        def fan_out() -> None:
            for listener in list(self._listeners):
                fn: Callable[..., None] | None = getattr(listener, method, None)
                if fn is None:
                    continue
                try:
                    fn(*args)
                except Exception:
                    log.exception("coord: listener %s.%s failed", listener, method)

        self._notifier.post(fan_out)

    def submit(
        self,
        fn: Callable[..., T],
        *args: Any,
        callback: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Run ``fn(*args)`` on coord's pool, then ``callback(result, exc)`` there."""
        self._pool.submit(fn, args, callback)

    def pick(self, group: str, key: object) -> int | None:
        """The member of ``group`` owning ``key`` on its consistent-hash ring."""
        members = self.group_members(group)
        with self._ring_lock:
            ring = self._rings.get(group)
            if ring is None or list(ring.members) != members:
                ring = HashRing(members)
                self._rings[group] = ring
        return ring.get(key)

    @property
    def has_redis(self) -> bool:
        """True when a Redis URL was given: ``"redis"`` locks go there."""
        return self._redis_url is not None

    def _redis_locks(self) -> RedisLocks:
        """The Redis lock engine, made (and redis-py imported) on first use."""
        locks = self._redis
        if locks is not None:
            return locks
        assert self._redis_url is not None
        with self._redis_lock:
            if self._redis_closed:
                raise CoordUnavailable("the coordinator is stopped")
            if self._redis is None:
                from coord.redis_lock import RedisLocks

                self._redis = RedisLocks(
                    self._redis_url, self._cluster, self._notifier, self._redis_tls
                )
            return self._redis

    def lock(
        self,
        key: str,
        ttl: float,
        wait: float | None,
        backend: str,
        on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """See ``Coordinator.lock``. The one lock backend switch: ``"redis"`` goes to
        Redis when a URL is configured (else to :meth:`_lock_without_redis`), ``"zk"``
        to the backend's own locks (:meth:`_own_lock`)."""
        check_name(key)
        if backend == "redis":
            if self._redis_url is not None:
                return self._redis_locks().lock(key, ttl, wait, on_acquired, on_lost)
            return self._lock_without_redis(key, ttl, wait, on_acquired, on_lost)
        if backend == "zk":
            return self._own_lock(key, ttl, wait, on_acquired, on_lost)
        raise ValueError(f"unknown lock backend {backend!r}")

    @abstractmethod
    def _own_lock(
        self, key: str, ttl: float, wait: float | None, on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """This backend's own lock (ZooKeeper's recipe, or in-process)."""

    @abstractmethod
    def _lock_without_redis(
        self, key: str, ttl: float, wait: float | None, on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """A ``"redis"`` lock asked for with no Redis URL configured."""

    def _check_redis(self) -> None:
        """At start: ``CoordAuthError`` if Redis refuses our credentials or TLS.

        Plain and TLS URLs are checked without redis-py (:mod:`coord._redis_probe`);
        sentinel and unix URLs by making the lock engine now. Redis unreachable is
        only logged: locks retry, and a node may start before its Redis.
        """
        url = self._redis_url
        if url is None:
            return
        from coord._redis_probe import probe

        try:
            refused = probe(url, self._redis_tls)
        except OSError as exc:
            log.warning("coord: Redis not reachable yet (%s); locks will retry", exc)
            return
        if refused is False:
            self._redis_locks().check()
        elif refused is not None:
            raise CoordAuthError(f"Redis refused this node: {refused}")

    def _stop_common(self) -> None:
        """Stop Redis locks and coord's threads (after backend-specific cleanup)."""
        with self._redis_lock:
            locks, self._redis_closed = self._redis, True  # no engine is made after this
        if locks is not None:
            locks.close()
        self._pool.stop()
        self._timer.stop()
        self._notifier.stop()
