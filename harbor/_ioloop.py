"""The harbor I/O thread: the only code that touches ZeroMQ sockets after ``start()``.

One turn: poll; apply control commands (peer set, subscriptions,
publications); read frames from PULL (unless the node's idle workers read
it: :mod:`harbor._inbound`) and publications from SUB; read socket-monitor
events; pack every queued outgoing message into one frame per (peer, run of
equal destination incarnation) and send; once per tick, report peers whose
PUSH never connected.

Liveness costs no Python per peer (issue 15): a PUSH socket, opened on the
first frame to a peer, carries ZMTP heartbeats (``ZMQ_HEARTBEAT_IVL`` /
``ZMQ_HEARTBEAT_TIMEOUT``) that libzmq's own I/O thread sends and answers,
so a peer is not declared dead because its Python threads were starved, and
an idle cluster sends nothing. A dead or frozen peer's connection is closed
by libzmq within ``peer_timeout``; the socket monitor turns that into
"disconnected". Peers this node does not talk to are watched through
membership (their ZooKeeper session), which costs nothing per peer. SUB
sockets exist only while this node subscribes to a channel.

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
from harbor._shared import ZMQ_NOBLOCK, Peer, Shared, readable
from harbor.curve import curve_client
from harbor.errors import FrameError
from harbor.keys import OPERATOR, Credentials
from harbor.transport import DeliverPubFn, PeerDownFn, PeerInfo
from harbor.wire import FRAME_OVERHEAD, decode_publication, join_frame

# With idle workers reading PULL: the I/O thread reads it itself when no worker has
# held it for this long (every worker busy), so inbound traffic never waits for one.
FALLBACK_AFTER: Final = 0.02  # seconds
HOLD_MS: Final = 5  # ... polling PULL for at most this long per turn (milliseconds)
# Frames are packed up to this size (or max_frame if smaller): big enough to amortize the
# per-frame cost, small enough that decoding one never holds the receiver's turn for long.
BATCH_BYTES: Final = 256 * 1024
SUB_PER_TURN: Final = 4096  # publications read per SUB per turn at most
MONITOR_EVENTS: Final = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
SNDHWM: Final = 256  # frames queued in ZeroMQ per peer before frames wait in our backlog
# The loop's longest sleep while frames flow: parked frames, the fallback read of PULL
# and PUSH sockets that never connected are looked at at least this often ...
TICK: Final = 0.1  # seconds
# ... and once no frame came in and no socket stirred for DEEP_AFTER, every DEEP_TICK
# (an idle node's harbor thread wakes once a second; a worker that takes a frame from
# PULL while the loop sleeps deep pokes it, so the fallback read is never late).
DEEP_AFTER: Final = 1.0
DEEP_TICK: Final = 1.0
# A PUSH socket nothing was sent on for IDLE_CLOSE seconds, to a peer the node has no
# call pending on nor monitors (``in_use``), is closed: its ZMTP heartbeats stop, and a
# cluster that went quiet holds no connection. The next frame opens it again.
IDLE_CLOSE: Final = 30.0


def zmtp_heartbeat(peer_timeout: float) -> tuple[int, int]:
    """``(HEARTBEAT_IVL, HEARTBEAT_TIMEOUT)`` in ms for a connection to be closed at most
    ``peer_timeout`` after its peer froze: a PING goes out IVL after the last one, and the
    connection closes when no traffic came back TIMEOUT after a PING."""
    total = max(0.15, peer_timeout) * 1000
    ivl = int(total / 3)
    return ivl, int(total) - ivl


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
        timing: tuple[float, float],
        credentials: Credentials | None = None,
        before_term: Callable[[], None] | None = None,
        in_use: Callable[[int], bool] | None = None,
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
        self.peer_timeout, self.join_grace = timing
        self.hb_ivl, self.hb_timeout = zmtp_heartbeat(self.peer_timeout)
        self.before_term = before_term  # closes other sockets of ctx (the ZAP handler's)
        # Whether the node still needs liveness of a peer it sends nothing to (a call
        # pending on it, a monitor of one of its services). None: always.
        self.in_use = in_use
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
        # Invariant: a peer has a SUB exactly while topics is not empty.
        self.by_sub: dict[zmq.Socket[bytes], Peer] = {}
        self.topics: set[bytes] = set()  # channel topics every SUB socket is subscribed to
        self.next_tick = 0.0  # monotonic time the next tick is due
        self.active_at = 0.0  # monotonic time a frame came in or a socket stirred last
        self.seen_in = 0  # frames_in at the last tick
        self.deep = False  # sleeping DEEP_TICK at a time (mirrored in inbound.io_deep)
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
        timeout = max(0, int((self.next_tick - now) * 1000) + 1)
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
        if events:
            self.awake(time.monotonic())
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
        if now >= self.next_tick:
            self.tick(now)

    @staticmethod
    def _recv(sock: zmq.Socket[bytes]) -> bytes | None:
        if not readable(sock):  # the wake-up pipe is drained to empty on every wake-up
            return None
        try:
            return sock.recv(ZMQ_NOBLOCK)
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
            if len(self.topics) == 1:  # the first channel: a SUB to every peer
                for peer in self.peers.values():
                    self.open_sub(peer)
        elif op == "unsub" and cmd[1] in self.topics:
            self.topics.discard(cmd[1])
            for sub in self.by_sub:
                sub.setsockopt(zmq.UNSUBSCRIBE, cmd[1])
            if not self.topics:  # no channel left: no SUB at all
                for peer in self.peers.values():
                    self.close_sub(peer)

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
        """Start tracking ``peer``; subscribe to its PUB if this node has channels.

        No socket is opened to it otherwise: its PUSH opens on the first frame.
        """
        self.peers[peer.node_id] = peer
        self.members[peer.node_id] = peer.info.incarnation
        self.inbound.set_members(dict(self.members))  # the reader unparks its frames
        if self.topics:
            self.open_sub(peer)
        self.counts["peers"] = len(self.peers)

    def open_sub(self, peer: Peer) -> None:
        """Connect a SUB socket (and its monitor) to ``peer``'s PUB, with every topic."""
        if peer.sub is not None:
            return
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.setsockopt(zmq.MAXMSGSIZE, self.max_frame)
        for topic in self.topics:
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
        self.counts["subs"] = len(self.by_sub)

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
        peer.sub_connected = False
        self.counts["subs"] = len(self.by_sub)

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
        peer.push_connected = False
        self.counts["pushes"] = len(self.by_push)

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
        """A peer reported down (disconnected, unreachable) connected again with the same
        incarnation while membership still lists it: a partition healed, or a frozen
        process runs again. It is usable again; what failed or was dropped meanwhile
        stays failed (at-most-once)."""
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

    def read_sub(self, peer: Peer) -> None:
        """Handle ``peer``'s queued publications, at most SUB_PER_TURN (the rest next turn:
        its SUB stays readable)."""
        for _ in range(SUB_PER_TURN):
            if peer.sub is None:  # closed by a callback's effect meanwhile
                return
            try:
                parts = peer.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.on_publication(peer, parts)

    def on_publication(self, peer: Peer, parts: list[bytes]) -> None:
        """Handle one publication from ``peer``'s PUB; drop and count it if bad."""
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
                # TCP closed, or libzmq's heartbeat timed out (the peer is frozen or
                # cut off): either way nothing sent to it now would arrive.
                self.report_down(peer, "disconnected")
            elif connected and peer.down and self.peers.get(peer.node_id) is peer:
                self.revive(peer)

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
                    push.send(frame, ZMQ_NOBLOCK)
                except zmq.Again:
                    self.poller.register(push, zmq.POLLOUT)
                    return
                except zmq.ZMQError as exc:
                    self.drops.drop("send-error", peer.node_id, str(exc), n)
                else:
                    self.counts["frames_out"] += 1
                    self.counts["msgs_out"] += n
                    peer.last_flush = time.perf_counter()
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
        # Liveness of a peer this node talks to (module docstring): in libzmq's threads.
        push.setsockopt(zmq.HEARTBEAT_IVL, self.hb_ivl)
        push.setsockopt(zmq.HEARTBEAT_TIMEOUT, self.hb_timeout)
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
        peer.push_opened = time.monotonic()
        peer.last_flush = time.perf_counter()  # a new socket is not idle
        self.by_push[push] = peer
        self.counts["pushes"] = len(self.by_push)
        self.by_monitor[push_mon] = (peer, "push")
        self.poller.register(push_mon, zmq.POLLIN)
        self.shared.direct = {**self.shared.direct, peer.node_id: peer}

    # -- timers -------------------------------------------------------------------------

    def awake(self, now: float) -> None:
        """Something happened: tick every TICK again (from the next tick on)."""
        self.active_at = now
        if self.deep:
            self.deep = self.inbound.io_deep = False
            self.next_tick = min(self.next_tick, now + TICK)

    def tick(self, now: float) -> None:
        """Once per TICK (DEEP_TICK when idle): count the tick (the health check's sign
        of life), report peers whose PUSH has not connected within ``join_grace +
        peer_timeout``, close PUSH sockets idle for IDLE_CLOSE."""
        self.counts["ticks"] += 1
        frames_in = self.counts["frames_in"]
        if frames_in != self.seen_in:  # idle workers took frames meanwhile
            self.seen_in = frames_in
            self.awake(now)
        self.deep = self.inbound.io_deep = now - self.active_at >= DEEP_AFTER
        self.next_tick = now + (DEEP_TICK if self.deep else TICK)
        if not self.by_push:
            return
        limit = self.join_grace + self.peer_timeout
        idle_before = time.perf_counter() - IDLE_CLOSE
        for peer in list(self.by_push.values()):
            if not peer.push_connected:
                if not peer.down and now - peer.push_opened > limit:
                    self.report_down(peer, "unreachable")
            elif (max(peer.last_direct, peer.last_flush) < idle_before and not peer.backlog
                    and not self.shared.pending.get(peer.node_id, 0)
                    and (self.in_use is None or not self.in_use(peer.node_id))):
                self.close_push(peer)
                self.counts["pushes_idle_closed"] += 1

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
