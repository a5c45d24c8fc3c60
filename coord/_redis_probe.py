"""The start-time Redis check without redis-py: AUTH and PING over one socket.

A node checks at start that Redis accepts its credentials and TLS, so a wrong
password fails the start with one line (:class:`coord.errors.CoordAuthError`)
instead of the first lock in production. Importing redis-py for that costs
every node 7-9 MB of memory and 130-260 ms of CPU (issue 15: a 64-node
cluster on two cores), while most nodes never take a Redis lock. So for
``redis://`` and ``rediss://`` URLs the check speaks the two commands itself
(RESP is a line protocol; TLS is the standard library's, with redis-py's
defaults: certificates and host names verified); redis-py is imported on the
first Redis lock. Sentinel and ``unix://`` URLs are checked with redis-py as
before (:func:`probe` returns False).
"""

from __future__ import annotations

import socket
import ssl
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from coord.security import TlsFiles

__all__ = ["probe", "validate_url"]

_DEFAULT_PORT = 6379


def validate_url(url: str, tls: TlsFiles | None) -> None:
    """``ValueError`` (without the password) for a URL redis-py would refuse."""
    from coord._redis_url import _SENTINEL_SCHEMES, _tls_kwargs, parse_sentinel_url

    if url.startswith(_SENTINEL_SCHEMES):
        s = parse_sentinel_url(url)
        _tls_kwargs(s.tls, dict(s.tls_params), tls)
        return
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"unsupported Redis URL scheme in {url.partition(':')[0]!r}")
    _tls_kwargs(url.startswith("rediss://"), {}, tls)
    if url.startswith("unix://"):
        return
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise ValueError("bad port in the Redis URL") from None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"bad database number {db!r} in the Redis URL")


def _context(params: dict[str, str], files: TlsFiles | None) -> ssl.SSLContext:
    """redis-py's TLS defaults: verify the certificate and the host name."""
    from coord._redis_url import _tls_kwargs

    kw: dict[str, Any] = _tls_kwargs(True, params, files)
    ctx = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
    reqs = str(params.get("ssl_cert_reqs", "required")).lower()
    if reqs == "none":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = params.get("ssl_check_hostname", "true").lower() != "false"
        ctx.verify_mode = ssl.CERT_OPTIONAL if reqs == "optional" else ssl.CERT_REQUIRED
    if kw.get("ssl_certfile"):
        ctx.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"))
    return ctx


def _command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _reply(f: Any) -> str:
    """One simple reply line: ``+OK``, ``+PONG`` or ``-ERR ...``."""
    line: bytes = f.readline(65536)
    if not line:
        raise ConnectionError("Redis closed the connection")
    return line.decode(errors="replace").rstrip("\r\n")


def probe(url: str, files: TlsFiles | None, timeout: float = 1.0) -> str | bool | None:
    """AUTH (when the URL has a password) and PING.

    Returns None when Redis accepted us, a reason (``"authentication failed
    (...)"``, ``"permission denied (...)"``, ``"TLS handshake failed (...)"``)
    when it refused us, False when this URL is not one :func:`probe` speaks
    (sentinel, unix: check with redis-py). Raises ``OSError`` when Redis
    cannot be reached (worth retrying: the caller only logs it).
    """
    if not url.startswith(("redis://", "rediss://")):
        return False
    parts = urlsplit(url)
    tls = parts.scheme == "rediss"
    params = dict(parse_qsl(parts.query))
    host, port = parts.hostname or "localhost", parts.port or _DEFAULT_PORT
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    raw = socket.create_connection((host, port), timeout=timeout)  # OSError: unreachable
    sock: socket.socket = raw
    try:
        if tls:
            sock = _context(params, files).wrap_socket(raw, server_hostname=host)
        with sock.makefile("rwb") as f:
            if password is not None:
                auth = ("AUTH", user, password) if user else ("AUTH", password)
                f.write(_command(*auth))
            f.write(_command("PING"))
            f.flush()
            for _ in range(2 if password is not None else 1):
                line = _reply(f)
                if line.startswith("-"):
                    return _refusal(line[1:])
    except ssl.SSLError as exc:
        return f"TLS handshake failed ({getattr(exc, 'reason', None) or exc})"
    except ConnectionError as exc:
        if tls:  # connected, then dropped in or right after the handshake: refused
            return f"TLS handshake failed ({exc})"
        raise
    finally:
        sock.close()  # (wrap_socket detached raw: closing it too is harmless)
        raw.close()
    return None


def _refusal(error: str) -> str | None:
    """A refusal retrying cannot cure, from an error reply; None for any other error."""
    word = error.split(" ", 1)[0]
    if word in ("WRONGPASS", "NOAUTH") or "invalid password" in error:
        return f"authentication failed ({error})"
    if word == "NOPERM":
        return f"permission denied ({error})"
    return None
