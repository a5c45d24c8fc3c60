"""ZeroMQ implementation of :class:`harbor.transport.Transport`.

Sockets: a bound PULL (actor frames in; bound before the node advertises it,
:mod:`harbor.listener`), a bound PUB (channels out), a PUSH per peer this
node sends to, a SUB per peer while this node subscribes to a channel, and inproc
PAIRs for wake-ups. The harbor I/O thread (:mod:`harbor._ioloop`) owns PUB,
SUB and the monitors; each PUSH is used under its peer's lock by the I/O
thread or by a caller sending a quiet peer's message itself (no hand-off);
PULL is read under its lock by the I/O thread or, with :meth:`idle_wait`, by
the node's idle worker, which runs what it receives (:mod:`harbor._inbound`).
No ZeroMQ socket is ever used by two threads at once.

Failure detection (issue 15): no heartbeat crosses Python. Each PUSH socket
carries ZMTP heartbeats (``ZMQ_HEARTBEAT_IVL/TIMEOUT``) that libzmq's own
I/O thread sends and answers, so a peer this node talks to is reported
"disconnected" at most ``peer_timeout`` (1 s) after it died, froze or was cut
off -- a killed process within milliseconds, as its TCP connection drops --
while a live peer whose Python threads are starved by load still answers.
A PUSH that never connects is reported "unreachable" after ``join_grace +
peer_timeout``. Peers this node does not talk to cost nothing: membership
(their ZooKeeper session) says when they leave. An idle cluster sends
nothing at all.

Trust (with ``credentials``): every TCP socket speaks CURVE. PULL and PUB are
CURVE servers whose handshakes a ZAP handler (:mod:`harbor.curve`) answers
from the allow-list; PUSH and SUB are CURVE clients that only connect to a
peer whose advertised key is the allow-listed key of that node id. Each
inbound frame's ZAP ``User-Id`` must be the node id its header claims (or the
shared cluster key) and still be allowed. Without credentials the transport
is open to anyone who reaches its ports (loopback development).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from time import perf_counter
from typing import Any, Final

import zmq

from harbor._droplog import DropLog
from harbor._inbound import Inbound
from harbor._ioloop import IoLoop
from harbor._shared import ZMQ_NOBLOCK, Peer, Shared
from harbor.curve import ZapAuthenticator
from harbor.errors import (
    BacklogFull,
    PayloadError,
    PeerDown,
    PeerUnknown,
    PeerUntrusted,
    TransportClosed,
)
from harbor.keys import CLUSTER, Credentials
from harbor.listener import Listener
from harbor.transport import (
    DEFAULT_MAX_BACKLOG,
    DEFAULT_MAX_FRAME,
    DeliverFn,
    DeliverPubFn,
    LogFn,
    PeerDownFn,
    PeerInfo,
    Transport,
)
from harbor.wire import (
    FRAME_OVERHEAD,
    WirePolicy,
    channel_topic,
    encode_message,
    join_frame,
)
from harbor.wire import encode_publication as _encode_publication

__all__ = ["IdleWaiter", "ZmqTransport"]

_logger = logging.getLogger("harbor")
# A message goes out at once, in the caller's thread (no hand-off), only when the link
# is quiet: nothing queued for that peer, the caller has no more work queued (``batch``
# False) and no message went to that peer within STREAM_GAP seconds -- a call, a reply,
# a ping-pong. Otherwise it is queued for the I/O thread, which packs a run of messages
# into one frame per peer per turn (the receiver, and CURVE, pay per frame).
STREAM_GAP: Final = 200e-6


def _pair(
    ctx: zmq.Context[zmq.Socket[bytes]], addr: str
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    """An inproc PAIR (receiver, sender) for wake-ups."""
    rx, tx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    for s in (rx, tx):
        s.setsockopt(zmq.LINGER, 0)
    rx.bind(addr)
    tx.connect(addr)
    return rx, tx


class IdleWaiter:
    """An idle worker's wait on the harbor (``node.core.scheduler.IdleWait``).

    ``wait`` returns False (the worker waits its own way) before the transport
    starts, after it stops, or while another thread reads PULL.
    """

    def __init__(self) -> None:
        self.inbound: Inbound | None = None  # Owner: ZmqTransport.start (set once)

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s on PULL; deliver what arrives in this thread."""
        inbound = self.inbound
        return inbound is not None and inbound.wait(timeout)

    def wake(self) -> None:
        """End a wait in progress (or make the next one return at once)."""
        inbound = self.inbound
        if inbound is not None:
            inbound.wake()


