"""Redis locks: ``SET key token NX PX ttl``, fenced, renewed, FIFO-fair.

Keys for lock ``k`` of cluster ``c`` (prefix ``P = skymesh:c:lock:k``):

- ``P``          the lease: the holder's random token, with a PX ttl
- ``P:fence``    fencing counter, INCR on every acquisition
- ``P:q``        waiter queue, a ZSET of tokens scored by arrival (``P:qseq``)
- ``P:w:<tok>``  a waiter's heartbeat (PX): ``<ttl ms>:<attempt start us>:<id>``;
                 a head whose heartbeat expired is dropped, so a dead waiter
                 cannot block the queue

Only the queue head may take a free lease, which makes waiting FIFO. Release
and renewal compare the token in Lua. A release (or a withdrawn waiter) with
a live waiter queued grants it the lease in the same script: the lease is set
to the head's token with a new fence, for at most what is left of the head's
heartbeat (so a dead or paused head blocks the lock no longer than its
heartbeat would have), and ``<key>\n<head>\n<fence>\n<heartbeat>`` goes to
the channel of the head's process alone (``...:lock-released:<id>``). That
process takes the lock on its pub/sub thread with no round trip, trusting it
from the start of the attempt that wrote the echoed heartbeat (before the
grant, so a late notice is never trusted past the lease; a notice too late is
checked with an acquire attempt instead), and renews it to the full ttl
later. A withdrawn waiter gives a lease granted to it back. A head whose
heartbeat is older (``'1'``, a previous version) is only named,
``<key>\n<head>`` on the cluster's channel, and tries itself. Every waiter
also retries on a jittered timer as the fallback: a lost notice (the acquire
script finds the lease its own and returns its fence), or a lease that
expired (which publishes nothing). One engine thread drives retries and
renewals.

The fast path: ``lock()`` makes the first attempt in the caller's thread, on
a client of its own with a short socket timeout (``_FAST_TIMEOUT``) and no
retries. A lease that is free with nobody queued is taken by that one round
trip and ``on_acquired`` runs before ``lock()`` returns; otherwise (queued,
or the attempt failed or timed out) the engine takes the request over
exactly as if it had made that first attempt. So ``on_acquired`` runs on
the caller's thread (fast path), on the pub/sub thread (a grant, or a
handover announced by name) or on the notifier thread (a retry): it must be
quick and must not block (the node's only posts a message). The acquire script is
idempotent per request token, so an attempt whose answer was lost is
repeated safely. After a failed fast attempt the fast path is off for
``_FAST_BACKOFF`` seconds, so an unreachable Redis costs a caller at most one
short timeout per backoff period.

Credentials and TLS come with the URL (see :mod:`coord._redis_url`). A refusal
that retrying cannot cure (wrong password, an ACL user without rights on these
keys, a failed TLS handshake) fails the request at once with
``CoordAuthError`` naming the cause, instead of retrying until ``wait`` ends.
"""

from __future__ import annotations

import os
import random
import threading
import time
from functools import partial
from typing import Any

from coord._redis_scripts import ACQUIRE, DEQUEUE, EXTEND, RELEASE
from coord._redis_url import make_client, redis_failure
from coord._runtime import SerialWorker, log
from coord.api import AcquiredCallback, Held, LockRequest, LostCallback
from coord.errors import CoordAuthError, CoordError, CoordUnavailable, LockTimeout
from coord.security import TlsFiles

__all__ = ["RedisLocks"]


_WAITER_TTL_MS = 3000
_RETRY = (0.1, 0.3)  # fallback retry interval while waiting, seconds (jittered)
_SAFETY = 0.9  # a lease is trusted for this fraction of ttl after the call that set it
# The fast path's bound on one round trip (socket and connect timeout), and how long
# it stays off after a failure. A worker calling lock() blocks at most this long.
_FAST_TIMEOUT = 0.05
_FAST_BACKOFF = 1.0


