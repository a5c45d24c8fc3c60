"""Errors raised by harbor. No ``zmq.*`` or ``msgpack.*`` exception leaves the package.

The tree::

    HarborError                 root: catch this to catch anything harbor raises
    ├── FrameError              an inbound frame was rejected (``reason`` says why)
    ├── PayloadError            an outgoing message was refused ("encode", "oversize")
    ├── PeerUnknown             ``send`` to a node id that is not in the peer set
    │   ├── PeerDown            ... or to a peer already reported down (this incarnation)
    │   └── PeerUntrusted       ... or to a peer whose advertised key is not allow-listed
    ├── BacklogFull             ``send`` to a peer whose send backlog is at its byte limit
    ├── CredentialsError        a keys directory is missing, unsafe or malformed
    ├── TransportClosed         ``send``/``publish`` after ``stop()``
    └── TransportError          sockets could not be set up (bind failed, bad endpoint)

Inbound ``FrameError`` never reaches a caller of the transport: the I/O thread
drops the frame, counts it under ``drop_<reason>`` in ``stats()`` and logs it
(throttled). It is raised by :func:`harbor.wire.decode_frame` and
:func:`harbor.wire.check_header` for code (and tests) that decode frames
themselves.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "FRAME_REASONS",
    "BacklogFull",
    "CredentialsError",
    "FrameError",
    "HarborError",
    "PayloadError",
    "PeerDown",
    "PeerUnknown",
    "PeerUntrusted",
    "TransportClosed",
    "TransportError",
]

FRAME_REASONS: Final = frozenset(
    {
        "decode",  # not msgpack, extra bytes, or not shaped like a frame
        "truncated",  # msgpack cut short (empty frame included)
        "oversize",  # longer than max_frame
        "version",  # a version this build does not speak
        "nonmember",  # sender (node id, incarnation) is not in the peer set
        "stale-incarnation",  # addressed to another incarnation of this node
        "misrouted",  # addressed to another node id
        "impostor",  # claims a node id other than the one its CURVE key belongs to
        "revoked",  # sent over a connection whose key was removed from the allow-list since
        "kind",  # carries a message kind (or event) the wire policy does not accept
    }
)


class HarborError(Exception):
    """Root of every error harbor raises."""


class FrameError(HarborError):
    """An inbound frame was rejected; ``reason`` is one of :data:`FRAME_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in FRAME_REASONS, reason
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class PayloadError(HarborError):
    """An outgoing message was refused before it was queued.

    ``reason`` is ``"encode"`` (the payload is not msgpack-able) or
    ``"oversize"`` (one message alone exceeds ``max_frame``).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class PeerUnknown(HarborError):
    """``send`` named a node id that is not in the peer set (the node turns it into NodeDown)."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        super().__init__(f"node {node_id} is not a known peer")


class PeerDown(PeerUnknown):
    """``send`` named a peer this transport already reported down through ``on_peer_down``.

    Refused until membership removes the peer or gives it a new incarnation.
    """

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.args = (f"node {node_id} is down",)


class PeerUntrusted(PeerUnknown):
    """The peer's advertised CURVE server key is not the allow-listed key of that node id.

    The peer is left out of the peer set (a rewritten membership entry cannot
    redirect traffic to an outsider) and counted under ``drop_untrusted-peer``.
    """

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.args = (f"node {node_id} advertises a key that is not allow-listed",)


class BacklogFull(HarborError):
    """``send`` found ``node_id``'s backlog (queued, not yet taken by ZeroMQ) at ``limit`` bytes.

    The message is not queued and counted under ``drop_backlog-full``; the node
    fails the call (or drops the SEND) as for an unreachable peer.
    """

    def __init__(self, node_id: int, limit: int) -> None:
        self.node_id = node_id
        self.limit = limit
        super().__init__(f"send backlog to node {node_id} is full ({limit} bytes)")


class CredentialsError(HarborError):
    """A keys directory is missing, has unsafe modes or holds a malformed key (one line)."""


class TransportClosed(HarborError):
    """The transport was stopped; it accepts no more messages."""


class TransportError(HarborError):
    """Sockets could not be set up: a bind failed or an endpoint is malformed."""