class ZmqTransport(Transport):
    """Node-to-node transport over ZeroMQ TCP; see :mod:`harbor.transport` for the contract.

    Example::

        t = ZmqTransport(1, 1001, deliver, deliver_pub, on_peer_down)
        t.start()
        t.set_peers({2: PeerInfo(2002, "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002")})
        t.send(2, (dest_handle, source_handle, 0, SEND, ("ping", [])))
        t.stop()

    With ``credentials`` (:func:`harbor.keys.load`) every socket speaks CURVE
    and only allow-listed nodes get in (module docstring); ``wire_policy``
    drops frames carrying messages it does not admit; ``max_backlog`` bounds
    the bytes queued per peer (``send`` raises ``BacklogFull`` beyond);
    ``in_use(node_id)`` says whether the node still needs a peer's liveness
    though it sent it nothing for a while (a call pending on it, a monitor):
    a PUSH socket idle for 30 s to a peer not in use is closed.

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
        peer_timeout: float = 1.0,
        join_grace: float = 2.0,
        credentials: Credentials | None = None,
        wire_policy: WirePolicy | None = None,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        listener: Listener | None = None,
        in_use: Callable[[int], bool] | None = None,
    ) -> None:
        super().__init__(node_id, incarnation, deliver, deliver_pub, on_peer_down)
        if advertise_host is None and bind_host in ("0.0.0.0", "*", "::"):
            raise ValueError("a wildcard bind_host needs an advertise_host")
        self._bind_host = bind_host
        self._advertise = advertise_host
        # Bound before the node advertised its endpoints (bind_host and ports are then
        # ignored: the listener's sockets are already bound).
        self._listener = listener
        self._ports = (pull_port, pub_port)
        self._max_frame = max_frame
        if peer_timeout <= 0:
            raise ValueError(f"peer_timeout must be > 0, got {peer_timeout}")
        self._timing = (peer_timeout, join_grace)
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
        self._policy = wire_policy
        self._max_backlog = max_backlog
        # Owner: __init__ and reload_credentials (under _life_lock); read anywhere.
        self._creds = credentials
        self._auth: ZapAuthenticator | None = None
        # Owner: set_peers, under _peers_lock. The last peer set given (for reloads) and
        # the node ids left out of it because their key is not allowed (copy-on-write).
        self._peers_lock = threading.Lock()
        self._given: dict[int, PeerInfo] = {}
        self._untrusted: frozenset[int] = frozenset()
        # Set by idle_wait() before start: the node's idle workers read PULL.
        self._waiter: IdleWaiter | None = None
        self._in_use = in_use

    def idle_wait(self) -> IdleWaiter:
        """Let the node's idle worker threads read this transport's PULL socket.

        Call before :meth:`start`. The returned object's ``wait(timeout)`` blocks
        an idle worker on PULL (and its own wake-up) and delivers what arrives in
        that worker's thread, so the thread that receives a message runs it; its
        ``wake()`` ends such a wait. The I/O thread still reads PULL when no
        worker has for a while (all busy). Raises ``TransportClosed`` after start.
        """
        with self._life_lock:
            if self._state != "new":
                raise TransportClosed("idle_wait() is chosen before start()")
            if self._waiter is None:
                self._waiter = IdleWaiter()
            return self._waiter

    @property
    def peer_timeout(self) -> float:
        """Seconds after which a frozen or cut-off peer's connection is closed."""
        return self._timing[0]

    @property
    def public_key(self) -> str | None:
        """This node's z85 CURVE public key (advertised as ``endpoints["key"]``), or None."""
        return self._creds.public_key if self._creds is not None else None

    def start(self) -> None:
        """Adopt the listener's bound sockets (or bind now) and start the I/O thread.

        Raises ``TransportError`` if a bind fails, ``TransportClosed`` if
        started before (or the listener was closed or adopted elsewhere).
        """
        with self._life_lock:
            if self._state != "new":
                raise TransportClosed("a transport starts once")
            lst = self._listener or Listener(
                self._bind_host, advertise_host=self._advertise, pull_port=self._ports[0],
                pub_port=self._ports[1], max_frame=self._max_frame, credentials=self._creds,
            )
            lst.adopt()
            ctx, pull, pub, auth = lst.ctx, lst.pull, lst.pub, lst.auth
            wake_rx, wake_tx = _pair(ctx, f"inproc://harbor-wake-{id(self)}")
            # Idle workers are woken by a frame on PULL itself (harbor._inbound).
            pull.bind(f"inproc://harbor-idle-{id(self)}")
            idle_tx = ctx.socket(zmq.PUSH)
            idle_tx.setsockopt(zmq.LINGER, 0)
            idle_tx.connect(f"inproc://harbor-idle-{id(self)}")
            inbound = Inbound(
                pull, idle_tx,
                node_id=self.node_id, incarnation=self.incarnation, deliver=self._deliver,
                droplog=self._drops, max_frame=self._max_frame, policy=self._policy,
                join_grace=self._timing[1],
            )
            inbound.workers = self._waiter is not None
            inbound.poke = self._shared.wake
            self._auth = auth
            self._endpoints = dict(lst.endpoints)
            self._shared.wake_tx = wake_tx
            loop = IoLoop(
                self._shared,
                node_id=self.node_id,
                incarnation=self.incarnation,
                ctx=ctx,
                sockets=(pub, wake_rx),
                inbound=inbound,
                callbacks=(self._deliver_pub, self._on_peer_down),
                droplog=self._drops,
                max_frame=self._max_frame,
                timing=self._timing,
                credentials=self._creds,
                before_term=auth.stop if auth is not None else None,
                in_use=self._in_use,
            )
            self._thread = threading.Thread(
                target=loop.run, name=f"skymesh-harbor-{self.node_id}", daemon=True
            )
            if self._waiter is not None:
                self._waiter.inbound = inbound
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
                if self._listener is not None:
                    self._listener.close()  # bound but never adopted: unbind
                return
            self._state = "stopped"
            self._shared.stopping = True
            self._shared.idle = True  # force the wake-up through
            self._shared.wake()
            thread = self._thread
        assert thread is not None
        if thread is not threading.current_thread():
            thread.join()

    def reload_credentials(self, credentials: Credentials) -> None:
        """Use a new allow-list (e.g. ``creds.reload()`` after a key file was removed).

        From now on handshakes with removed keys fail, frames arriving on
        connections authenticated by a removed key are dropped ("revoked"),
        and peers whose key is no longer allowed are dropped from the peer set
        (reported down, "untrusted": this node's PUSH and SUB to them close).
        Not cut: a revoked node's open subscription to this node's PUB (ZeroMQ
        cannot drop one subscriber; binding PUB afresh would make every peer
        see this node disconnect). It keeps receiving publications until its
        connection drops. The node's own key pair must
        stay the same. Thread-safe, never blocks.
        """
        if self._creds is None:
            raise ValueError("a transport started without credentials cannot load them")
        if credentials.public_key != self._creds.public_key:
            raise ValueError("reload_credentials keeps this node's own key pair")
        with self._life_lock:
            self._creds = credentials
            if self._auth is not None:
                self._auth.update(credentials)
        self._shared.ctl.append(("creds", credentials))
        with self._peers_lock:
            given = self._given
        self.set_peers(given)

    @property
    def endpoints(self) -> dict[str, str]:
        """``{"pull": "tcp://host:port", "pub": "tcp://host:port"}``; empty before ``start``."""
        return dict(self._endpoints)

    def set_peers(self, peers: dict[int, PeerInfo]) -> None:
        """Replace the peer set; see :meth:`Transport.set_peers`. Thread-safe, never blocks."""
        peers = {n: p for n, p in peers.items() if n != self.node_id}
        with self._peers_lock:
            self._given = peers
            trusted, untrusted = self._vet(peers)
            # The command is queued before the members are published: the I/O thread relies
            # on it (a queued message's peer is always applied before the message is flushed).
            self._shared.ctl.append(("peers", trusted, untrusted))
            self._untrusted = frozenset(untrusted)
            self._members = {n: p.incarnation for n, p in trusted.items()}
        self._shared.wake()

    def _vet(self, peers: dict[int, PeerInfo]) -> tuple[dict[int, PeerInfo], dict[int, str]]:
        """Split ``peers`` into trusted ones (key filled in) and untrusted node id -> key."""
        creds = self._creds
        if creds is None:
            return peers, {}
        trusted: dict[int, PeerInfo] = {}
        untrusted: dict[int, str] = {}
        for n, p in peers.items():
            key = p.key or creds.key_of(n) or ""
            if creds.allowed.get(key) in (n, CLUSTER):
                trusted[n] = PeerInfo(p.incarnation, p.pull, p.pub, key)
            else:
                untrusted[n] = key
        return trusted, untrusted

    def send(
        self, node_id: int, msg: tuple[int, int, int, int, Any], incarnation: int = 0,
        batch: bool = False,
    ) -> None:
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
            if node_id in self._untrusted:
                raise PeerUntrusted(node_id)
            raise PeerUnknown(node_id)
        sh = self._shared
        if (node_id, inc) in sh.down:
            raise PeerDown(node_id)
        data = encode_message(msg)
        size = len(data)
        if size + FRAME_OVERHEAD > self._max_frame:
            raise PayloadError("oversize", f"{size} bytes > max_frame {self._max_frame}")
        peer = None if batch else sh.direct.get(node_id)
        if peer is not None and peer.info.incarnation == inc:
            now = perf_counter()
            quiet = now - peer.last_direct > STREAM_GAP
            peer.last_direct = now  # racy between callers: it only picks a path
            if quiet and self._send_direct(peer, incarnation, data):
                return
        with sh.pending_lock:
            queued = sh.pending.get(node_id, 0)
            if queued + size > self._max_backlog:
                sh.backlog_full += 1
                raise BacklogFull(node_id, self._max_backlog)
            sh.pending[node_id] = queued + size
            # Appended under the lock: the I/O thread releases bytes only for what it popped.
            sh.out.append((node_id, incarnation, data))
        if sh.idle:
            sh.wake()

    def _send_direct(self, peer: Peer, dst_inc: int, data: bytes) -> bool:
        """Send one message as its own frame on ``peer``'s PUSH socket, in this thread.

        Only when nothing is queued for the peer (its pending bytes are 0: no message
        of the I/O thread's queue or backlog can be overtaken, so order per node pair
        holds) and ZeroMQ takes the frame now. False: queue it instead.
        """
        with peer.lock:
            push = peer.push
            if push is None or self._shared.pending.get(peer.node_id, 0):
                return False
            frame = join_frame(self.node_id, self.incarnation, peer.node_id, dst_inc, [data])
            try:
                push.send(frame, ZMQ_NOBLOCK)
            except zmq.ZMQError:  # Again (not connected, or at its HWM) or closing
                return False
            peer.direct_frames += 1
            return True

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
        sh = self._shared
        direct = sh.direct_gone + sum(p.direct_frames for p in list(sh.direct.values()))
        counts["frames_out"] += direct  # one message per direct frame
        counts["msgs_out"] += direct
        counts["frames_out_direct"] = direct
        counts["queued"] = len(sh.out)
        counts["drop_backlog-full"] = self._shared.backlog_full
        if self._auth is not None:
            counts["auth_denied"] = self._auth.denied
            counts["auth_admitted"] = self._auth.admitted
        return counts