class _RedisHeld(Held):
    def __init__(
        self, req: _RedisRequest, fence: int, since: float, lease: float | None = None
    ) -> None:
        """``since``: a local time before the lease was set; ``lease``: its known length
        from then (the request's ttl, or less for a grant: ``_granted_lease``)."""
        self.key = req.key
        self.fence = fence
        self.backend = "redis"
        self.req = req
        lease = req.ttl if lease is None else lease
        self.valid_until = since + lease * _SAFETY
        self.next_renew = since + lease / 3
        self.released = False
        self.lost = False

    @property
    def valid(self) -> bool:
        return not (self.released or self.lost) and time.monotonic() < self.valid_until

    def release(self) -> None:
        self.req.locks.release(self)

    def __repr__(self) -> str:
        return f"<Held redis {self.key!r} fence={self.fence} valid={self.valid}>"


class _RedisRequest(LockRequest):
    def __init__(
        self,
        locks: RedisLocks,
        key: str,
        ttl: float,
        wait: float | None,
        on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> None:
        self.locks = locks
        self.key = key
        self.ttl = ttl
        self.deadline = None if wait is None else time.monotonic() + wait
        self.wait = wait
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.token = os.urandom(12).hex()
        self.state = "waiting"  # -> held | done (timed out, cancelled, failed)
        self.due = 0.0  # next attempt, monotonic
        self.woken = False  # a release notice came while an attempt was in flight
        # An attempt is running (caller, engine or pub/sub thread): no second one starts.
        self.inflight = False
        # A grant notice (fence, since) that came while an attempt was in flight; the
        # attempt's end decides (RedisLocks._granted). Under RedisLocks._cond.
        self.granted: tuple[int, float] | None = None
        self.held: _RedisHeld | None = None

    def cancel(self) -> None:
        self.locks.cancel(self)


class RedisLocks:
    """Every Redis lock of one coordinator: one engine and one pub/sub thread."""

    def __init__(
        self, url: str, cluster: str, notifier: SerialWorker, tls: TlsFiles | None = None
    ) -> None:
        """Connect lazily to ``url``; ``ValueError`` if the URL is malformed."""
        self._r = make_client(url, tls)
        # The fast path's client: one short try (see the module docstring).
        self._fast = make_client(url, tls, timeout=_FAST_TIMEOUT, retries=0)
        self._fast_acquire = self._fast.register_script(ACQUIRE)
        self._fast_off_until = 0.0  # monotonic; the fast path is off before this
        self._prefix = f"skymesh:{cluster}:lock:"
        self._channel = f"skymesh:{cluster}:lock-released"
        # Grants to this process's waiters come on a channel of its own (GRANT_HEAD).
        self._id = os.urandom(6).hex()
        self._notifier = notifier
        self._acquire = self._r.register_script(ACQUIRE)
        self._release = self._r.register_script(RELEASE)
        self._extend = self._r.register_script(EXTEND)
        self._dequeue = self._r.register_script(DEQUEUE)
        self._cond = threading.Condition()
        self._waiting: list[_RedisRequest] = []  # Invariant: state == "waiting"
        self._held: list[_RedisHeld] = []  # Invariant: not released and not lost
        self._cleanup: list[_RedisRequest] = []  # withdrawn: remove from the Redis queue
        self._stopping = False
        # When the engine thread wakes next (monotonic; 0.0 while it runs and will
        # look again). Under _cond. Work due earlier than this must notify it.
        self._engine_wake = 0.0
        self._engine = threading.Thread(target=self._run, name="coord-redis-locks", daemon=True)
        self._subscriber = threading.Thread(
            target=self._listen, name="coord-redis-pubsub", daemon=True
        )
        self._engine.start()
        self._subscriber.start()

    def check(self) -> None:
        """One PING: ``CoordAuthError`` if Redis refuses our credentials or TLS.

        Any other failure (Redis down, a failover under way) is only logged:
        locks retry, and a node may start before its Redis.
        """
        try:
            self._r.ping()
        except Exception as exc:
            cause = redis_failure(exc)
            if cause is not None:
                raise CoordAuthError(f"Redis refused this node: {cause}") from None
            log.warning("coord: Redis not reachable yet (%s); locks will retry", exc)

    def _keys(self, key: str) -> list[str]:
        p = self._prefix + key
        return [p, p + ":fence", p + ":q", p + ":qseq"]

    def lock(
        self,
        key: str,
        ttl: float,
        wait: float | None,
        on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """Ask for ``key``. A free lease nobody waits for is taken here, in one round
        trip bounded by ``_FAST_TIMEOUT``, and ``on_acquired`` runs before this
        returns; otherwise the engine thread goes on with the request and
        ``on_acquired`` runs on the notifier thread."""
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        req = _RedisRequest(self, key, ttl, wait, on_acquired, on_lost)
        with self._cond:
            if self._stopping:
                req.state = "done"
                self._notifier.post(lambda: on_acquired(CoordUnavailable("stopped")))
                return req
            fast = time.monotonic() >= self._fast_off_until
            req.inflight = fast  # the engine leaves it alone while this thread tries
            self._waiting.append(req)
            if not fast:
                self._cond.notify()
                return req
        self._attempt(req, fast=True)
        return req

    def cancel(self, req: _RedisRequest) -> None:
        """Withdraw ``req`` (the engine removes its queue entry) or release its lock."""
        with self._cond:
            if req.state == "waiting":
                req.state = "done"
                self._waiting.remove(req)
                self._cleanup.append(req)
                self._cond.notify()
                return
            held = req.held
        if held is not None:
            self.release(held)

    def release(self, held: _RedisHeld) -> None:
        """Release ``held`` (blocking); no-op when already released or lost."""
        with self._cond:
            if held.released:
                return
            held.released = True
            was_held = not held.lost
            if was_held:
                self._held.remove(held)
        if was_held:
            keys = self._keys(held.key)
            args = [held.req.token, self._channel, held.key, keys[0] + ":w:"]
            try:
                self._release([keys[0], keys[2], keys[1]], args)
            except Exception as exc:  # the lease expires by itself
                log.warning("coord: releasing redis lock %r failed: %s", held.key, exc)

    def close(self) -> None:
        """Release held locks (reported lost), fail waiters, join the threads."""
        with self._cond:
            self._stopping = True
            waiting, self._waiting = self._waiting, []
            held = list(self._held)
            self._cond.notify()
        self._engine.join(10)
        self._subscriber.join(10)
        for req in waiting:
            req.state = "done"
            self._remove_waiter(req)
            self._notifier.post(partial(req.on_acquired, CoordUnavailable("coordinator stopped")))
        for h in held:
            self.release(h)
            self._notifier.post(partial(h.req.on_lost, h))
        self._r.close()
        self._fast.close()

    # engine thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    ready = [r for r in self._waiting if not r.inflight]
                    due_req = [r for r in ready if r.due <= now]
                    due_held = [h for h in self._held if h.next_renew <= now]
                    cleanup, self._cleanup = self._cleanup, []
                    if due_req or due_held or cleanup:
                        break
                    nxt = min(
                        [r.due for r in ready] + [h.next_renew for h in self._held],
                        default=now + 1.0,
                    )
                    self._engine_wake = nxt
                    self._cond.wait(max(0.0, nxt - now))
                    self._engine_wake = 0.0
            try:
                for h in due_held:
                    self._renew(h)
                for r in cleanup:
                    self._remove_waiter(r)
                for r in due_req:
                    self._attempt(r)
            except Exception:  # a bug here must not stop every lock of the process
                log.exception("coord: redis lock engine error")
                time.sleep(0.05)

    def _remove_waiter(self, req: _RedisRequest) -> None:
        keys = self._keys(req.key)
        try:
            self._dequeue(
                [keys[0], keys[2], keys[1]], [req.token, self._channel, req.key, keys[0] + ":w:"]
            )
        except Exception as exc:  # its heartbeat expires, then it is dropped
            log.warning("coord: dequeue of redis lock %r failed: %s", req.key, exc)

    def _attempt(self, req: _RedisRequest, fast: bool = False, inline: bool = False) -> None:
        """One acquire attempt for ``req``, on the engine, the pub/sub thread or (``fast``)
        the caller's thread, whose ``lock()`` already marked it in flight. ``on_acquired``
        runs on this thread when ``fast`` or ``inline``, else on the notifier thread."""
        now = time.monotonic()
        with self._cond:
            if not fast:
                if req.state != "waiting":
                    return
                if req.inflight:  # another thread is trying: it retries at once if it fails
                    req.woken = True
                    return
            expired = req.deadline is not None and now >= req.deadline and not fast
            if expired:
                req.state = "done"
                self._waiting.remove(req)
            else:
                req.inflight = True
                req.woken = False
                req.granted = None
        if expired:
            self._remove_waiter(req)
            exc = LockTimeout(f"redis lock {req.key!r} not acquired in {req.wait}s")
            self._notifier.post(lambda: req.on_acquired(exc))
            return
        again = False  # the engine must retry at once
        try:
            script = self._fast_acquire if fast else self._acquire
            keys = self._keys(req.key)
            ttl_ms = int(req.ttl * 1000)
            # The heartbeat names this attempt's start: a grant echoes it (GRANT_HEAD).
            beat = f"{ttl_ms}:{int(now * 1_000_000)}:{self._id}"
            args = [req.token, ttl_ms, _WAITER_TTL_MS, keys[0] + ":w:", beat]
            fence = int(script(keys, args))
        except Exception as exc:
            fence = 0
            if fast:  # the engine repeats it (the script is idempotent per token)
                log.debug("coord: fast redis lock attempt %r failed: %s", req.key, exc)
                self._fast_off_until = time.monotonic() + _FAST_BACKOFF
                again = True
            else:
                cause = redis_failure(exc)
                if cause is not None:
                    with self._cond:
                        req.inflight = False
                    self._fail(req, CoordAuthError(f"redis lock {req.key!r}: {cause}"))
                    return
                log.warning("coord: redis lock %r attempt failed: %s", req.key, exc)
        with self._cond:
            req.inflight = False
            granted, req.granted = req.granted, None
            lease: float | None = None  # the request's ttl
            if fence <= 0 and granted is not None and req.state == "waiting":
                # A grant came while this attempt was in flight and the attempt ran
                # before it (after it, the script would have returned the fence): the
                # grant stands, trusted as _granted() would have.
                lease = self._granted_lease(req)
                if self._trusted(granted[1], lease, time.monotonic()):
                    fence, now = granted
            if fence <= 0:
                if req.state != "waiting":  # cancelled meanwhile
                    self._cleanup.append(req)
                    self._cond.notify()
                    return
                if req.woken or again:  # the notice raced this attempt: retry at once
                    req.due = 0.0
                else:
                    req.due = time.monotonic() + random.uniform(*_RETRY)
                    if req.deadline is not None:
                        req.due = min(req.due, req.deadline)
                if req.due < self._engine_wake:
                    self._cond.notify()
                return
            held = self._hold(req, fence, now, lease)
            acquired = req.state == "waiting"
            if acquired:
                req.state = "held"
                self._waiting.remove(req)
        if not acquired:
            self.release(held)  # acquired after cancel: give it back at once
        elif fast or inline:
            req.on_acquired(held)  # the caller's thread before lock() returns, or pub/sub's
        else:
            self._notifier.post(lambda: req.on_acquired(held))

    def _fail(self, req: _RedisRequest, exc: CoordError) -> None:
        """End a waiting request with ``exc`` (retrying would not help)."""
        with self._cond:
            if req.state != "waiting":
                return
            req.state = "done"
            self._waiting.remove(req)
        log.error("coord: %s", exc)
        self._notifier.post(lambda: req.on_acquired(exc))

    def _renew(self, held: _RedisHeld) -> None:
        t0 = time.monotonic()
        try:
            ok = bool(
                self._extend(self._keys(held.key)[:1], [held.req.token, int(held.req.ttl * 1000)])
            )
        except Exception as exc:
            log.warning("coord: renewing redis lock %r failed: %s", held.key, exc)
            with self._cond:
                if time.monotonic() < held.valid_until:
                    held.next_renew = time.monotonic() + min(0.1, held.req.ttl / 10)
                    return
            ok = False
        with self._cond:
            if held.released or held.lost:
                return
            if ok:
                held.valid_until = t0 + held.req.ttl * _SAFETY
                held.next_renew = t0 + held.req.ttl / 3
                return
            held.lost = True
            self._held.remove(held)
        self._notifier.post(lambda: held.req.on_lost(held))

    # pub/sub thread

    def _listen(self) -> None:
        pubsub: Any = None
        while not self._stopping:
            try:
                if pubsub is None:
                    pubsub = self._r.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self._channel, f"{self._channel}:{self._id}")
                    self._wake(None)  # notices may have been missed while away
                msg = pubsub.get_message(timeout=0.5)
                if msg is not None and msg.get("type") == "message":
                    data = msg["data"]
                    self._notice(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:
                log.debug("coord: redis pub/sub reconnecting: %s", exc)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        log.debug("coord: closing pub/sub failed", exc_info=True)
                pubsub = None
                time.sleep(random.uniform(0.1, 0.3))
        if pubsub is not None:
            pubsub.close()

    def _notice(self, text: str) -> None:
        """Act on one message of the channel (formats: ``GRANT_HEAD``, _redis_scripts)."""
        parts = text.split("\n")
        if len(parts) == 4:  # a grant: the lease is already this head's
            key, token, fence, beat = parts
            req = self._waiting_with(key, token)
            if req is not None:
                since = int(beat.split(":")[1]) / 1_000_000
                self._granted(req, int(fence), since)
        elif len(parts) == 2:  # the head of the queue, by name: its process tries now
            req = self._waiting_with(*parts)
            if req is not None:
                self._attempt(req, inline=True)
        else:
            self._wake(parts[0])

    @staticmethod
    def _granted_lease(req: _RedisRequest) -> float:
        """How long a lease granted to ``req`` lasts at least, counted from ``since``.

        The grant's PX is min(ttl, what was left of the heartbeat); the heartbeat was
        set with the waiter ttl by a script that ran after ``since``.
        """
        return min(int(req.ttl * 1000), _WAITER_TTL_MS) / 1000

    @staticmethod
    def _trusted(since: float, lease: float, now: float) -> bool:
        """Whether a grant of ``lease`` seconds counted from ``since`` may still be
        trusted at ``now`` (the same margin as a held lock's ``valid``)."""
        return since + lease * _SAFETY > now

    def _granted(self, req: _RedisRequest, fence: int, since: float) -> None:
        """A release granted ``req`` the lease with ``fence`` (pub/sub thread).

        ``since`` is this process's monotonic time when the attempt that wrote the
        heartbeat the grant read began: before the grant, so the lease lasts at least
        until ``since + _granted_lease`` however late this notice is; the held lock is
        trusted for ``_SAFETY`` of that, and renewed (to the full ttl) after a third.
        A notice too late for that is not trusted: an attempt asks Redis instead (the
        acquire script answers "ours already" with the fence while the lease lives).
        A request that is no longer waiting ignores it: cancelled or timed out, its
        dequeue gives the lease back; held, the notice is a duplicate.
        """
        now = time.monotonic()
        lease = self._granted_lease(req)
        with self._cond:
            if req.state != "waiting":
                return
            if req.inflight:  # that attempt's end takes the grant (it may be older)
                req.granted = (fence, min(since, now))
                req.woken = True
                return
            trusted = self._trusted(min(since, now), lease, now)
            if trusted:
                held = self._hold(req, fence, min(since, now), lease)
                req.state = "held"
                self._waiting.remove(req)
        if trusted:
            req.on_acquired(held)
        else:
            self._attempt(req, inline=True)

    def _hold(
        self, req: _RedisRequest, fence: int, since: float, lease: float | None
    ) -> _RedisHeld:
        """Record ``req``'s lock as held and due for renewal (under ``_cond``); the caller
        moves the request out of the waiting state."""
        held = _RedisHeld(req, fence, since, lease)
        req.held = held
        self._held.append(held)
        if held.next_renew < self._engine_wake:
            self._cond.notify()
        return held

    def _waiting_with(self, key: str, token: str) -> _RedisRequest | None:
        with self._cond:
            return next((r for r in self._waiting if r.token == token and r.key == key), None)

    def _wake(self, key: str | None) -> None:
        with self._cond:
            for req in self._waiting:
                if key is None or req.key == key:
                    req.due = 0.0
                    req.woken = True
            self._cond.notify()
