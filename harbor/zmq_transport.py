"""ZeroMQ implementation of :class:`harbor.transport.Transport`.

Sockets: a bound PULL (actor frames in), a bound PUB (channels and heartbeats
out), a PUSH per peer this node sends to, one SUB connected to every peer's
PUB, and an inproc PAIR to wake the I/O thread. All belong to one harbor I/O
thread (:mod:`harbor._ioloop`) once ``start()`` returns.

Failure detection: every transport publishes a heartbeat every
``heartbeat_interval`` (0.2 s); a peer not heard for ``peer_timeout`` (1 s;
``join_grace`` more for a peer never heard yet) is reported "silent". The
socket monitors on SUB and on every PUSH report a peer whose TCP connection
dropped after it had connected as "disconnected" -- a killed process is seen
within milliseconds.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import zmq

from harbor._droplog import DropLog
from harbor._ioloop import IoLoop
from harbor._shared import Shared
from harbor.errors import PayloadError, PeerDown, PeerUnknown, TransportClosed, TransportError
from harbor.transport import (
    DEFAULT_MAX_FRAME,
    DeliverFn,
    DeliverPubFn,
    LogFn,
    PeerDownFn,
    PeerInfo,
    Transport,
)
from harbor.wire import FRAME_OVERHEAD, HEARTBEAT_TOPIC, channel_topic, encode_message
from harbor.wire import encode_publication as _encode_publication

__all__ = ["ZmqTransport"]

_logger = logging.getLogger("harbor")


def _bind(sock: zmq.Socket[bytes], host: str, port: int) -> int:
    """Bind ``sock`` on ``host:port`` (port 0: the OS picks) and return the port."""
    try:
        sock.bind(f"tcp://{host}:{port or '*'}")
    except zmq.ZMQError as exc:
        raise TransportError(f"cannot bind tcp://{host}:{port}: {exc}") from None
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    return int(endpoint.rsplit(b":", 1)[1])


class ZmqTransport(Transport):
    """Node-to-node transport over ZeroMQ TCP; see :mod:`harbor.transport` for the contract.

    Example::

        t = ZmqTransport(1, 1001, deliver, deliver_pub, on_peer_down)
        t.start()
        t.set_peers({2: PeerInfo(2002, "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002")})
        t.send(2, (dest_handle, source_handle, 0, SEND, ("ping", [])))
        t.stop()

    Raises ``ValueError`` for a node id or incarnation out of range, or a
    wildcard ``bind_host`` without ``advertise_host``.
    """

    def __init__(
        self,
        node_id: int,
        incarnation: int,
        deliver: DeliverFn,
        deliver_pub: DeliverPubFn,
        on_peer_down: PeerDownFn,
        *,
        bind_host: str = "127.0.0.1",
        advertise_host: str | None = None,
        pull_port: int = 0,
        pub_port: int = 0,
        max_frame: int = DEFAULT_MAX_FRAME,
        log: LogFn | None = None,
        heartbeat_interval: float = 0.2,
        peer_timeout: float = 1.0,
        join_grace: float = 2.0,
    ) -> None:
        super().__init__(node_id, incarnation, deliver, deliver_pub, on_peer_down)
        if advertise_host is None and bind_host in ("0.0.0.0", "*", "::"):
            raise ValueError("a wildcard bind_host needs an advertise_host")
        self._bind_host = bind_host
        self._advertise = advertise_host or bind_host
        self._ports = (pull_port, pub_port)
        self._max_frame = max_frame
        self._timing = (heartbeat_interval, peer_timeout, join_grace)
        self._drops = DropLog(log or _logger.warning, f"harbor[{node_id}]")
        self._shared = Shared()
        # Owner: set_peers (any thread) replaces the whole dict; send reads it. Copy-on-write,
        # so a reader sees one consistent peer set. node id -> incarnation.
        self._members: dict[int, int] = {}
        # Owner: start/stop, serialized by _life_lock. "new" -> "running" -> "stopped".
        self._life_lock = threading.Lock()
        self._state = "new"
        self._thread: threading.Thread | None = None
        self._endpoints: dict[str, str] = {}

    def start(self) -> None:
        """Bind PULL and PUB and start the I/O thread.

        Raises ``TransportError`` if a bind fails, ``TransportClosed`` if
        started before.
        """
        with self._life_lock:
            if self._state != "new":
                raise TransportClosed("a transport starts once")
            ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            socks: list[zmq.Socket[bytes]] = []
            try:
                pull, pub, sub = (ctx.socket(t) for t in (zmq.PULL, zmq.PUB, zmq.SUB))
                wake_rx, wake_tx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
                socks = [pull, pub, sub, wake_rx, wake_tx]
                for s in socks:
                    s.setsockopt(zmq.LINGER, 0)
                sub.setsockopt(zmq.RECONNECT_IVL, 100)
                sub.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
                pull_port = _bind(pull, self._bind_host, self._ports[0])
                pub_port = _bind(pub, self._bind_host, self._ports[1])
                wake_addr = f"inproc://harbor-wake-{id(self)}"
                wake_rx.bind(wake_addr)
                wake_tx.connect(wake_addr)
            except BaseException:
                for s in socks:
                    s.close(0)
                ctx.term()
                raise
            self._endpoints = {
                "pull": f"tcp://{self._advertise}:{pull_port}",
                "pub": f"tcp://{self._advertise}:{pub_port}",
            }
            self._shared.wake_tx = wake_tx
            loop = IoLoop(
                self._shared,
                node_id=self.node_id,
                incarnation=self.incarnation,
                ctx=ctx,
                sockets=(pull, pub, sub, wake_rx),
                callbacks=(self._deliver, self._deliver_pub, self._on_peer_down),
                droplog=self._drops,
                max_frame=self._max_frame,
                timing=self._timing,
            )
            self._thread = threading.Thread(
                target=loop.run, name=f"skymesh-harbor-{self.node_id}", daemon=True
            )
            self._thread.start()
            self._state = "running"

    def stop(self) -> None:
        """Stop the I/O thread and join it; sockets close with linger 0. Idempotent.

        Messages still queued are dropped (at-most-once). Called from a
        callback (the I/O thread itself) it only asks the thread to stop.
        """
        with self._life_lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._state = "stopped"
            self._shared.stopping = True
            self._shared.idle = True  # force the wake-up through
            self._shared.wake()
            thread = self._thread
        assert thread is not None
        if thread is not threading.current_thread():
            thread.join()

    @property
    def endpoints(self) -> dict[str, str]:
        """``{"pull": "tcp://host:port", "pub": "tcp://host:port"}``; empty before ``start``."""
        return dict(self._endpoints)

    def set_peers(self, peers: dict[int, PeerInfo]) -> None:
        """Replace the peer set; see :meth:`Transport.set_peers`. Thread-safe, never blocks."""
        peers = {n: p for n, p in peers.items() if n != self.node_id}
        # The command is queued before the members are published: the I/O thread relies
        # on it (a queued message's peer is always applied before the message is flushed).
        self._shared.ctl.append(("peers", peers))
        self._members = {n: p.incarnation for n, p in peers.items()}
        self._shared.wake()

    def send(self, node_id: int, msg: tuple[int, int, int, int, Any], incarnation: int = 0) -> None:
        """Queue ``msg`` for ``node_id``; see :meth:`Transport.send`.

        The message is encoded here, in the caller's thread, so a bad payload
        raises ``PayloadError`` at once. Raises ``PeerUnknown`` if
        ``node_id`` is not a peer, ``PeerDown`` (a ``PeerUnknown``) if it was
        reported down, ``TransportClosed`` after ``stop()``.
        """
        if self._state == "stopped":
            raise TransportClosed("transport stopped")
        inc = self._members.get(node_id)
        if inc is None:
            raise PeerUnknown(node_id)
        if (node_id, inc) in self._shared.down:
            raise PeerDown(node_id)
        data = encode_message(msg)
        if len(data) + FRAME_OVERHEAD > self._max_frame:
            raise PayloadError("oversize", f"{len(data)} bytes > max_frame {self._max_frame}")
        self._shared.out.append((node_id, incarnation, data))
        if self._shared.idle:
            self._shared.wake()

    def publish(self, channel: str, source: int, payload: Any) -> None:
        """Publish to subscribers on other nodes; see :meth:`Transport.publish`."""
        if self._state == "stopped":
            raise TransportClosed("transport stopped")
        topic = channel_topic(channel)
        body = _encode_publication(self.node_id, self.incarnation, source, payload)
        if len(body) + len(topic) > self._max_frame:
            raise PayloadError("oversize", f"{len(body)} bytes > max_frame {self._max_frame}")
        self._shared.ctl.append(("pub", topic, body))
        self._shared.wake()

    def subscribe(self, channel: str) -> None:
        """Receive ``channel`` from every peer's PUB; see :meth:`Transport.subscribe`."""
        self._shared.ctl.append(("sub", channel_topic(channel)))
        self._shared.wake()

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``; see :meth:`Transport.unsubscribe`."""
        self._shared.ctl.append(("unsub", channel_topic(channel)))
        self._shared.wake()

    def stats(self) -> dict[str, int]:
        """Counters (see the report); ``queued`` is messages not yet packed into frames."""
        counts = dict(self._drops.counts)
        counts["queued"] = len(self._shared.out)
        return counts
