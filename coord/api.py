"""The interface between a node and the cluster: :class:`Coordinator`.

A node talks to coordination only through this module's types. Two backends
implement it: ZooKeeper (+ Redis locks) for a cluster, and an embedded,
in-process one for a standalone node. Blocking methods say so; everything
else reads a cache that watches keep fresh and returns at once.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

__all__ = [
    "AcquiredCallback",
    "BaseListener",
    "CoordListener",
    "Coordinator",
    "Health",
    "Held",
    "LockRequest",
    "LostCallback",
    "NodeInfo",
]

T = TypeVar("T")


@dataclass(frozen=True)
class NodeInfo:
    """What the cluster knows about one node: the value of ``nodes/<id>``.

    >>> info = NodeInfo(3, 7, "h", 42, {"harbor": "tcp://h:5000"})
    >>> NodeInfo.from_json(info.to_json()) == info
    True
    """

    node_id: int
    incarnation: int
    host: str
    pid: int
    endpoints: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Encode as UTF-8 JSON."""
        return json.dumps(
            {
                "node_id": self.node_id,
                "incarnation": self.incarnation,
                "host": self.host,
                "pid": self.pid,
                "endpoints": self.endpoints,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> NodeInfo:
        """Decode what :meth:`to_json` made; raises ``ValueError`` on bad input."""
        try:
            d = json.loads(data)
            return cls(
                node_id=int(d["node_id"]),
                incarnation=int(d["incarnation"]),
                host=str(d["host"]),
                pid=int(d["pid"]),
                endpoints={str(k): str(v) for k, v in d.get("endpoints", {}).items()},
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"bad NodeInfo JSON: {data!r}") from exc


class Health(enum.Enum):
    """Health of the coordination session, reported by ``on_health``.

    CONNECTED: the session is live. Names, groups and membership this node
        registered exist; ZooKeeper locks held are valid; a master may act.
    SUSPENDED: the connection dropped but the session may still be alive.
        Names and groups may vanish if it expires; ZooKeeper locks are
        unsafe (``Held.valid`` is False) but not yet reported lost; the
        master has stepped down already. Blocking calls (names, groups,
        config) wait for the session to come back, up to the session
        timeout, then raise ``CoordUnavailable``. Redis locks are unaffected.
    LOST: the session expired; blocking calls raise ``CoordUnavailable``
        until the new session is up. Every ephemeral entry (membership, names,
        groups, ZooKeeper locks, election candidacy) is gone and ZooKeeper
        locks were reported lost. Once a new session is up the coordinator
        re-registers membership, names and groups (``on_name_lost`` for a
        name another node took meanwhile) and reports CONNECTED again.
    """

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


class CoordListener(Protocol):
    """Receives cluster events. Called on coord's own notifier thread, in order.

    Callbacks must return quickly (post a message and return); they may call
    non-blocking Coordinator methods.
    """

    def on_member_join(self, info: NodeInfo) -> None:
        """A node joined (or rejoined with a new incarnation)."""

    def on_member_leave(self, info: NodeInfo) -> None:
        """A node left the cluster (stopped, or its session expired)."""

    def on_name_lost(self, name: str, handle: int) -> None:
        """A name this node registered for ``handle`` is now held by another."""

    def on_config(self, key: str, value: Any) -> None:
        """A watched config key changed (``value`` None when deleted)."""

    def on_group(self, group: str, joined: list[int], left: list[int]) -> None:
        """Members (handles, sorted) joined or left ``group``, as the cache saw it."""

    def on_master(self, is_master: bool, epoch: int, master_id: int | None) -> None:
        """Mastership changed: this node's role, the term's epoch, the master."""

    def on_health(self, health: Health) -> None:
        """The coordination session changed health."""


class BaseListener:
    """A :class:`CoordListener` whose methods do nothing; override what you need."""

    def on_member_join(self, info: NodeInfo) -> None:
        """Do nothing."""

    def on_member_leave(self, info: NodeInfo) -> None:
        """Do nothing."""

    def on_name_lost(self, name: str, handle: int) -> None:
        """Do nothing."""

    def on_config(self, key: str, value: Any) -> None:
        """Do nothing."""

    def on_group(self, group: str, joined: list[int], left: list[int]) -> None:
        """Do nothing."""

    def on_master(self, is_master: bool, epoch: int, master_id: int | None) -> None:
        """Do nothing."""

    def on_health(self, health: Health) -> None:
        """Do nothing."""


class Held(ABC):
    """A lock that was acquired: its key, fencing token and backend.

    ``fence`` grows with every acquisition of the same key (also across a
    Redis restart); pass it to the protected resource so it can refuse writes
    from a holder that lost the lock.
    """

    key: str
    fence: int
    backend: str

    @property
    @abstractmethod
    def valid(self) -> bool:
        """True while the lock is still believed held (not released nor lost)."""

    @abstractmethod
    def release(self) -> None:
        """Release the lock (blocking). Safe to call twice or after loss; never raises."""


class LockRequest(ABC):
    """A pending or granted lock request, returned at once by ``Coordinator.lock``."""

    @abstractmethod
    def cancel(self) -> None:
        """Withdraw the request; release the lock if it was already acquired.

        A cancelled request never calls ``on_acquired`` afterwards and leaves
        no waiter entry behind. Non-blocking; safe to call twice.
        """


AcquiredCallback = Callable[[Held | BaseException], None]
LostCallback = Callable[[Held], None]


class Coordinator(ABC):
    """Cluster coordination as a node sees it. Thread-safe.

    Blocking methods raise :class:`coord.errors.CoordUnavailable` when the
    backend cannot be reached. Add listeners before :meth:`start` to see
    every event.
    """

    @abstractmethod
    def start(
        self, node_id: int | None, host: str, pid: int, endpoints: dict[str, str]
    ) -> NodeInfo:
        """Join the cluster (blocking) and return this node's :class:`NodeInfo`.

        ``node_id=None`` allocates a fresh unique id. If ``node_id`` is still
        held, the holder counts as live when one of its TCP ``endpoints``
        accepts a connection: ``NodeIdTaken`` at once. Otherwise it may be a
        killed predecessor whose session has not expired yet: one warning is
        logged and the call waits (about the session timeout plus a margin)
        for the id to be freed, then joins, or raises ``NodeIdTaken``.
        ``CoordUnavailable`` if unreachable.
        """

    @abstractmethod
    def stop(self) -> None:
        """Leave the cluster, release locks and join coord's threads. Idempotent."""

    @property
    @abstractmethod
    def health(self) -> Health:
        """Current session health."""

    @property
    @abstractmethod
    def node(self) -> NodeInfo | None:
        """This node's info once started, else None."""

    @abstractmethod
    def add_listener(self, listener: CoordListener) -> None:
        """Deliver cluster events to ``listener`` (on coord's notifier thread)."""

    @abstractmethod
    def submit(
        self,
        fn: Callable[..., T],
        *args: Any,
        callback: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Run ``fn(*args)`` on coord's thread pool, then ``callback(result, exc)``.

        The callback runs on the pool thread; exactly one of its arguments is
        meaningful. Raises ``CoordUnavailable`` after :meth:`stop`.
        """

    # membership
    @abstractmethod
    def members(self) -> dict[int, NodeInfo]:
        """Live nodes by id, from the watch-fed cache (non-blocking)."""

    # names
    @abstractmethod
    def register_name(self, name: str, handle: int) -> None:
        """Bind a global ``name`` to ``handle`` (blocking).

        Re-registering the same handle is a no-op. Raises ``NameTaken`` if
        another live handle holds it, ``CoordUnavailable`` if unreachable.
        """

    @abstractmethod
    def unregister_name(self, name: str, handle: int) -> None:
        """Drop ``name`` if ``handle`` holds it (blocking); otherwise no-op.

        The name is forgotten locally first, so it is never re-registered
        after a session expiry even if this call raises ``CoordUnavailable``.
        """

    @abstractmethod
    def unregister_handle(self, handle: int) -> None:
        """Drop every name and group membership of ``handle`` (blocking).

        Forgotten locally first, like :meth:`unregister_name`.
        """

    @abstractmethod
    def query_name(self, name: str) -> int | None:
        """The handle bound to ``name`` per the cache, or None (non-blocking)."""

    @abstractmethod
    def wait_name(self, name: str, timeout: float) -> int:
        """Block until ``name`` is bound; raises ``NameNotFound`` on timeout."""

    @abstractmethod
    def names(self) -> dict[str, int]:
        """Every global name and its handle, from the cache."""

    # groups
    @abstractmethod
    def join_group(self, group: str, handle: int) -> None:
        """Add ``handle`` to ``group`` (blocking, idempotent)."""

    @abstractmethod
    def leave_group(self, group: str, handle: int) -> None:
        """Remove ``handle`` from ``group`` (blocking, idempotent)."""

    @abstractmethod
    def group_members(self, group: str) -> list[int]:
        """Sorted handles in ``group``, from the cache."""

    @abstractmethod
    def pick(self, group: str, key: object) -> int | None:
        """The member of ``group`` owning ``key`` on a consistent-hash ring."""

    @abstractmethod
    def groups(self) -> dict[str, list[int]]:
        """Every non-empty group and its sorted members, from the cache."""

    # config
    @abstractmethod
    def config_get(self, key: str, default: Any = None) -> Any:
        """The JSON value of config ``key`` from the cache, else ``default``."""

    @abstractmethod
    def config_set(self, key: str, value: Any) -> None:
        """Store JSON-serializable ``value`` under ``key`` (blocking)."""

    @abstractmethod
    def config_list(self) -> dict[str, Any]:
        """Every config key and value, from the cache."""

    @abstractmethod
    def watch_config(self, key: str) -> None:
        """Call ``listener.on_config(key, value)`` whenever ``key`` changes."""

    # election
    @abstractmethod
    def is_master(self) -> bool:
        """True while this node is the cluster's master and may act as such."""

    @abstractmethod
    def master(self) -> tuple[int | None, int]:
        """``(master node id or None, epoch)`` as currently known."""

    @property
    def has_redis(self) -> bool:
        """True when ``backend="redis"`` locks go to a Redis server."""
        return False

    @property
    def clustered(self) -> bool:
        """True when this coordinates several processes (ZooKeeper); False embedded."""
        return False

    # locks
    @abstractmethod
    def lock(
        self,
        key: str,
        ttl: float,
        wait: float | None,
        backend: str,
        on_acquired: AcquiredCallback,
        on_lost: LostCallback,
    ) -> LockRequest:
        """Ask for a cluster-wide lock; returns at once.

        ``on_acquired`` gets a :class:`Held`, or an exception: ``LockTimeout``
        after ``wait`` seconds (None: wait forever), ``CoordUnavailable``.
        ``on_lost`` gets the Held when its lease ended while held. ``ttl`` is
        the lease (renewed automatically while held). ``backend`` is
        ``"redis"`` or ``"zk"``. Raises ``ValueError`` for an unknown backend.
        """
