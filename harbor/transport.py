"""The transport interface the node uses to reach other nodes.

Two implementations: :class:`harbor.zmq_transport.ZmqTransport` (ZeroMQ, the
real one) and :class:`harbor.inproc.InprocTransport` (several transports in
one process, for unit tests of the node).

Contract shared by both:

- ``send`` never blocks and keeps order per (this node -> that node).
  Delivery is at-most-once. ``send`` to a node id outside the peer set raises
  ``PeerUnknown`` synchronously; the node turns it into ``NodeDown``.
- Callbacks (``deliver``, ``deliver_pub``, ``on_peer_down``) run on the
  transport's own thread -- except ``deliver`` of the ZeroMQ transport when
  the node chose ``idle_wait()``: then it may run on the idle worker that
  received the frame. ``deliver`` calls never overlap each other. Callbacks
  must not block and must not call ``stop()``; they may call
  ``send``/``publish``.
- ``publish`` reaches subscribers on *other* nodes only: delivering to local
  subscribers is the node's job.
- ``on_peer_down(node_id, incarnation, reason)`` is called at most once per
  (node, incarnation); reasons: "left" (removed from the peer set),
  "replaced" (a new incarnation appeared), "disconnected" (its connection
  dropped or timed out after it had connected: the peer died, froze or was
  cut off), "unreachable" (a connection to it never completed). From then on
  ``send`` to that incarnation raises ``PeerDown`` and its queued messages
  are dropped, until membership removes it or gives it a new incarnation, or
  it connects again with the same incarnation (a healed partition: it is
  alive again, counted in ``peers_revived``; what failed meanwhile stays
  failed). A peer this node neither sends to nor subscribes to is not
  watched by the transport at all: membership says when it leaves.
- ``max_frame`` is a cluster-wide setting: a sender packs frames up to its
  own limit and a receiver drops frames over its own.

Example::

    t = ZmqTransport(1, incarnation, deliver, deliver_pub, on_peer_down)
    t.start()
    coord.advertise(t.endpoints)            # {"pull": "tcp://...", "pub": "tcp://..."}
    t.set_peers({2: PeerInfo(inc2, pull2, pub2)})
    t.send(2, (dest, source, session, kind, payload))
    t.stop()
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_MAX_FRAME",
    "DeliverFn",
    "DeliverPubFn",
    "LogFn",
    "PeerDownFn",
    "PeerInfo",
    "Transport",
]

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
DEFAULT_MAX_BACKLOG: Final = 64 * 1024 * 1024

DeliverFn = Callable[[int, int, list[tuple[int, int, int, int, Any]]], None]
"""``deliver(src_node, src_incarnation, messages)``; a message is
``(dest, source, session, kind, payload)``."""
DeliverPubFn = Callable[[str, int, int, Any], None]
"""``deliver_pub(channel, src_node, source_handle, payload)``."""
PeerDownFn = Callable[[int, int, str], None]
"""``on_peer_down(node_id, incarnation, reason)``."""
LogFn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What membership says about a peer: its incarnation, advertised endpoints and CURVE key.

    ``key`` is the z85 public key the peer advertises (``endpoints["key"]``);
    ignored without credentials. With credentials it must be the allow-listed
    key of that node id (or the cluster key); "" means "the allow-listed one".
    """

    incarnation: int
    pull: str
    pub: str
    key: str = ""


class Transport(abc.ABC):
    """Node-to-node transport: messages by node id, channels by name. See the module docstring."""

    def __init__(
        self,
        node_id: int,
        incarnation: int,
        deliver: DeliverFn,
        deliver_pub: DeliverPubFn,
        on_peer_down: PeerDownFn,
    ) -> None:
        if not 1 <= node_id < 2**31:
            raise ValueError(f"node id {node_id} out of range 1..2**31-1")
        if incarnation <= 0:
            raise ValueError("incarnation must be positive (0 means 'any' on the wire)")
        self.node_id = node_id
        self.incarnation = incarnation
        self._deliver = deliver
        self._deliver_pub = deliver_pub
        self._on_peer_down = on_peer_down

    @abc.abstractmethod
    def start(self) -> None:
        """Bind, start the transport's thread. Raises ``TransportError`` if binding fails."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the thread and release every socket. Idempotent; queued messages are dropped."""

    @property
    @abc.abstractmethod
    def endpoints(self) -> dict[str, str]:
        """``{"pull": ..., "pub": ...}`` to advertise in membership (valid after ``start``)."""

    @abc.abstractmethod
    def set_peers(self, peers: dict[int, PeerInfo]) -> None:
        """Replace the peer set (this node excluded). Thread-safe, never blocks.

        Removed peers are disconnected and reported down ("left"); a peer
        with a new incarnation is reported down ("replaced") and reconnected.
        """

    @abc.abstractmethod
    def send(
        self, node_id: int, msg: tuple[int, int, int, int, Any], incarnation: int = 0,
        batch: bool = False,
    ) -> None:
        """Queue ``msg`` for ``node_id``. Thread-safe, never blocks.

        ``incarnation`` != 0 pins the destination incarnation (replies).
        ``batch``: the caller has more work queued, so more messages follow soon:
        a hint to pack this one with them rather than send it at once.
        Raises ``PeerUnknown`` (``PeerDown`` if reported down),
        ``PayloadError`` or ``TransportClosed``.
        """

    @abc.abstractmethod
    def publish(self, channel: str, source: int, payload: Any) -> None:
        """Publish to subscribers of ``channel`` on every other node. Thread-safe.

        Raises ``ValueError`` (bad channel name), ``PayloadError`` or ``TransportClosed``.
        """

    @abc.abstractmethod
    def subscribe(self, channel: str) -> None:
        """Receive ``channel`` from every peer. Idempotent. Raises ``ValueError``."""

    @abc.abstractmethod
    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``. Idempotent. Raises ``ValueError``."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters: frames/msgs in and out, drops by reason (``drop_<reason>``), peers, ..."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
