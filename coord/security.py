"""Credentials and TLS settings for ZooKeeper and Redis.

>>> auth = ZkAuth.parse("digest:node:s3cret")
>>> auth.scheme, auth.user
('digest', 'node')
>>> "s3cret" in repr(auth)
False

A ``ZkAuth`` names the cluster's identity: every znode skymesh creates under
``/skymesh/<cluster>`` gets an ACL giving that identity (and nobody else) all
permissions. ``TlsFiles`` holds PEM paths for a TLS client (CA bundle that
signs the server, and optionally a client certificate and key).
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from coord.errors import CoordAuthError

__all__ = ["TlsFiles", "ZkAuth"]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS client: ``ca`` verifies the server; ``cert``/``key`` identify us."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a TLS client certificate needs both cert and key")


@dataclass(frozen=True)
class ZkAuth:
    """The cluster's ZooKeeper identity: ``digest:user:password`` or ``sasl:user:password``.

    The password never appears in ``repr`` (so it cannot reach a log line).
    """

    scheme: str
    user: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, value: str) -> ZkAuth:
        """Parse ``scheme:user:password``; ``ValueError`` (without the secret) if malformed."""
        scheme, _, rest = value.partition(":")
        user, _, password = rest.partition(":")
        if scheme not in ("digest", "sasl"):
            raise ValueError(f"zk_auth must start with 'digest:' or 'sasl:', got {scheme!r}")
        if not user or not password:
            raise ValueError("zk_auth must look like 'digest:user:password'")
        return cls(scheme, user, password)

    def acl(self) -> list[Any]:
        """The ACL for every znode of the cluster: this identity, all permissions, nobody else."""
        from kazoo.security import make_acl, make_digest_acl

        if self.scheme == "digest":
            return [make_digest_acl(self.user, self.password, all=True)]
        return [make_acl("sasl", self.user, all=True)]

    def kazoo_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``KazooClient`` that authenticate every session.

        ``ValueError`` for ``sasl`` without the ``pure-sasl`` package.
        """
        kw: dict[str, Any] = {"default_acl": self.acl()}
        if self.scheme == "digest":
            kw["auth_data"] = [("digest", f"{self.user}:{self.password}")]
        else:
            # kazoo's SASL needs pure-sasl and would only say so inside its connection loop.
            if importlib.util.find_spec("puresasl") is None:
                raise ValueError("zk_auth 'sasl:' needs the pure-sasl package")
            kw["sasl_options"] = {
                "mechanism": "DIGEST-MD5",
                "username": self.user,
                "password": self.password,
            }
        return kw


def zk_client_kwargs(auth: ZkAuth | None, tls: TlsFiles | None) -> dict[str, Any]:
    """``KazooClient`` keyword arguments for ``auth`` (ACLs, credentials) and ``tls``."""
    kw: dict[str, Any] = {}
    if auth is not None:
        kw.update(auth.kazoo_kwargs())
    if tls is not None:
        kw.update(use_ssl=True, ca=tls.ca, certfile=tls.cert, keyfile=tls.key)
    return kw


def probe_tls(hosts: str, tls: TlsFiles, timeout: float = 3.0) -> None:
    """Handshake with each ZooKeeper in ``hosts`` as kazoo would; raise on a TLS failure.

    Used only to explain a failed start: kazoo retries a failed handshake until
    its timeout and then reports a timeout, which hides the cause. Raises
    ``CoordAuthError`` naming the server and the TLS error; returns quietly if
    no server could be reached at all (then "unavailable" is the right word).
    """
    ctx = ssl.create_default_context(cafile=tls.ca)
    ctx.check_hostname = False  # kazoo does not check host names either
    if tls.cert and tls.key:
        ctx.load_cert_chain(tls.cert, tls.key)
    for part in hosts.split("/", 1)[0].split(","):
        host, _, port = part.strip().rpartition(":")
        addr = (host or part.strip(), int(port) if port.isdigit() else 2181)
        try:
            with socket.create_connection(addr, timeout) as raw, ctx.wrap_socket(raw) as conn:
                # TLS 1.3: a rejected client certificate shows only on the first read.
                conn.settimeout(0.5)
                with contextlib.suppress(TimeoutError):
                    conn.recv(1)
        except ssl.SSLError as exc:
            why = getattr(exc, "reason", None) or exc
            raise CoordAuthError(
                f"TLS handshake with ZooKeeper {addr[0]}:{addr[1]} failed: {why}"
            ) from exc
        except OSError:
            continue


# How long a TLS start waits for kazoo before it probes the handshake itself.
_PROBE_AFTER = 1.0


def start_zk_client(client: Any, hosts: str, tls: TlsFiles | None, timeout: float) -> None:
    """``client.start(timeout)`` for a kazoo client, naming a refused TLS handshake.

    kazoo retries a refused handshake until its timeout and then reports only
    the timeout, so a node with a wrong certificate used to wait 15 s to learn
    nothing. With ``tls``, the handshake is tried here (:func:`probe_tls`) once
    the start has waited ``_PROBE_AFTER`` without connecting, and again if it
    times out. Raises ``CoordAuthError`` for a refused handshake and kazoo's
    timeout exception when nothing answered; the client is stopped and closed
    on either.
    """
    event = client.start_async()
    deadline = time.monotonic() + timeout
    try:
        if tls is not None and not event.wait(min(_PROBE_AFTER, timeout)):
            probe_tls(hosts, tls)
        event.wait(max(0.0, deadline - time.monotonic()))
        if not client.connected:
            if tls is not None:
                probe_tls(hosts, tls)  # refused meanwhile (the server was down at first)
            raise client.handler.timeout_exception("Connection time-out")
    except BaseException:
        client.stop()
        client.close()
        raise
