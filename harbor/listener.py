"""The harbor's bound sockets, made before the node joins membership (issue 15).

A node advertises its harbor endpoints in its membership entry. They used to
be free ports picked with a throw-away socket and bound later by the
transport: another process could take a port in between and the node died
with "Address already in use". A :class:`Listener` binds PULL and PUB first
(port 0: the OS picks and the socket keeps it) and its :attr:`endpoints` are
what the sockets got, so what is advertised is always what is bound.

The listener owns a ZeroMQ context, the two bound sockets and (with
credentials) the ZAP handler, started before any server socket binds. A
:class:`harbor.zmq_transport.ZmqTransport` given a listener adopts all of
them on ``start()``; a listener never adopted is closed with :meth:`close`.
"""

from __future__ import annotations

import threading
from typing import Final

import zmq

from harbor.curve import HARBOR_DOMAIN, ZapAuthenticator, curve_server
from harbor.errors import TransportClosed, TransportError
from harbor.keys import Credentials

__all__ = ["RCVHWM", "Listener"]

# Frames ZeroMQ queues per inbound connection before it stops reading that connection.
RCVHWM = 64


def _bind(sock: zmq.Socket[bytes], host: str, port: int) -> int:
    """Bind ``sock`` on ``host:port`` (port 0: the OS picks) and return the bound port."""
    try:
        sock.bind(f"tcp://{host}:{port or '*'}")
    except zmq.ZMQError as exc:
        raise TransportError(f"cannot bind tcp://{host}:{port}: {exc}") from None
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    return int(endpoint.rsplit(b":", 1)[1])


MAX_SOCKETS: Final = 8192  # sockets per harbor context (the open-file limit binds first)

class Listener:
    """PULL and PUB bound now; ``endpoints`` are the ports the sockets hold.

    Example::

        lst = Listener("127.0.0.1", max_frame=DEFAULT_MAX_FRAME)
        coord.advertise(lst.endpoints)      # the bound ports, nothing picked ahead
        t = ZmqTransport(1, inc, deliver, deliver_pub, on_peer_down, listener=lst)
        t.start()                           # adopts the sockets; no bind can fail here

    ``pull_port``/``pub_port`` 0 let the OS pick. Raises ``TransportError``
    if a bind fails (a fixed port taken), ``ValueError`` for a wildcard
    ``bind_host`` without ``advertise_host``.
    """

    def __init__(
        self,
        bind_host: str,
        *,
        advertise_host: str | None = None,
        pull_port: int = 0,
        pub_port: int = 0,
        max_frame: int,
        credentials: Credentials | None = None,
    ) -> None:
        if advertise_host is None and bind_host in ("0.0.0.0", "*", "::"):
            raise ValueError("a wildcard bind_host needs an advertise_host")
        advertise = advertise_host or bind_host
        self.credentials = credentials
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        # libzmq's default of 1,023 sockets per context would stop a node talking to
        # ~340 peers at once (a PUSH and its monitor's two PAIRs each: docs/scale.md).
        ctx.set(zmq.MAX_SOCKETS, MAX_SOCKETS)
        socks: list[zmq.Socket[bytes]] = []
        auth = None
        try:
            if credentials is not None:
                # Started before any server socket binds: no handshake ever finds it
                # missing (and ZAP_ENFORCE_DOMAIN refuses one that would).
                auth = ZapAuthenticator(ctx, credentials)
                auth.start()
            pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
            socks = [pull, pub]
            for s in socks:
                s.setsockopt(zmq.LINGER, 0)
                if credentials is not None:
                    curve_server(s, credentials, HARBOR_DOMAIN)
            # A frame over max_frame makes ZeroMQ drop the connection before buffering it
            # (the I/O thread sets the same on each peer's SUB socket).
            pull.setsockopt(zmq.MAXMSGSIZE, max_frame)
            pull.setsockopt(zmq.RCVHWM, RCVHWM)
            pull_port = _bind(pull, bind_host, pull_port)
            pub_port = _bind(pub, bind_host, pub_port)
        except BaseException:
            for s in socks:
                s.close(0)
            if auth is not None:
                auth.stop()
            ctx.term()
            raise
        # Owner: the thread that made the listener, until adopt() hands everything over
        # (a thread start is the memory barrier ZeroMQ asks for when a socket migrates).
        self.ctx = ctx
        self.pull = pull
        self.pub = pub
        self.auth = auth
        self.ports = (pull_port, pub_port)
        self.endpoints: dict[str, str] = {
            "pull": f"tcp://{advertise}:{pull_port}",
            "pub": f"tcp://{advertise}:{pub_port}",
        }
        if credentials is not None:
            self.endpoints["key"] = credentials.public_key
        self._lock = threading.Lock()
        self._state = "bound"  # -> "adopted" | "closed"

    def adopt(self) -> None:
        """Mark the sockets as taken by a transport (which now closes them). Once only.

        Raises ``TransportClosed`` if the listener was closed or adopted before.
        """
        with self._lock:
            if self._state != "bound":
                raise TransportClosed(f"listener already {self._state}")
            self._state = "adopted"

    def close(self) -> None:
        """Unbind and release everything, unless a transport adopted it. Idempotent."""
        with self._lock:
            if self._state != "bound":
                return
            self._state = "closed"
        self.pull.close(0)
        self.pub.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
