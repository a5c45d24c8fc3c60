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
    CoordError,
    CoordUnavailable,
    LockLost,
    LockTimeout,
    NameNotFound,
    NameTaken,
    NodeIdTaken,
)
from coord.hashring import HashRing

__all__ = [
    "AcquiredCallback",
    "BaseListener",
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
    "connect",
]


def connect(
    zk_hosts: str | None,
    redis_url: str | None,
    cluster: str,
    session_timeout: float = 10.0,
) -> Coordinator:
    """Make a coordinator (not started yet: call ``start``).

    ``zk_hosts`` None gives the embedded in-process backend (Redis locks
    still used when ``redis_url`` is set); otherwise ZooKeeper at
    ``zk_hosts`` with the tree under ``/skymesh/<cluster>/``. ``redis_url``
    (``redis://`` or ``redis+sentinel://``) enables ``backend="redis"`` locks.
    Raises ``ValueError`` for a malformed URL or cluster name.
    """
    if zk_hosts is None:
        from coord.embedded import EmbeddedCoordinator

        return EmbeddedCoordinator(redis_url, cluster)
    from coord.zk import ZkCoordinator

    return ZkCoordinator(zk_hosts, redis_url, cluster, session_timeout)
