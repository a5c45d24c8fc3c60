"""Errors raised by :mod:`coord`.

Every error leaving the package derives from :class:`CoordError`; exceptions of
kazoo and redis-py are translated at the boundary (``raise X(...) from exc``)::

    CoordError
    ├── CoordUnavailable   not connected, session suspended or lost, server down
    │   └── CoordAuthError credentials missing or rejected, or the TLS handshake failed
    ├── NameTaken          a global name is held by another live handle
    ├── NameNotFound       wait_name() timed out
    ├── NodeIdTaken        a live node already uses this node id
    ├── LockTimeout        a lock was not acquired within its ``wait``
    └── LockLost           a held lock's lease ended (renewal failed, session lost)
"""

from __future__ import annotations

__all__ = [
    "CoordAuthError",
    "CoordError",
    "CoordUnavailable",
    "LockLost",
    "LockTimeout",
    "NameNotFound",
    "NameTaken",
    "NodeIdTaken",
]


class CoordError(Exception):
    """Root of every error raised by coord."""


class CoordUnavailable(CoordError):
    """The coordination service cannot be reached, or the session is not usable."""


class CoordAuthError(CoordUnavailable):
    """ZooKeeper or Redis refused us: wrong or missing credentials, or TLS failed.

    Retrying does not help; the message names the server and the cause.
    """


class NameTaken(CoordError):
    """A global name is already registered by another live handle."""


class NameNotFound(CoordError):
    """A name did not appear within the time allowed."""


class NodeIdTaken(CoordError):
    """A live node is already registered under the requested node id."""


class LockTimeout(CoordError):
    """A lock could not be acquired within the ``wait`` given."""


class LockLost(CoordError):
    """A lock that was held is no longer held (lease expired or session lost)."""
