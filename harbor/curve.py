"""CURVE on harbor sockets, through pyzmq's own ``zmq.auth`` ZAP handler.

One :class:`ZapAuthenticator` per ZeroMQ context answers the ZAP requests of
every CURVE server socket of that context (bound PULL and PUB). It admits a
client whose public key is in the allow-list with an admitted identity, and
makes the connection's ZAP ``User-Id`` the identity owning the key:
``"<node id>"``, ``"cluster"`` or ``"operator"``. Every frame received on such
a connection carries that ``User-Id`` (``frame.get("User-Id")`` on a
``copy=False`` receive), so the receiver checks the node id a frame claims
against the key that authenticated it.

Sockets use ``ZAP_ENFORCE_DOMAIN``: if the ZAP handler is missing, libzmq
refuses the handshake instead of letting every client in.

Example (a console socket could reuse it)::

    auth = ZapAuthenticator(ctx, creds, domain="skymesh-console", admit={OPERATOR})
    auth.start()
    curve_server(router, creds, "skymesh-console")
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from harbor.keys import CLUSTER, Credentials, Identity

__all__ = ["HARBOR_DOMAIN", "ZapAuthenticator", "curve_client", "curve_server"]

HARBOR_DOMAIN: Final = "skymesh-harbor"


class ZapAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread with a swappable allow-list and identities as User-Id.

    ``admit``: the identities let in -- for harbor, node keys and the cluster
    key (``"nodes"`` stands for every int identity); the operator key is for
    the console, never for harbor frames. ``denied``/``admitted`` count
    handshakes (written by the ZAP thread only; read anywhere).
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        credentials: Credentials,
        *,
        domain: str = HARBOR_DOMAIN,
        admit: Collection[str] = ("nodes", CLUSTER),
    ) -> None:
        super().__init__(ctx)
        self.domain = domain
        self._admit = frozenset(admit)
        # Owner: update() replaces the whole dict (one reference store, atomic); the ZAP
        # thread only reads it. z85 public key (bytes) -> identity.
        self._keys: dict[bytes, Identity] = {}
        self.denied = 0
        self.admitted = 0
        self.update(credentials)

    def start(self) -> None:
        """Start the ZAP thread and register this authenticator's domain."""
        super().start()
        self.configure_curve_callback(self.domain, self)

    def update(self, credentials: Credentials) -> None:
        """Use the allow-list of ``credentials`` for handshakes from now on. Thread-safe."""
        self._keys = {
            key.encode("ascii"): who
            for key, who in credentials.allowed.items()
            if (isinstance(who, int) and "nodes" in self._admit) or who in self._admit
        }

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP credentials check (called by pyzmq in the ZAP thread): allow-listed, admitted."""
        ok = domain == self.domain and key in self._keys
        if ok:
            self.admitted += 1
        else:
            self.denied += 1
        return ok

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The User-Id of an admitted key: its identity (only called after ``callback``)."""
        who = self._keys.get(z85.encode(client_public_key))
        return str(who)


def curve_server(sock: zmq.Socket[Any], credentials: Credentials, domain: str) -> None:
    """Make ``sock`` a CURVE server authenticated by the ZAP handler of ``domain``."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, credentials.secret_key.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, credentials.public_key.encode("ascii"))
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode("ascii"))
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def curve_client(sock: zmq.Socket[Any], credentials: Credentials, server_key: str) -> None:
    """Make ``sock``'s next ``connect`` a CURVE client of the server holding ``server_key``.

    The options are copied at ``connect``: one SUB socket may connect to
    several servers, setting the server key before each.
    """
    sock.setsockopt(zmq.CURVE_SERVER, 0)
    sock.setsockopt(zmq.CURVE_SECRETKEY, credentials.secret_key.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, credentials.public_key.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
