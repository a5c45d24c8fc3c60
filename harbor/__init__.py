"""harbor: the node-to-node transport of skymesh (ZeroMQ), its wire format and errors.

``harbor`` never imports ``node`` or ``coord``; the node uses it through
:class:`Transport`. See ``transport.py`` for the contract, ``wire.py`` for the
format and ``errors.py`` for the error tree.
"""

from harbor.errors import (
    FrameError,
    HarborError,
    PayloadError,
    PeerDown,
    PeerUnknown,
    TransportClosed,
    TransportError,
)
from harbor.inproc import InprocHub, InprocTransport
from harbor.transport import DEFAULT_MAX_FRAME, PeerInfo, Transport
from harbor.zmq_transport import ZmqTransport

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FrameError",
    "HarborError",
    "InprocHub",
    "InprocTransport",
    "PayloadError",
    "PeerDown",
    "PeerInfo",
    "PeerUnknown",
    "Transport",
    "TransportClosed",
    "TransportError",
    "ZmqTransport",
]
