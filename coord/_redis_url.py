"""Redis clients from URLs, with credentials and TLS, and the translation of their errors.

Accepted URLs:

- ``redis://[user:password@]host:port[/db]`` and ``rediss://...`` (TLS);
  ``rediss://`` takes ``?ssl_ca_certs=&ssl_certfile=&ssl_keyfile=`` (redis-py's
  own query parameters).
- ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
  and ``rediss+sentinel://...`` (TLS, same query parameters): the sentinels are
  asked for the current master of ``service``. The user, password and TLS
  settings go to the master *and* to every sentinel (redis-py's
  ``sentinel_kwargs``), so a deployment can lock both down with one identity.

``TlsFiles`` given by configuration fill in the CA/cert/key of a TLS URL; they
are refused with a plain ``redis://`` URL rather than silently ignored.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from coord.security import TlsFiles

__all__ = ["SentinelUrl", "make_client", "parse_sentinel_url", "redis_failure"]

_TIMEOUTS: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
# redis-py retries a failed connection up to 10 times (and AuthenticationError
# counts as a connection error); through Sentinels that nests into half a
# minute before a wrong password is reported. The lock engine retries on its own
# schedule, so a call here retries briefly and reports.
_RETRIES = 2
_RETRY_CAP = 0.2
_TLS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")


@dataclass(frozen=True)
class SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL (the password is kept out of ``repr``)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None = field(repr=False)
    username: str | None = None
    tls: bool = False
    tls_params: tuple[tuple[str, str], ...] = ()


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse a sentinel URL; raises ``ValueError`` (without the password) when malformed.

    >>> s = parse_sentinel_url("redis+sentinel://u:pw@a:26379,b:26380/mymaster/2")
    >>> s.sentinels, s.username, s.db
    ((('a', 26379), ('b', 26380)), 'u', 2)
    """
    scheme = next((s for s in _SENTINEL_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ValueError("not a sentinel URL (redis+sentinel:// or rediss+sentinel://)")
    rest, _, query = url[len(scheme) :].partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user, _, pw = auth.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    sentinels = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad sentinel address {part!r} in a sentinel URL")
        sentinels.append((host, int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"sentinel URL needs /service_name[/db] after the hosts, got {path!r}")
    params = tuple(parse_qsl(query))
    bad = [k for k, _ in params if k not in _TLS_PARAMS]
    if bad:
        raise ValueError(f"unsupported sentinel URL parameter(s): {', '.join(bad)}")
    tls = scheme.startswith("rediss")
    if params and not tls:
        raise ValueError("TLS parameters need a rediss+sentinel:// URL")
    return SentinelUrl(
        tuple(sentinels),
        parts[0],
        int(parts[1]) if len(parts) == 2 else 0,
        password,
        username,
        tls,
        params,
    )


def _tls_kwargs(tls: bool, params: dict[str, str], files: TlsFiles | None) -> dict[str, Any]:
    if not tls:
        if files is not None:
            raise ValueError("redis_tls_* settings need a rediss:// (or rediss+sentinel://) URL")
        return {}
    kw: dict[str, Any] = {"ssl": True, **params}
    if files is not None:
        for name, value in zip(_TLS_PARAMS, (files.ca, files.cert, files.key), strict=True):
            if value is not None:
                kw.setdefault(name, value)
    return kw


def make_client(
    url: str, tls: TlsFiles | None = None, timeout: float | None = None, retries: int = _RETRIES
) -> Any:
    """A ``redis.Redis`` for ``url`` (plain, TLS or sentinel); ``ValueError`` if malformed.

    ``timeout`` (seconds) replaces the socket and connect timeouts and
    ``retries`` the retry count: the lock fast path wants one short try.
    """
    import redis
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=_RETRY_CAP), retries)
    timeouts = _TIMEOUTS if timeout is None else {
        "socket_timeout": timeout, "socket_connect_timeout": timeout
    }
    if url.startswith(_SENTINEL_SCHEMES):
        s = parse_sentinel_url(url)
        conn: dict[str, Any] = {
            "username": s.username,
            "password": s.password,
            "retry": retry,
            **timeouts,
        }
        conn.update(_tls_kwargs(s.tls, dict(s.tls_params), tls))
        # The same identity and TLS for the sentinels as for the master.
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(s.sentinels), sentinel_kwargs=dict(conn), **conn
        )
        return sentinel.master_for(s.service, db=s.db)  # type: ignore[no-untyped-call]
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"unsupported Redis URL scheme in {url.partition(':')[0]!r}")
    extra = _tls_kwargs(url.startswith("rediss://"), {}, tls)
    extra.pop("ssl", None)  # from_url picks the TLS connection class from the scheme
    return redis.Redis.from_url(url, retry=retry, **timeouts, **extra)


_AUTH_WORDS = ("AuthenticationError", "WRONGPASS", "NOAUTH", "invalid username-password")


def redis_failure(exc: BaseException) -> str | None:
    """Why Redis refused us, when retrying cannot help: credentials, permissions or TLS.

    Returns None for errors worth retrying (connection refused, timeouts,
    failover in progress). Looks through the exception chain, and through the
    text redis-py collects from every sentinel when none of them answered.
    """
    from redis.exceptions import AuthenticationError, NoPermissionError

    seen: BaseException | None = exc
    text = []
    while seen is not None:
        if isinstance(seen, AuthenticationError):
            return f"authentication failed ({seen})"
        if isinstance(seen, NoPermissionError):
            return f"permission denied ({seen})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed ({getattr(seen, 'reason', None) or seen})"
        text.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    joined = " ".join(text)
    if any(word in joined for word in _AUTH_WORDS):
        return f"authentication failed ({joined})"
    if "SSL" in joined or "TLS" in joined:
        return f"TLS handshake failed ({joined})"
    return None
