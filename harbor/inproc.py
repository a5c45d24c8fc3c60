"""An in-process transport for unit tests of the node: no sockets, same semantics.

Transports attached to one :class:`InprocHub` reach each other by node id.
Messages go through the real wire encoding (so payloads come back exactly as
over ZeroMQ: tuples as lists), the same header checks (nonmember, stale
incarnation) and the same ``wire_policy``; there is no CURVE. Each
transport delivers on its own thread, like the ZeroMQ one. There are no
heartbeats: :meth:`InprocHub.kill` stands in for a crash.

Example::

    hub = InprocHub()
    a = InprocTransport(1, 11, deliver_a, pub_a, down_a, hub=hub)
    b = InprocTransport(2, 22, deliver_b, pub_b, down_b, hub=hub)
    a.start(); b.start()
    a.set_peers({2: PeerInfo(22, **b.endpoints)}); b.set_peers({1: PeerInfo(11, **a.endpoints)})
    a.send(2, (dest, source, 0, 0, "hi"))
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from harbor._droplog import DropLog
from harbor.errors import FrameError, PayloadError, PeerDown, PeerUnknown, TransportClosed
from harbor.transport import (
    DEFAULT_MAX_FRAME,
    DeliverFn,
    DeliverPubFn,
    LogFn,
    PeerDownFn,
    PeerInfo,
)
from harbor.transport import Transport as _Transport
from harbor.wire import (
    FRAME_OVERHEAD,
    WirePolicy,
    channel_topic,
    check_header,
    decode_frame,
    decode_publication,
    encode_message,
    encode_publication,
    join_frame,
)

__all__ = ["InprocHub", "InprocTransport"]


class InprocHub:
    """The "network" shared by in-process transports, keyed by node id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[int, InprocTransport] = {}  # Owner: any thread, under _lock.

    def _attach(self, t: InprocTransport) -> None:
        with self._lock:
            self._nodes[t.node_id] = t

    def _detach(self, t: InprocTransport) -> None:
        with self._lock:
            if self._nodes.get(t.node_id) is t:
                del self._nodes[t.node_id]

    def _get(self, node_id: int) -> InprocTransport | None:
        with self._lock:
            return self._nodes.get(node_id)

    def _all(self) -> list[InprocTransport]:
        with self._lock:
            return list(self._nodes.values())

    def kill(self, node_id: int) -> None:
        """Crash ``node_id``: stop it; every transport that has it as a peer reports it down."""
        victim = self._get(node_id)
        if victim is None:
            return
        victim.stop()
        for t in self._all():
            t._inbox.put(("down", node_id, victim.incarnation))


