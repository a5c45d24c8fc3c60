"""Redis clients from URLs: ``redis://`` and ``redis+sentinel://``.

``redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]``
asks the sentinels for the current master of ``service_name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

__all__ = ["SentinelUrl", "make_client", "parse_sentinel_url"]

_TIMEOUTS: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}


@dataclass(frozen=True)
class SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse a sentinel URL; raises ``ValueError`` when malformed.

    >>> parse_sentinel_url("redis+sentinel://a:26379,b:26380/mymaster/2").sentinels
    (('a', 26379), ('b', 26380))
    """
    scheme = "redis+sentinel://"
    if not url.startswith(scheme):
        raise ValueError(f"not a sentinel URL: {url!r}")
    rest = url[len(scheme) :]
    netloc, _, path = rest.partition("/")
    password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        password = unquote(auth.partition(":")[2]) or None
    sentinels = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad sentinel address {part!r} in {url!r}")
        sentinels.append((host, int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"sentinel URL needs /service_name[/db]: {url!r}")
    return SentinelUrl(
        tuple(sentinels), parts[0], int(parts[1]) if len(parts) == 2 else 0, password
    )


def make_client(url: str) -> Any:
    """A ``redis.Redis`` for ``url`` (plain or sentinel); ``ValueError`` if malformed."""
    import redis
    from redis.sentinel import Sentinel

    if url.startswith("redis+sentinel://"):
        s = parse_sentinel_url(url)
        sentinel = Sentinel(list(s.sentinels), **_TIMEOUTS)  # type: ignore[no-untyped-call]
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            s.service, db=s.db, password=s.password, **_TIMEOUTS
        )
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"unsupported Redis URL {url!r}")
    return redis.Redis.from_url(url, **_TIMEOUTS)
