"""skymesh cluster coordination: membership, names, groups, config, election, locks.

>>> import coord
>>> c = coord.connect(None, None, "demo")      # no ZooKeeper: embedded backend
>>> info = c.start(None, "localhost", 1, {})
>>> c.is_master(), c.master()
(True, (1, 1))
>>> c.stop()
"""

from __future__ import annotations

from coord.api import (
    AcquiredCallback,
    BaseListener,
    Coordinator,
    CoordListener,
    Health,
    Held,
    LockRequest,
    LostCallback,
    NodeInfo,
)
from coord.errors import (
    CoordAuthError,
    CoordError,
    CoordUnavailable,
    LockLost,
    LockTimeout,
    NameNotFound,
    NameTaken,
    NodeIdTaken,
)
from coord.hashring import HashRing
from coord.security import TlsFiles, ZkAuth

__all__ = [
    "AcquiredCallback",
    "BaseListener",
    "CoordAuthError",
    "CoordError",
    "CoordListener",
    "CoordUnavailable",
    "Coordinator",
    "HashRing",
    "Health",
    "Held",
    "LockLost",
    "LockRequest",
    "LockTimeout",
    "LostCallback",
    "NameNotFound",
    "NameTaken",
    "NodeIdTaken",
    "NodeInfo",
    "TlsFiles",
    "ZkAuth",
    "connect",
]


def connect(
    zk_hosts: str | None,
    redis_url: str | None,
    cluster: str,
    session_timeout: float = 10.0,
    *,
    zk_auth: ZkAuth | str | None = None,
    zk_tls: TlsFiles | None = None,
    redis_tls: TlsFiles | None = None,
) -> Coordinator:
    """Make a coordinator (not started yet: call ``start``).

    ``zk_hosts`` None gives the embedded in-process backend (Redis locks
    still used when ``redis_url`` is set); otherwise ZooKeeper at
    ``zk_hosts`` with the tree under ``/skymesh/<cluster>/``. ``redis_url``
    (``redis://`` or ``redis+sentinel://``) enables ``backend="redis"`` locks.
    ``zk_auth`` (``digest:user:password``) makes every znode of the cluster
    readable and writable by that identity only; ``zk_tls`` and ``redis_tls``
    turn TLS on with those PEM files (``rediss://`` URLs use TLS too).
    Raises ``ValueError`` for a malformed URL, cluster name or ``zk_auth``.
    """
    if isinstance(zk_auth, str):
        zk_auth = ZkAuth.parse(zk_auth)
    if zk_hosts is None:
        from coord.embedded import EmbeddedCoordinator

        return EmbeddedCoordinator(redis_url, cluster, redis_tls=redis_tls)
    from coord.zk import ZkCoordinator

    return ZkCoordinator(
        zk_hosts,
        redis_url,
        cluster,
        session_timeout,
        auth=zk_auth,
        tls=zk_tls,
        redis_tls=redis_tls,
    )
