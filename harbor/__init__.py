"""harbor: the node-to-node transport of skymesh (ZeroMQ), its wire format and errors.

``harbor`` never imports ``node`` or ``coord``; the node uses it through
:class:`Transport`. See ``transport.py`` for the contract, ``wire.py`` for the
format, ``errors.py`` for the error tree, ``keys.py`` for cluster credentials
(``harbor.keys.generate``/``load``) and ``curve.py`` for CURVE and ZAP.
"""

from harbor.errors import (
    BacklogFull,
    CredentialsError,
    FrameError,
    HarborError,
    PayloadError,
    PeerDown,
    PeerUnknown,
    PeerUntrusted,
    TransportClosed,
    TransportError,
)
from harbor.inproc import InprocHub, InprocTransport
from harbor.keys import Credentials
from harbor.listener import Listener
from harbor.transport import DEFAULT_MAX_BACKLOG, DEFAULT_MAX_FRAME, PeerInfo, Transport
from harbor.wire import WirePolicy
from harbor.zmq_transport import ZmqTransport

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_MAX_FRAME",
    "BacklogFull",
    "Credentials",
    "CredentialsError",
    "FrameError",
    "HarborError",
    "InprocHub",
    "InprocTransport",
    "Listener",
    "PayloadError",
    "PeerDown",
    "PeerInfo",
    "PeerUnknown",
    "PeerUntrusted",
    "Transport",
    "TransportClosed",
    "TransportError",
    "WirePolicy",
    "ZmqTransport",
]
