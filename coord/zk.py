"""The ZooKeeper backend: membership, names, groups, config, election, locks.

Tree under ``/skymesh/<cluster>/``: ``nodes/<id>``, ``names/<name>``,
``groups/<group>/<handle>``, ``config/<key>``, ``election/n-*``, ``epoch``,
``locks/<key>/lock-*``, plus ``ids/`` and ``incarnations/`` (sequence
counters). Redis locks come from :mod:`coord.redis_lock` when a URL is given.

With ``auth`` every session authenticates and every znode of the cluster gets
the cluster identity's ACL (see :mod:`coord._zkacl`).

Threads: kazoo's own; ``coord-zk`` (serial: cache refreshes and session
handling); the notifier (listener callbacks); the timer; the pool.
kazoo's state listener only sets flags and posts work, it never blocks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from coord._base import CoordBase, check_name
from coord._runtime import SerialWorker, log
from coord._session import SessionGate
from coord._zkacl import ensure_tree
from coord._zkutil import Items, WatchedDir, seq_of, session_id, zk_errors
from coord.api import AcquiredCallback, Health, LockRequest, LostCallback, NodeInfo
from coord.errors import CoordUnavailable
from coord.security import TlsFiles, ZkAuth, start_zk_client, zk_client_kwargs
from coord.zk_config import ZkConfig
from coord.zk_election import ZkElection
from coord.zk_join import claim_node_id
from coord.zk_lock import ZkLocks
from coord.zk_names import ZkNames

__all__ = ["ZkCoordinator"]

_HEALTH_OF = {
    KazooState.CONNECTED: Health.CONNECTED,
    KazooState.SUSPENDED: Health.SUSPENDED,
    KazooState.LOST: Health.LOST,
}
_DIRS = ("nodes", "names", "groups", "config", "election", "locks", "ids", "incarnations")


class ZkCoordinator(CoordBase):
    """Cluster coordination on ZooKeeper (kazoo), with optional Redis locks."""

    def __init__(
        self,
        zk_hosts: str,
        redis_url: str | None,
        cluster: str,
        session_timeout: float = 10.0,
        *,
        auth: ZkAuth | None = None,
        tls: TlsFiles | None = None,
        redis_tls: TlsFiles | None = None,
    ) -> None:
        """Prepare (no I/O yet); :meth:`start` connects."""
        check_name(cluster)
        super().__init__("zk", redis_url, cluster, redis_tls)
        self._root = f"/skymesh/{cluster}"
        self._hosts = zk_hosts
        self._auth = auth
        self._tls = tls
        self._client = KazooClient(
            hosts=zk_hosts,
            timeout=session_timeout,
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0),
            **zk_client_kwargs(auth, tls),
        )
        self._worker = SerialWorker("coord-zk")
        # Health, and blocking calls that wait through SUSPENDED up to the session timeout.
        self._gate = SessionGate(session_timeout)
        self._session_id: int | None = None
        self._started = False
        self._tentative: str | None = None  # an auto-id znode whose create may have happened
        self._names = ZkNames(self._client, self._root, self._worker, self._emit, self._timer)
        # Mastership is a lease: a node acts as master only while it heard from
        # ZooKeeper within half the session timeout, so a master paused (SIGSTOP, GC)
        # past its session never believes it still leads once it runs again.
        self._session_timeout = session_timeout
        self._lease_until = 0.0
        # How long start() waits for a silent predecessor's ``nodes/<id>`` to expire:
        # its session timeout (assumed equal to ours) plus ZooKeeper's expiry tick.
        self._id_wait = session_timeout * 1.5 + 2.0
        self._election = ZkElection(
            self._client, self._root, self._worker, self._emit, self._has_lease, self._timer
        )
        self._zk_locks = ZkLocks(
            self._client, self._root, self._pool, self._timer, self._notifier, self._is_connected
        )
        self._members: dict[int, NodeInfo] = {}
        self._members_dir = WatchedDir(
            self._client,
            f"{self._root}/nodes",
            self._worker,
            True,
            self._members_changed,
            self._timer,
        )
        self._config = ZkConfig(self._client, self._root, self._worker, self._emit, self._timer)

    def _is_connected(self) -> bool:
        return self._gate.health is Health.CONNECTED

    def _has_lease(self) -> bool:
        return self._gate.health is Health.CONNECTED and time.monotonic() < self._lease_until

    def _renew_lease(self) -> None:
        """On the pool, every sixth of the session timeout: renew the lease. A renewal
        that revives a lapsed lease (ZooKeeper was unreachable for longer than half
        the session timeout) has the election look again: nothing else would, and a
        node that led before the outage would otherwise wait for an unrelated change
        to lead again (the election's refresh after the reconnect ran without the
        lease, so it could not take over)."""
        if self._stopped:
            return
        if self._touch_lease():
            self._worker.post(self._election.refresh, key="election")

        def again() -> None:
            if not self._stopped:
                self._pool.submit(self._renew_lease, (), lambda _r, _e: None)

        self._timer.call_later(self._session_timeout / 6, again)

    def _touch_lease(self) -> bool:
        """One round trip to ZooKeeper; if it succeeds the lease runs until half the
        session timeout after it was sent. True when the lease had lapsed before."""
        sent = time.monotonic()
        try:
            self._client.exists(self._root)
        except (KazooException, KazooTimeoutError):
            return False  # no renewal: the lease runs out on its own
        lapsed = self._lease_until < sent
        # Called from the pool and the worker: never move the lease back.
        self._lease_until = max(self._lease_until, sent + self._session_timeout / 2)
        return lapsed

    @property
    def health(self) -> Health:
        """Current session health."""
        return self._gate.health

    def _on_worker(self, fn: Any) -> None:
        """Run ``fn`` on the coord-zk worker and wait for it."""
        done = threading.Event()
        box: list[BaseException] = []

        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                box.append(exc)
            finally:
                done.set()

        self._worker.post(run)
        if not done.wait(60):
            raise CoordUnavailable("coord worker did not answer")
        if box:
            raise box[0]

    # lifecycle

    def start(
        self, node_id: int | None, host: str, pid: int, endpoints: dict[str, str]
    ) -> NodeInfo:
        """Connect, join membership and the election; see ``Coordinator.start``."""
        if self._started or self._stopped:
            raise CoordUnavailable("start() may be called once")
        self._started = True
        with zk_errors("connecting to ZooKeeper"):  # a refused TLS handshake is named
            start_zk_client(self._client, self._hosts, self._tls, 15)
        self._gate.set(Health.CONNECTED)
        # Listening before joining lets the join ride out a connection drop (issue 15);
        # until _info is set, _on_state only updates the gate.
        self._client.add_listener(self._on_state)
        try:
            self._check_redis()
            info = self._gate.run(
                "joining the cluster",
                lambda check: self._join(check, node_id, host, pid, endpoints),
            )
        except BaseException:
            self._gate.set(Health.LOST)
            self._client.stop()
            self._client.close()
            raise
        self._info = info
        self._renew_lease()
        self._emit("on_health", Health.CONNECTED)
        self._on_worker(self._refresh_all)
        return info

    def _join(
        self,
        check: Callable[[], None],
        node_id: int | None,
        host: str,
        pid: int,
        endpoints: dict[str, str],
    ) -> NodeInfo:
        """The join steps of :meth:`start`, safe to run again after a dropped connection.

        A create whose reply was lost may have happened: ``claim_node_id`` and
        the election adopt a znode of this session; a tentative auto id is
        deleted before another is allocated.
        """
        check()
        with zk_errors("joining the cluster"):
            sid = session_id(self._client)
            if self._tentative is not None:
                stat = self._client.exists(self._tentative)
                if stat is not None and stat.ephemeralOwner == sid:
                    self._client.delete(self._tentative)
                self._tentative = None
            ensure_tree(self._client, self._root, _DIRS, self._auth)
            incarnation = self._sequence("incarnations") + 1
            if node_id is not None:
                info = NodeInfo(node_id, incarnation, host, pid, dict(endpoints))
                claim_node_id(self._client, f"{self._root}/nodes/{node_id}", info, self._id_wait)
            while node_id is None:
                nid = self._sequence("ids") + 1
                info = NodeInfo(nid, incarnation, host, pid, dict(endpoints))
                self._tentative = f"{self._root}/nodes/{nid}"
                try:
                    self._client.create(self._tentative, info.to_json(), ephemeral=True)
                    break
                except NodeExistsError:
                    continue
            self._tentative = None
            self._zk_locks.node_id = info.node_id
            self._session_id = sid
            self._election.join(info.node_id)
        return info

    def _sequence(self, counter: str) -> int:
        path = self._client.create(f"{self._root}/{counter}/n-", ephemeral=True, sequence=True)
        self._client.delete(path)
        return seq_of(path)

    def stop(self) -> None:
        """Release locks, leave everything, close the session, join threads."""
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            self._zk_locks.close()
            self._election.leave()
            self._gate.set(Health.LOST)
            self._worker.stop(drain=False)
            try:
                self._client.stop()
                self._client.close()
            except (KazooException, KazooTimeoutError):
                log.debug("coord: closing kazoo failed", exc_info=True)
        else:
            self._worker.stop(drain=False)
        self._stop_common()

    # session

    def _on_state(self, state: str) -> None:
        # kazoo's thread: set flags, post the rest.
        if self._info is None:  # start() is still joining: nothing to step down or restore
            self._gate.set(_HEALTH_OF.get(state, Health.LOST))
            return
        if state == KazooState.CONNECTED:
            self._worker.post(self._connected)
            return
        health = Health.SUSPENDED if state == KazooState.SUSPENDED else Health.LOST
        self._gate.set(health)
        self._election.step_down_now()
        self._worker.post(lambda: self._disconnected(health))

    def _disconnected(self, health: Health) -> None:
        if health is Health.LOST:
            self._zk_locks.session_lost()
        self._emit("on_health", health)

    def _connected(self) -> None:
        if self._stopped:
            return
        try:
            sid = self._client.client_id[0]
        except TypeError:
            return  # not connected any more
        if sid != self._session_id:
            # A new session: every ephemeral of the old one is gone.
            if self._gate.health is not Health.LOST:
                self._zk_locks.session_lost()
            try:
                self._restore()
            except (KazooException, KazooTimeoutError, CoordUnavailable) as exc:
                log.warning("coord: restoring after session loss failed: %r", exc)
                return  # the next CONNECTED retries
            self._session_id = sid
        self._gate.set(Health.CONNECTED)
        self._emit("on_health", Health.CONNECTED)
        # The lease first: after a long outage it lapsed, and the election's refresh
        # below takes over only with it.
        self._touch_lease()
        self._refresh_all()
        self._zk_locks.recheck_all()

    def _restore(self) -> None:
        info = self._info
        assert info is not None
        try:
            self._client.create(
                f"{self._root}/nodes/{info.node_id}", info.to_json(), ephemeral=True
            )
        except NodeExistsError:
            log.error("coord: node id %d was taken while our session was lost", info.node_id)
        self._election.rejoin()
        self._names.restore()

    def _refresh_all(self) -> None:
        self._members_dir.refresh()
        self._config.dir.refresh()
        self._names.refresh_all()
        self._election.refresh()

    # membership

    def _members_changed(self, _old: Items, new: Items) -> None:
        members: dict[int, NodeInfo] = {}
        for child, data in new.items():
            try:
                info = NodeInfo.from_json(data or b"")
            except ValueError:
                log.warning("coord: bad membership entry %s", child)
                continue
            members[info.node_id] = info
        old, self._members = self._members, members
        for nid, info in old.items():
            if members.get(nid) != info:
                self._emit("on_member_leave", info)
        for nid, info in members.items():
            if old.get(nid) != info:
                self._emit("on_member_join", info)

    def members(self) -> dict[int, NodeInfo]:
        """Cached live nodes by id."""
        return dict(self._members)

    # names and groups

    def register_name(self, name: str, handle: int) -> None:
        """See ``Coordinator.register_name``."""

        def op(check: Callable[[], None]) -> None:
            check()
            self._names.register(name, handle)

        self._gate.run(f"register_name({name!r})", op)

    def unregister_name(self, name: str, handle: int) -> None:
        """See ``Coordinator.unregister_name``."""
        self._gate.run(
            f"unregister_name({name!r})",
            lambda check: self._names.unregister(name, handle, check),
        )

    def unregister_handle(self, handle: int) -> None:
        """See ``Coordinator.unregister_handle``."""
        self._gate.run(
            "unregister_handle", lambda check: self._names.unregister_handle(handle, check)
        )

    def query_name(self, name: str) -> int | None:
        """See ``Coordinator.query_name``."""
        return self._names.query(name)

    def wait_name(self, name: str, timeout: float) -> int:
        """See ``Coordinator.wait_name``."""
        return self._names.wait(name, timeout)

    def names(self) -> dict[str, int]:
        """See ``Coordinator.names``."""
        return self._names.names()

    def join_group(self, group: str, handle: int) -> None:
        """See ``Coordinator.join_group``."""

        def op(check: Callable[[], None]) -> None:
            check()
            self._names.join(group, handle)

        self._gate.run(f"join_group({group!r})", op)

    def leave_group(self, group: str, handle: int) -> None:
        """See ``Coordinator.leave_group``."""
        self._gate.run(
            f"leave_group({group!r})", lambda check: self._names.leave(group, handle, check)
        )

    def group_members(self, group: str) -> list[int]:
        """See ``Coordinator.group_members``."""
        return self._names.members(group)

    def groups(self) -> dict[str, list[int]]:
        """See ``Coordinator.groups``."""
        return self._names.groups()

    # config

    def config_get(self, key: str, default: Any = None) -> Any:
        """See ``Coordinator.config_get``."""
        return self._config.get(key, default)

    def config_set(self, key: str, value: Any) -> None:
        """See ``Coordinator.config_set``; ``TypeError`` if not JSON-serializable."""
        check_name(key)
        data = json.dumps(value).encode()
        self._gate.run(f"config_set({key!r})", lambda check: self._config.set(key, data, check))

    def config_list(self) -> dict[str, Any]:
        """See ``Coordinator.config_list``."""
        return self._config.list()

    def watch_config(self, key: str) -> None:
        """See ``Coordinator.watch_config``."""
        self._config.watch(key)

    # election

    def is_master(self) -> bool:
        """See ``Coordinator.is_master``."""
        return self._election.is_master()

    def master(self) -> tuple[int | None, int]:
        """See ``Coordinator.master``."""
        return self._election.master()

    # locks

    @property
    def clustered(self) -> bool:
        """True: ZooKeeper coordinates several processes."""
        return True

    def _own_lock(
        self, key: str, ttl: float, wait: float | None, on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """ZooKeeper's lock recipe."""
        return self._zk_locks.lock(key, wait, on_acquired, on_lost)

    def _lock_without_redis(
        self, key: str, ttl: float, wait: float | None, on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """No Redis URL: a ``"redis"`` lock cannot be had."""
        raise CoordUnavailable("no Redis URL configured for redis locks")