class InprocTransport(_Transport):
    """A :class:`harbor.transport.Transport` over an :class:`InprocHub`; see the module docs."""

    def __init__(
        self,
        node_id: int,
        incarnation: int,
        deliver: DeliverFn,
        deliver_pub: DeliverPubFn,
        on_peer_down: PeerDownFn,
        *,
        hub: InprocHub,
        max_frame: int = DEFAULT_MAX_FRAME,
        log: LogFn | None = None,
        wire_policy: WirePolicy | None = None,
    ) -> None:
        super().__init__(node_id, incarnation, deliver, deliver_pub, on_peer_down)
        self._hub = hub
        self._policy = wire_policy
        self._max_frame = max_frame
        self._drops = DropLog(log or (lambda _s: None), f"harbor-inproc[{node_id}]")
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._members: dict[int, int] = {}  # Owner: set_peers (copy-on-write); read anywhere.
        self._peers: dict[int, PeerInfo] = {}  # Owner: the delivery thread.
        # Owner: the delivery thread adds; send() only tests membership (GIL-atomic).
        self._down: set[tuple[int, int]] = set()
        self._topics: set[bytes] = set()  # Owner: the delivery thread.
        self._state = "new"  # Owner: start/stop. "new" -> "running" -> "stopped".
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Attach to the hub and start the delivery thread. Raises ``TransportClosed`` if reused."""
        if self._state != "new":
            raise TransportClosed("a transport starts once")
        self._state = "running"
        self._hub._attach(self)
        self._thread = threading.Thread(
            target=self._run, name=f"skymesh-harbor-inproc-{self.node_id}"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Detach and join the delivery thread. Idempotent."""
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopped"
        self._hub._detach(self)
        self._inbox.put(("stop",))
        if self._thread is not threading.current_thread():
            assert self._thread is not None
            self._thread.join()

    @property
    def endpoints(self) -> dict[str, str]:
        """Pseudo endpoints naming this node (for membership records)."""
        base = f"inproc://harbor/{self.node_id}/{self.incarnation}"
        return {"pull": base + "/pull", "pub": base + "/pub"}

    def set_peers(self, peers: dict[int, PeerInfo]) -> None:
        """Replace the peer set (see :meth:`Transport.set_peers`)."""
        peers = {n: p for n, p in peers.items() if n != self.node_id}
        self._members = {n: p.incarnation for n, p in peers.items()}
        self._inbox.put(("peers", peers))

    def send(
        self, node_id: int, msg: tuple[int, int, int, int, Any], incarnation: int = 0,
        batch: bool = False,
    ) -> None:
        """Deliver ``msg`` to ``node_id`` through its thread (see :meth:`Transport.send`)."""
        if self._state == "stopped":
            raise TransportClosed("transport stopped")
        inc = self._members.get(node_id)
        if inc is None:
            raise PeerUnknown(node_id)
        if (node_id, inc) in self._down:
            raise PeerDown(node_id)
        data = encode_message(msg)
        if len(data) + FRAME_OVERHEAD > self._max_frame:
            raise PayloadError("oversize", f"{len(data)} bytes")
        target = self._hub._get(node_id)
        if target is None:
            self._drops.drop("peer-left", node_id, "not on the hub")
            return
        frame = join_frame(self.node_id, self.incarnation, node_id, incarnation, [data])
        self._drops.counts["msgs_out"] += 1
        self._drops.counts["frames_out"] += 1
        target._inbox.put(("frame", frame))

    def publish(self, channel: str, source: int, payload: Any) -> None:
        """Offer a publication to every other transport on the hub."""
        if self._state == "stopped":
            raise TransportClosed("transport stopped")
        topic = channel_topic(channel)
        body = encode_publication(self.node_id, self.incarnation, source, payload)
        self._drops.counts["pubs_out"] += 1
        for t in self._hub._all():
            if t is not self:
                t._inbox.put(("pub", topic, body))

    def subscribe(self, channel: str) -> None:
        """Receive ``channel`` from peers. Idempotent."""
        self._inbox.put(("sub", channel_topic(channel)))

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``. Idempotent."""
        self._inbox.put(("unsub", channel_topic(channel)))

    def stats(self) -> dict[str, int]:
        """Same counter names as the ZeroMQ transport."""
        counts = dict(self._drops.counts)
        counts["peers"] = len(self._members)
        return counts

    def _report(self, node_id: int, inc: int, reason: str) -> None:
        if (node_id, inc) in self._down:
            return
        self._down.add((node_id, inc))
        self._drops.counts["peers_down"] += 1
        self._on_peer_down(node_id, inc, reason)

    def _run(self) -> None:
        while True:
            item = self._inbox.get()
            op = item[0]
            if op == "stop":
                return
            try:
                self._handle(op, item)
            except FrameError as exc:
                self._drops.drop(exc.reason, 0, exc.detail)
            except Exception as exc:
                self._drops.drop("callback", 0, repr(exc))

    def _handle(self, op: str, item: tuple[Any, ...]) -> None:
        if op == "frame":
            frame = decode_frame(item[1], self._max_frame, self._policy)
            members = {n: p.incarnation for n, p in self._peers.items()}
            check_header(frame, self.node_id, self.incarnation, members)
            self._drops.counts["frames_in"] += 1
            self._drops.counts["msgs_in"] += len(frame.messages)
            self._deliver(frame.src_node, frame.src_incarnation, frame.messages)
        elif op == "pub":
            pub = decode_publication(item[1], item[2], self._max_frame)
            peer = self._peers.get(pub.src_node)
            if item[1] in self._topics and peer and peer.incarnation == pub.src_incarnation:
                self._drops.counts["pubs_in"] += 1
                self._deliver_pub(pub.channel, pub.src_node, pub.source, pub.payload)
        elif op == "peers":
            new: dict[int, PeerInfo] = item[1]
            for n, p in self._peers.items():
                if n not in new:
                    self._report(n, p.incarnation, "left")
                elif new[n].incarnation != p.incarnation:
                    self._report(n, p.incarnation, "replaced")
            self._peers = new
        elif op == "down":
            peer = self._peers.get(item[1])
            if peer is not None and peer.incarnation == item[2]:
                self._report(item[1], item[2], "disconnected")
        elif op == "sub":
            self._topics.add(item[1])
        elif op == "unsub":
            self._topics.discard(item[1])
