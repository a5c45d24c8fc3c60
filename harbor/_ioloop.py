"""The harbor I/O thread: the only code that touches ZeroMQ sockets after ``start()``.

One turn: poll; apply control commands (peer set, subscriptions,
publications); read frames from PULL and publications/heartbeats from SUB;
read socket-monitor events; pack every queued outgoing message into one frame
per (peer, run of equal destination incarnation) and send; publish a
heartbeat when due; report silent peers.

An inbound frame is checked in order of cost: its size (ZeroMQ's MAXMSGSIZE
already cut longer ones), its connection's ZAP User-Id against the node id
its header claims (with credentials), the header against the peer set, and
only then are its messages decoded (with msgpack limits and the wire policy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import zmq
from zmq.utils.monitor import recv_monitor_message

from harbor._droplog import DropLog
from harbor._shared import Peer, Shared
from harbor.curve import curve_client
from harbor.errors import FrameError
from harbor.keys import CLUSTER, OPERATOR, Credentials
from harbor.transport import DeliverFn, DeliverPubFn, PeerDownFn, PeerInfo
from harbor.wire import (
    FRAME_OVERHEAD,
    HEARTBEAT_TOPIC,
    Header,
    WirePolicy,
    check_header,
    decode_frame,
    decode_publication,
    encode_heartbeat,
    join_frame,
    peek_header,
)

# A turn stops reading PULL after this many frames or this long, so heartbeats go out and
# come in on time however much traffic (or however slow a deliver callback) there is.
PULL_PER_TURN: Final = 256
PARK_LIMIT: Final = 256  # frames parked for not-yet-known nodes ...
PARK_BYTES: Final = 32 * 1024 * 1024  # ... and their bytes
TURN_BUDGET: Final = 0.02  # seconds
# Frames are packed up to this size (or max_frame if smaller): big enough to amortize the
# per-frame cost, small enough that decoding one never holds the receiver's turn for long.
BATCH_BYTES: Final = 256 * 1024
SUB_PER_TURN: Final = 4096  # publications read per turn; silence is judged only when SUB is drained
MONITOR_EVENTS: Final = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
SNDHWM: Final = 256  # frames queued in ZeroMQ per peer before frames wait in our backlog
# Silence under load: a peer's timeout is LOAD_FACTOR times the longest recent gap between
# its heartbeats, within [peer_timeout, peer_timeout_max]; the gap decays by GAP_DECAY per
# heartbeat, so a peer that is on time again is back to peer_timeout within a few seconds.
LOAD_FACTOR: Final = 3.0
GAP_DECAY: Final = 0.9


def user_ids(credentials: Credentials | None) -> frozenset[str] | None:
    """The ZAP User-Ids a frame may arrive under now (None: no credentials, no check)."""
    if credentials is None:
        return None
    return frozenset(str(w) for w in credentials.allowed.values() if w != OPERATOR)


class IoLoop:
    """Runs in the harbor thread; owns every socket it is given. Fields are I/O-thread owned."""

    def __init__(
        self,
        shared: Shared,
        *,
        node_id: int,
        incarnation: int,
        ctx: zmq.Context[zmq.Socket[bytes]],
        sockets: tuple[zmq.Socket[bytes], zmq.Socket[bytes], zmq.Socket[bytes]],
        callbacks: tuple[DeliverFn, DeliverPubFn, PeerDownFn],
        droplog: DropLog,
        max_frame: int,
        timing: tuple[float, float, float, float],
        credentials: Credentials | None = None,
        policy: WirePolicy | None = None,
        before_term: Callable[[], None] | None = None,
    ) -> None:
        # Immutable after __init__: identity, sockets, callbacks, limits.
        self.shared = shared
        self.node_id = node_id
        self.incarnation = incarnation
        self.ctx = ctx
        self.pull, self.pub, self.wake_rx = sockets
        self.deliver, self.deliver_pub, self.on_peer_down = callbacks
        self.drops = droplog
        self.counts = droplog.counts
        self.max_frame = max_frame
        self.hb_interval, self.peer_timeout, self.join_grace, self.peer_timeout_max = timing
        self.policy = policy
        self.before_term = before_term  # closes other sockets of ctx (the ZAP handler's)
        # Mutable, I/O thread: the credentials in force and the User-Ids they allow (None:
        # no credentials). Replaced together by a "creds" command.
        self.creds = credentials
        self.user_ids = user_ids(credentials)
        # node id -> advertised key, for peers left out because their key is not allowed.
        self.untrusted: dict[int, str] = {}
        # Mutable, all owned by the I/O thread (only it reads or writes them).
        # Invariant: members, by_monitor, by_push and by_sub index exactly the peers in
        # self.peers (and their open sockets).
        self.peers: dict[int, Peer] = {}  # node id -> peer, as last applied from set_peers
        self.members: dict[int, int] = {}  # node id -> incarnation
        # Frames from a node id not (yet) in the peer set, held up to join_grace: a node
        # that just joined may call us before our membership watch shows it. Kept raw
        # (header read, messages not decoded): (parked at, header, data).
        # Invariant: at most PARK_LIMIT entries and PARK_BYTES bytes (parked_bytes is their
        # sum); each is delivered or dropped once.
        self.parked: list[tuple[float, Header, bytes]] = []
        self.parked_bytes = 0
        # PUSH or SUB monitor socket -> (peer, "push" | "sub")
        self.by_monitor: dict[zmq.Socket[bytes], tuple[Peer, str]] = {}
        self.by_push: dict[zmq.Socket[bytes], Peer] = {}  # PUSH socket -> peer
        # SUB socket -> peer: one SUB per peer, so a publication's sender is known by the
        # socket it arrives on (one SUB for all would let a member speak as another).
        self.by_sub: dict[zmq.Socket[bytes], Peer] = {}
        self.topics: set[bytes] = set()  # channel topics every SUB socket is subscribed to
        self.hb_seq = 0  # sequence number of the last heartbeat published
        self.next_hb = 0.0  # monotonic time the next heartbeat is due
        self.poller = zmq.Poller()
        for s in (self.wake_rx, self.pull):
            self.poller.register(s, zmq.POLLIN)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Turn until stop() is asked, then close every socket and the context."""
        try:
            while not self.shared.stopping:
                self.turn()
        finally:
            self.close()

    def turn(self) -> None:
        """One turn of the loop (see the module docstring)."""
        sh = self.shared
        now = time.monotonic()
        timeout = max(0, min(100, int((self.next_hb - now) * 1000) + 1))
        sh.idle = True  # before looking at the deques: see Shared.idle
        if sh.out or sh.ctl or sh.stopping:
            timeout = 0
        events = dict(self.poller.poll(timeout))
        sh.idle = False
        if self.wake_rx in events:
            while self._recv(self.wake_rx) is not None:
                pass
        while sh.ctl:
            self.control(sh.ctl.popleft())
        if self.pull in events:
            budget_end = time.monotonic() + TURN_BUDGET
            for _ in range(PULL_PER_TURN):
                try:
                    zf = self.pull.recv(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self.on_frame(zf)
                if time.monotonic() > budget_end:
                    break  # the rest is read next turn: poll reports PULL readable at once
        for sock in events:
            if sock in self.by_sub:
                self.read_sub(self.by_sub[sock])
            elif sock in self.by_monitor:
                self.read_monitor(sock)
            elif sock in self.by_push:
                self.flush_peer(self.by_push[sock])
        # Snapshot the send queue *before* applying control commands: a message in it was
        # queued after set_peers queued its peer, so that peer is applied below. Taken
        # after delivery, so replies produced by the deliver callbacks leave this turn.
        n_out = len(sh.out)
        while sh.ctl:
            self.control(sh.ctl.popleft())
        self.flush_out(n_out)
        now = time.monotonic()
        if now >= self.next_hb:
            self.heartbeat(now)
            # Judge silence only on a drained SUB: a heartbeat may be waiting in it.
            if self.parked:
                self.unpark(0, now - self.join_grace)
            drained = [self.read_sub(p) for p in list(self.by_sub.values())]  # read every one
            if all(drained):
                self.check_silence(time.monotonic())

    @staticmethod
    def _recv(sock: zmq.Socket[bytes]) -> bytes | None:
        try:
            return sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None

    # -- control ------------------------------------------------------------------------

    def control(self, cmd: tuple[Any, ...]) -> None:
        """Apply one command queued by a caller thread."""
        op = cmd[0]
        if op == "pub":
            self.pub.send_multipart([cmd[1], cmd[2]], zmq.NOBLOCK)  # PUB drops at HWM
            self.counts["pubs_out"] += 1
        elif op == "peers":
            self.apply_peers(cmd[1], cmd[2])
        elif op == "creds":
            self.creds = cmd[1]
            self.user_ids = user_ids(cmd[1])
        elif op == "sub" and cmd[1] not in self.topics:
            self.topics.add(cmd[1])
            for sub in self.by_sub:
                sub.setsockopt(zmq.SUBSCRIBE, cmd[1])
        elif op == "unsub" and cmd[1] in self.topics:
            self.topics.discard(cmd[1])
            for sub in self.by_sub:
                sub.setsockopt(zmq.UNSUBSCRIBE, cmd[1])

    def apply_peers(self, new: dict[int, PeerInfo], untrusted: dict[int, str]) -> None:
        """Make the peer set ``new``: drop gone peers, reconnect replaced ones, add new ones.

        ``untrusted``: peers membership lists but whose advertised key is not allowed;
        counted once each, and reported down if they were peers.
        """
        for node_id, key in untrusted.items():
            if self.untrusted.get(node_id) != key:
                self.drops.drop("untrusted-peer", node_id, f"advertises key {key!r}")
        self.untrusted = untrusted
        for node_id, peer in list(self.peers.items()):
            info = new.get(node_id)
            if info is None:
                self.remove_peer(peer, "untrusted" if node_id in untrusted else "left")
            elif info != peer.info:
                replaced = info.incarnation != peer.info.incarnation
                self.remove_peer(peer, "replaced" if replaced else "")
        now = time.monotonic()
        for node_id, info in new.items():
            if node_id not in self.peers and node_id != self.node_id:
                self.add_peer(Peer(node_id, info, now))

    def add_peer(self, peer: Peer) -> None:
        """Start tracking ``peer`` and subscribe to its PUB socket."""
        self.peers[peer.node_id] = peer
        self.members[peer.node_id] = peer.info.incarnation
        self.unpark(peer.node_id)
        self.open_sub(peer)
        self.counts["peers"] = len(self.peers)

    def open_sub(self, peer: Peer) -> None:
        """Connect a SUB socket (and its monitor) to ``peer``'s PUB, with every topic."""
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.setsockopt(zmq.MAXMSGSIZE, self.max_frame)
        for topic in (HEARTBEAT_TOPIC, *self.topics):
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        if self.creds is not None:
            curve_client(sub, self.creds, peer.info.key)
        try:
            sub.connect(peer.info.pub)
        except zmq.ZMQError as exc:
            sub.close(0)
            self.drops.drop("endpoint", peer.node_id, f"{peer.info.pub}: {exc}")
            return
        peer.sub = sub
        peer.sub_mon = sub.get_monitor_socket(MONITOR_EVENTS)
        self.by_sub[sub] = peer
        self.by_monitor[peer.sub_mon] = (peer, "sub")
        self.poller.register(sub, zmq.POLLIN)
        self.poller.register(peer.sub_mon, zmq.POLLIN)

    def remove_peer(self, peer: Peer, reason: str) -> None:
        """Stop tracking ``peer``, reporting it down for ``reason`` unless reason is ""."""
        if reason:
            self.report_down(peer, reason)
        self.drop_backlog(peer, "peer-left")
        del self.peers[peer.node_id]
        del self.members[peer.node_id]
        self.shared.down.discard((peer.node_id, peer.info.incarnation))
        self.close_sub(peer)
        self.close_push(peer)
        self.counts["peers"] = len(self.peers)

    def close_sub(self, peer: Peer) -> None:
        """Close the peer's SUB socket and its monitor."""
        if peer.sub is None:
            return
        assert peer.sub_mon is not None
        self.by_monitor.pop(peer.sub_mon, None)
        self.by_sub.pop(peer.sub, None)
        for s in (peer.sub, peer.sub_mon):
            self.poller.unregister(s)
        peer.sub.disable_monitor()
        peer.sub_mon.close(0)
        peer.sub.close(0)
        peer.sub = peer.sub_mon = None

    def close_push(self, peer: Peer) -> None:
        """Close the peer's PUSH socket and its monitor (queued frames are discarded)."""
        if peer.push is None:
            return
        assert peer.push_mon is not None
        self.by_monitor.pop(peer.push_mon, None)
        self.by_push.pop(peer.push, None)
        for s in (peer.push, peer.push_mon):
            if s in self.poller:
                self.poller.unregister(s)
        peer.push.disable_monitor()
        peer.push_mon.close(0)
        peer.push.close(0)
        peer.push = peer.push_mon = None

    def report_down(self, peer: Peer, reason: str) -> None:
        """Tell the node ``peer`` is down, once per (node, incarnation); drop its backlog."""
        if peer.down:
            return
        peer.down = True
        self.shared.down.add((peer.node_id, peer.info.incarnation))  # send() refuses it now
        self.counts["peers_down"] += 1
        self.drops.log(
            f"harbor[{self.node_id}]: peer {peer.node_id}/{peer.info.incarnation} down: {reason}"
        )
        self.drop_backlog(peer, "peer-down")
        try:
            self.on_peer_down(peer.node_id, peer.info.incarnation, reason)
        except Exception as exc:
            self.drops.drop("callback", peer.node_id, f"on_peer_down raised {exc!r}")

    def revive(self, peer: Peer) -> None:
        """A peer reported down (silent, disconnected) heartbeats again with the same
        incarnation while membership still lists it: a partition healed. It is usable
        again; what failed or was dropped meanwhile stays failed (at-most-once)."""
        peer.down = False
        self.shared.down.discard((peer.node_id, peer.info.incarnation))
        self.counts["peers_revived"] += 1
        self.drops.log(
            f"harbor[{self.node_id}]: peer {peer.node_id}/{peer.info.incarnation} heard again"
        )

    def drop_backlog(self, peer: Peer, reason: str) -> None:
        """Discard frames still waiting for ``peer``'s socket, counted as ``reason``."""
        if peer.backlog:
            n = sum(m for _, m, _ in peer.backlog)
            self.shared.release(peer.node_id, sum(b for _, _, b in peer.backlog))
            peer.backlog.clear()
            self.drops.drop(reason, peer.node_id, f"{n} queued messages", n)

    # -- inbound ------------------------------------------------------------------------

    def on_frame(self, zf: zmq.Frame) -> None:
        """Check the identity and header of one actor frame, then decode and deliver it.

        Every rejection is dropped and counted; none decodes the messages.
        """
        data = zf.buffer
        try:
            head = peek_header(data, self.max_frame)
        except FrameError as exc:
            self.drops.drop(exc.reason, 0, exc.detail)
            return
        if self.user_ids is not None:
            try:
                uid = zf.get("User-Id")
            except zmq.ZMQError:  # no ZAP User-Id: not a CURVE connection (cannot happen)
                uid = ""
            if uid not in self.user_ids:
                self.drops.drop("revoked", head.src_node, f"key of {uid!r} is not allowed")
                return
            if uid != CLUSTER and uid != str(head.src_node):
                self.drops.drop("impostor", head.src_node, f"sent with the key of {uid}")
                return
        try:
            check_header(head, self.node_id, self.incarnation, self.members)
        except FrameError as exc:
            if exc.reason == "nonmember" and head.src_node not in self.members:
                self.park(head, zf.bytes)
                return
            self.drops.drop(exc.reason, head.src_node, exc.detail)
            return
        self.accept(head, data)

    def park(self, head: Header, data: bytes) -> None:
        """Hold a frame from a node id not in the peer set (yet), within the bounds."""
        if len(self.parked) >= PARK_LIMIT or self.parked_bytes + len(data) > PARK_BYTES:
            self.drops.drop("park-full", head.src_node, f"{len(data)} bytes, parking full")
            return
        self.parked.append((time.monotonic(), head, data))
        self.parked_bytes += len(data)

    def accept(self, head: Header, data: bytes | memoryview) -> None:
        """Decode and deliver a frame whose header passed the checks."""
        try:
            frame = decode_frame(data, self.max_frame, self.policy)
        except FrameError as exc:
            # A refused kind drops the whole frame (only a misbehaving member sends one):
            # counted in messages, so the count says how much was lost.
            n = head.n_messages if exc.reason == "kind" else 1
            self.drops.drop(exc.reason, head.src_node, exc.detail, n)
            return
        self.counts["frames_in"] += 1
        self.counts["msgs_in"] += len(frame.messages)
        try:
            self.deliver(frame.src_node, frame.src_incarnation, frame.messages)
        except Exception as exc:
            self.drops.drop("callback", frame.src_node, f"deliver raised {exc!r}")

    def read_sub(self, peer: Peer) -> bool:
        """Handle ``peer``'s queued publications; True if drained (silence can be judged)."""
        for _ in range(SUB_PER_TURN):
            if peer.sub is None:  # closed by a callback's effect meanwhile
                return True
            try:
                parts = peer.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            self.on_publication(peer, parts)
        return False

    def on_publication(self, peer: Peer, parts: list[bytes]) -> None:
        """Handle one publication or heartbeat from ``peer``'s PUB; drop and count it if bad."""
        try:
            if len(parts) != 2:
                raise FrameError("decode", f"{len(parts)} parts")
            pub = decode_publication(parts[0], parts[1], self.max_frame)
        except FrameError as exc:
            self.drops.drop(exc.reason, peer.node_id, f"publication: {exc.detail}")
            return
        if pub.src_node != peer.node_id:
            self.drops.drop("impostor", pub.src_node, f"publication on node {peer.node_id}'s PUB")
            return
        if self.members.get(pub.src_node) != pub.src_incarnation:
            self.drops.drop("nonmember", pub.src_node, f"publication from {pub.src_incarnation}")
            return
        if not pub.channel:
            self.heard(self.peers[pub.src_node], time.monotonic())
            return
        if parts[0] not in self.topics:
            return  # queued before an unsubscribe took effect
        self.counts["pubs_in"] += 1
        try:
            self.deliver_pub(pub.channel, pub.src_node, pub.source, pub.payload)
        except Exception as exc:
            self.drops.drop("callback", pub.src_node, f"deliver_pub raised {exc!r}")

    def read_monitor(self, mon: zmq.Socket[bytes]) -> None:
        """Track connects; report a peer whose connection dropped after it had connected."""
        while True:
            try:
                ev = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            entry = self.by_monitor.get(mon)
            if entry is None:  # its socket was closed meanwhile
                return
            peer, which = entry
            connected = ev["event"] == zmq.EVENT_CONNECTED
            if which == "sub":
                was, peer.sub_connected = peer.sub_connected, connected
            else:
                was, peer.push_connected = peer.push_connected, connected
            if was and ev["event"] == zmq.EVENT_DISCONNECTED:
                self.report_down(peer, "disconnected")

    # -- outbound -----------------------------------------------------------------------

    def flush_out(self, n: int) -> None:
        """Pack the first ``n`` queued messages into frames, one per peer per incarnation run."""
        out = self.shared.out
        limit = min(self.max_frame, BATCH_BYTES) - FRAME_OVERHEAD
        # node id -> runs of [dst_incarnation, encoded messages, total size], in queue order
        runs: dict[int, list[list[Any]]] = {}
        for _ in range(n):
            node_id, inc, data = out.popleft()
            r = runs.get(node_id)
            if r is None:
                r = runs[node_id] = []
            if r and r[-1][0] == inc and r[-1][2] + len(data) <= limit:
                r[-1][1].append(data)
                r[-1][2] += len(data)
            else:
                r.append([inc, [data], len(data)])
        for node_id, r in runs.items():
            peer = self.peers.get(node_id)
            if peer is None or peer.down:
                why = "peer-left" if peer is None else "peer-down"
                self.shared.release(node_id, sum(x[2] for x in r))
                self.drops.drop(why, node_id, "queued messages", sum(len(x[1]) for x in r))
                continue
            for inc, datas, size in r:
                frame = join_frame(self.node_id, self.incarnation, node_id, inc, datas)
                peer.backlog.append((frame, len(datas), size))
            self.flush_peer(peer)

    def flush_peer(self, peer: Peer) -> None:
        """Hand ``peer``'s backlog to ZeroMQ until it would block (then poll for POLLOUT)."""
        if peer.push is None:
            self.open_push(peer)
            if peer.push is None:
                return
        push = peer.push
        while peer.backlog:
            frame, n, size = peer.backlog[0]
            try:
                push.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                self.poller.register(push, zmq.POLLOUT)
                return
            except zmq.ZMQError as exc:
                self.drops.drop("send-error", peer.node_id, str(exc), n)
            else:
                self.counts["frames_out"] += 1
                self.counts["msgs_out"] += n
            peer.backlog.popleft()
            self.shared.release(peer.node_id, size)
        if push in self.poller:
            self.poller.unregister(push)

    def open_push(self, peer: Peer) -> None:
        """Connect a PUSH socket (and its monitor) to ``peer``'s PULL endpoint."""
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDHWM, SNDHWM)
        push.setsockopt(zmq.RECONNECT_IVL, 100)
        # Queue only on a completed connection: until then frames wait in our backlog,
        # which is bounded in bytes (max_backlog), not in ZeroMQ's pipe.
        push.setsockopt(zmq.IMMEDIATE, 1)
        if self.creds is not None:
            curve_client(push, self.creds, peer.info.key)
        try:
            push.connect(peer.info.pull)
        except zmq.ZMQError as exc:
            push.close(0)
            self.drop_backlog(peer, "endpoint")
            self.drops.drop("endpoint", peer.node_id, f"{peer.info.pull}: {exc}", 0)
            return
        peer.push = push
        self.by_push[push] = peer
        peer.push_mon = push.get_monitor_socket(MONITOR_EVENTS)
        self.by_monitor[peer.push_mon] = (peer, "push")
        self.poller.register(peer.push_mon, zmq.POLLIN)

    # -- timers -------------------------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        """Publish a heartbeat and schedule the next one."""
        self.hb_seq += 1
        body = encode_heartbeat(self.node_id, self.incarnation, self.hb_seq)
        self.pub.send_multipart([HEARTBEAT_TOPIC, body], zmq.NOBLOCK)
        self.counts["heartbeats_out"] += 1
        self.next_hb = now + self.hb_interval

    def unpark(self, node_id: int, expire_before: float = 0.0) -> None:
        """Deliver parked frames of ``node_id`` that now pass; drop expired ones."""
        keep: list[tuple[float, Header, bytes]] = []
        for at, head, data in self.parked:
            if head.src_node == node_id:
                try:
                    check_header(head, self.node_id, self.incarnation, self.members)
                except FrameError as exc:
                    self.drops.drop(exc.reason, head.src_node, exc.detail)
                    continue
                self.accept(head, data)
            elif at < expire_before:
                self.drops.drop("nonmember", head.src_node, "never joined")
            else:
                keep.append((at, head, data))
        self.parked = keep
        self.parked_bytes = sum(len(d) for _, _, d in keep)

    def heard(self, peer: Peer, now: float) -> None:
        """A heartbeat from ``peer`` read at ``now``: note it and the gap since the last."""
        if peer.last_heard:
            peer.gap = max(now - peer.last_heard, peer.gap * GAP_DECAY)
        peer.last_heard = now
        self.counts["heartbeats_in"] += 1
        if peer.down:
            self.revive(peer)

    def timeout_of(self, peer: Peer) -> float:
        """``peer``'s silence timeout now: scaled by how late its heartbeats came lately."""
        return min(self.peer_timeout_max, max(self.peer_timeout, LOAD_FACTOR * peer.gap))

    def check_silence(self, now: float) -> None:
        """Report peers not heard within their timeout (a new peer gets ``join_grace`` more)."""
        for peer in list(self.peers.values()):
            heard = peer.last_heard or peer.added_at + self.join_grace
            if not peer.down and now - heard > self.timeout_of(peer):
                self.report_down(peer, "silent")

    # -- shutdown -----------------------------------------------------------------------

    def close(self) -> None:
        """Close every socket with linger 0 and terminate the context."""
        for peer in self.peers.values():
            self.close_push(peer)
            self.close_sub(peer)
        with self.shared.wake_lock:
            if self.shared.wake_tx is not None:
                self.shared.wake_tx.close(0)
                self.shared.wake_tx = None
        for s in (self.pull, self.pub, self.wake_rx):
            s.close(0)
        if self.before_term is not None:
            self.before_term()
        self.ctx.term()
