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
from functools import partial
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from coord._base import CoordBase
from coord._runtime import SerialWorker, log
from coord._zkacl import ensure_tree
from coord._zkutil import Items, WatchedDir, seq_of, zk_errors
from coord.api import AcquiredCallback, Health, LockRequest, LostCallback, NodeInfo
from coord.errors import CoordUnavailable, NodeIdTaken
from coord.security import TlsFiles, ZkAuth, probe_tls, zk_client_kwargs
from coord.zk_election import ZkElection
from coord.zk_lock import ZkLocks
from coord.zk_names import ZkNames, _check_name

__all__ = ["ZkCoordinator"]

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
        _check_name(cluster)
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
        self._health = Health.LOST
        self._session_id: int | None = None
        self._started = False
        self._names = ZkNames(self._client, self._root, self._worker, self._emit)
        # Mastership is a lease: a node acts as master only while it heard from
        # ZooKeeper within half the session timeout, so a master paused (SIGSTOP, GC)
        # past its session never believes it still leads once it runs again.
        self._session_timeout = session_timeout
        self._lease_until = 0.0
        self._election = ZkElection(
            self._client, self._root, self._worker, self._emit, self._has_lease
        )
        self._zk_locks = ZkLocks(
            self._client, self._root, self._pool, self._timer, self._notifier, self._is_connected
        )
        self._members: dict[int, NodeInfo] = {}
        self._members_dir = WatchedDir(
            self._client, f"{self._root}/nodes", self._worker, True, self._members_changed
        )
        self._config_lock = threading.Lock()
        self._config: dict[str, Any] = {}
        self._watched: set[str] = set()
        self._config_dir = WatchedDir(
            self._client, f"{self._root}/config", self._worker, True, self._config_changed
        )

    def _is_connected(self) -> bool:
        return self._health is Health.CONNECTED

    def _has_lease(self) -> bool:
        return self._health is Health.CONNECTED and time.monotonic() < self._lease_until

    def _renew_lease(self) -> None:
        """On the pool: one round trip to ZooKeeper extends the lease from when it was sent."""
        if self._stopped:
            return
        sent = time.monotonic()
        try:
            self._client.exists(self._root)
        except (KazooException, KazooTimeoutError):
            pass  # no renewal: the lease runs out on its own
        else:
            self._lease_until = sent + self._session_timeout / 2

        def again() -> None:
            if not self._stopped:
                self._pool.submit(self._renew_lease, (), lambda _r, _e: None)

        self._timer.call_later(self._session_timeout / 6, again)

    def _require_connected(self, what: str) -> None:
        # kazoo would queue the request until reconnected; fail fast instead.
        if self._health is not Health.CONNECTED:
            raise CoordUnavailable(f"{what}: ZooKeeper session is {self._health.value}")

    @property
    def health(self) -> Health:
        """Current session health."""
        return self._health

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
        try:
            with zk_errors("connecting to ZooKeeper"):
                self._client.start(timeout=15)
        except CoordUnavailable:
            if self._tls is not None:
                probe_tls(self._hosts, self._tls)  # names a TLS failure, if that was it
            raise
        try:
            self._check_redis()
            with zk_errors("joining the cluster"):
                ensure_tree(self._client, self._root, _DIRS, self._auth)
                incarnation = self._sequence("incarnations") + 1
                while True:
                    nid = node_id if node_id is not None else self._sequence("ids") + 1
                    info = NodeInfo(nid, incarnation, host, pid, dict(endpoints))
                    try:
                        self._client.create(
                            f"{self._root}/nodes/{nid}", info.to_json(), ephemeral=True
                        )
                        break
                    except NodeExistsError:
                        if node_id is not None:
                            raise NodeIdTaken(f"node id {nid} is in use") from None
                self._info = info
                self._zk_locks.node_id = nid
                self._session_id = self._client.client_id[0]
                self._health = Health.CONNECTED
                self._renew_lease()
                self._election.join(nid)
        except BaseException:
            self._client.stop()
            self._client.close()
            raise
        self._client.add_listener(self._on_state)
        self._emit("on_health", Health.CONNECTED)
        self._on_worker(self._refresh_all)
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
            self._health = Health.LOST
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
        if state == KazooState.CONNECTED:
            self._worker.post(self._connected)
            return
        self._health = Health.SUSPENDED if state == KazooState.SUSPENDED else Health.LOST
        self._election.step_down_now()
        health = self._health
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
            if self._health is not Health.LOST:
                self._zk_locks.session_lost()
            try:
                self._restore()
            except (KazooException, KazooTimeoutError, CoordUnavailable) as exc:
                log.warning("coord: restoring after session loss failed: %r", exc)
                return  # the next CONNECTED retries
            self._session_id = sid
        self._health = Health.CONNECTED
        self._emit("on_health", Health.CONNECTED)
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
        self._config_dir.refresh()
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
        self._require_connected("register_name")
        self._names.register(name, handle)

    def unregister_name(self, name: str, handle: int) -> None:
        """See ``Coordinator.unregister_name``."""
        self._names.unregister(name, handle, partial(self._require_connected, "unregister_name"))

    def unregister_handle(self, handle: int) -> None:
        """See ``Coordinator.unregister_handle``."""
        self._names.unregister_handle(handle, partial(self._require_connected, "unregister_handle"))

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
        self._require_connected("join_group")
        self._names.join(group, handle)

    def leave_group(self, group: str, handle: int) -> None:
        """See ``Coordinator.leave_group``."""
        self._names.leave(group, handle, partial(self._require_connected, "leave_group"))

    def group_members(self, group: str) -> list[int]:
        """See ``Coordinator.group_members``."""
        return self._names.members(group)

    def groups(self) -> dict[str, list[int]]:
        """See ``Coordinator.groups``."""
        return self._names.groups()

    # config

    def _config_changed(self, old: Items, new: Items) -> None:
        values: dict[str, Any] = {}
        for key, data in new.items():
            try:
                values[key] = json.loads(data or b"null")
            except ValueError:
                log.warning("coord: config %r is not JSON", key)
        with self._config_lock:
            self._config = values
            watched = set(self._watched)
        for key in watched:
            if old.get(key) != new.get(key):
                self._emit("on_config", key, values.get(key))

    def config_get(self, key: str, default: Any = None) -> Any:
        """See ``Coordinator.config_get``."""
        with self._config_lock:
            return json.loads(json.dumps(self._config[key])) if key in self._config else default

    def config_set(self, key: str, value: Any) -> None:
        """See ``Coordinator.config_set``; ``TypeError`` if not JSON-serializable."""
        _check_name(key)
        self._require_connected("config_set")
        data = json.dumps(value).encode()
        path = f"{self._root}/config/{key}"
        with zk_errors(f"config_set({key!r})"):
            try:
                self._client.set(path, data)
            except NoNodeError:
                try:
                    self._client.create(path, data)
                except NodeExistsError:
                    self._client.set(path, data)
        with self._config_lock:
            self._config[key] = json.loads(data)

    def config_list(self) -> dict[str, Any]:
        """See ``Coordinator.config_list``."""
        with self._config_lock:
            return json.loads(json.dumps(self._config))  # type: ignore[no-any-return]

    def watch_config(self, key: str) -> None:
        """See ``Coordinator.watch_config``."""
        with self._config_lock:
            self._watched.add(key)

    # election

    def is_master(self) -> bool:
        """See ``Coordinator.is_master``."""
        return self._election.is_master()

    def master(self) -> tuple[int | None, int]:
        """See ``Coordinator.master``."""
        return self._election.master()

    # locks

    def lock(
        self,
        key: str,
        ttl: float,
        wait: float | None,
        backend: str,
        on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """See ``Coordinator.lock``; ``CoordUnavailable`` for redis without a URL."""
        _check_name(key)
        if backend == "zk":
            return self._zk_locks.lock(key, wait, on_acquired, on_lost)
        if backend != "redis":
            raise ValueError(f"unknown lock backend {backend!r}")
        req = self._redis_lock(key, ttl, wait, on_acquired, on_lost)
        if req is None:
            raise CoordUnavailable("no Redis URL configured for redis locks")
        return req
