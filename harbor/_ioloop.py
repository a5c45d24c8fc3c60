"""The harbor I/O thread: the only code that touches ZeroMQ sockets after ``start()``.

One turn: poll; apply control commands (peer set, subscriptions,
publications); read frames from PULL (unless the node's idle workers read
it: :mod:`harbor._inbound`) and publications/heartbeats from SUB; read
socket-monitor events; pack every queued outgoing message into one frame per
(peer, run of equal destination incarnation) and send; publish a heartbeat
when due; report silent peers.

PUSH sockets are shared with caller threads: each peer's ``lock``
(:class:`harbor._shared.Peer`) is held by whoever touches its PUSH socket --
this thread (flush, open, close) or a caller sending a frame directly
(:meth:`harbor.zmq_transport.ZmqTransport.send`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import zmq
from zmq.utils.monitor import recv_monitor_message

from harbor._droplog import DropLog
from harbor._inbound import Inbound
from harbor._shared import Peer, Shared
from harbor.curve import curve_client
from harbor.errors import FrameError
from harbor.keys import OPERATOR, Credentials
from harbor.transport import DeliverPubFn, PeerDownFn, PeerInfo
from harbor.wire import (
    FRAME_OVERHEAD,
    HEARTBEAT_TOPIC,
    decode_publication,
    encode_heartbeat,
    join_frame,
)

# With idle workers reading PULL: the I/O thread reads it itself when no worker has
# held it for this long (every worker busy), so inbound traffic never waits for one.
FALLBACK_AFTER: Final = 0.02  # seconds
HOLD_MS: Final = 5  # ... polling PULL for at most this long per turn (milliseconds)
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
        sockets: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
        inbound: Inbound,
        callbacks: tuple[DeliverPubFn, PeerDownFn],
        droplog: DropLog,
        max_frame: int,
        timing: tuple[float, float, float, float],
        credentials: Credentials | None = None,
        before_term: Callable[[], None] | None = None,
    ) -> None:
        # Immutable after __init__: identity, sockets, callbacks, limits.
        self.shared = shared
        self.node_id = node_id
        self.incarnation = incarnation
        self.ctx = ctx
        self.pub, self.wake_rx = sockets
        self.inbound = inbound
        self.pull = inbound.pull
        self.deliver_pub, self.on_peer_down = callbacks
        self.drops = droplog
        self.counts = droplog.counts
        self.max_frame = max_frame
        self.hb_interval, self.peer_timeout, self.join_grace, self.peer_timeout_max = timing
        self.before_term = before_term  # closes other sockets of ctx (the ZAP handler's)
        # Mutable, I/O thread: the credentials in force and the User-Ids they allow (None:
        # no credentials). Replaced together by a "creds" command.
        self.creds = credentials
        inbound.user_ids = user_ids(credentials)
        # node id -> advertised key, for peers left out because their key is not allowed.
        self.untrusted: dict[int, str] = {}
        # Mutable, all owned by the I/O thread (only it reads or writes them).
        # Invariant: members, by_monitor, by_push and by_sub index exactly the peers in
        # self.peers (and their open sockets).
        self.peers: dict[int, Peer] = {}  # node id -> peer, as last applied from set_peers
        self.members: dict[int, int] = {}  # node id -> incarnation (a copy: inbound.members)
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
        self.poller.register(self.wake_rx, zmq.POLLIN)
        if not inbound.workers:  # else idle workers poll PULL (never two threads at once)
            self.poller.register(self.pull, zmq.POLLIN)

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
        # Every worker busy for a while (none waited on PULL lately): this thread polls
        # PULL too, holding the inbound lock (never blocking for it) and for at most
        # HOLD_MS, so a worker that goes idle gets PULL back within that.
        inb = self.inbound
        held = (
            inb.workers and now - inb.last_worker >= FALLBACK_AFTER
            and inb.lock.acquire(blocking=False)
        )
        if held:
            self.poller.register(self.pull, zmq.POLLIN)
            timeout = min(timeout, HOLD_MS)
        sh.idle = True  # before looking at the deques: see Shared.idle
        if sh.out or sh.ctl or sh.stopping:
            timeout = 0
        try:
            events = dict(self.poller.poll(timeout))
        finally:
            if held:
                self.poller.unregister(self.pull)
        sh.idle = False
        if self.wake_rx in events:
            while self._recv(self.wake_rx) is not None:
                pass
        while sh.ctl:
            self.control(sh.ctl.popleft())
        if held:
            try:
                inb.read_held(self.pull in events, time.monotonic())
            finally:
                inb.lock.release()
        else:
            inb.turn(self.pull in events, time.monotonic(), FALLBACK_AFTER)
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
            self.inbound.user_ids = user_ids(cmd[1])
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
        self.inbound.set_members(dict(self.members))  # the reader unparks its frames
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
        # The monitor before connect: a connection that completes at once must not
        # complete unseen (its DISCONNECTED would then not count as a drop).
        sub_mon = sub.get_monitor_socket(MONITOR_EVENTS)
        try:
            sub.connect(peer.info.pub)
        except zmq.ZMQError as exc:
            sub.disable_monitor()
            sub_mon.close(0)
            sub.close(0)
            self.drops.drop("endpoint", peer.node_id, f"{peer.info.pub}: {exc}")
            return
        peer.sub, peer.sub_mon = sub, sub_mon
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
        self.inbound.set_members(dict(self.members))
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
        if self.shared.direct.get(peer.node_id) is peer:
            direct = dict(self.shared.direct)
            del direct[peer.node_id]
            self.shared.direct = direct
        self.by_monitor.pop(peer.push_mon, None)
        self.by_push.pop(peer.push, None)
        for s in (peer.push, peer.push_mon):
            if s in self.poller:
                self.poller.unregister(s)
        with peer.lock:  # a caller sending directly finishes first; then none can start
            peer.push.disable_monitor()
            peer.push_mon.close(0)
            peer.push.close(0)
            peer.push = peer.push_mon = None
            self.shared.direct_gone += peer.direct_frames
            peer.direct_frames = 0

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
        # Under the peer's lock: callers may send on this socket directly. While the
        # backlog is not empty its bytes are pending, so callers queue instead (and do not
        # touch the socket while it is registered for POLLOUT in this thread's poll).
        with peer.lock:
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
        push_mon = push.get_monitor_socket(MONITOR_EVENTS)  # before connect: see open_sub
        try:
            push.connect(peer.info.pull)
        except zmq.ZMQError as exc:
            push.disable_monitor()
            push_mon.close(0)
            push.close(0)
            self.drop_backlog(peer, "endpoint")
            self.drops.drop("endpoint", peer.node_id, f"{peer.info.pull}: {exc}", 0)
            return
        with peer.lock:  # the lock hands the new socket to callers (a memory barrier)
            peer.push, peer.push_mon = push, push_mon
        self.by_push[push] = peer
        self.by_monitor[push_mon] = (peer, "push")
        self.poller.register(push_mon, zmq.POLLIN)
        self.shared.direct = {**self.shared.direct, peer.node_id: peer}

    # -- timers -------------------------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        """Publish a heartbeat and schedule the next one."""
        self.hb_seq += 1
        body = encode_heartbeat(self.node_id, self.incarnation, self.hb_seq)
        self.pub.send_multipart([HEARTBEAT_TOPIC, body], zmq.NOBLOCK)
        self.counts["heartbeats_out"] += 1
        self.next_hb = now + self.hb_interval

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
        self.inbound.close()
        for s in (self.pub, self.wake_rx):
            s.close(0)
        if self.before_term is not None:
            self.before_term()
        self.ctx.term()
