"""The node's link to the harbor: messages to and from other nodes.

The link is given a ``harbor.Transport`` (ZeroMQ in a real node, the
in-process hub in unit tests) and is the router's :class:`RemotePort`.

What it keeps, and why:

- **Pending calls per peer**: ``(caller, session) -> callee`` for every CALL
  this node sent and that has not been answered. A peer reported down
  fails them at once with ``NodeDown``; a call that times out or is
  abandoned withdraws its entry (:meth:`withdraw`); and a REPLY or ERROR is
  accepted only from the node and handle the call went to, for a session
  still pending, so nobody else can answer (or wake) a waiting service.
- **Inbound calls**: a CALL from another node enters the callee's mailbox
  with a fresh local session (an int like any other); the link remembers
  which wire session and caller *incarnation* it stands for, so the reply is
  pinned to the caller that asked: a node restarted with the same id never
  receives replies meant for its predecessor.
- **Channels**: local subscribers per channel; the transport subscribes to a
  channel while at least one local service does.

What the network may send: SEND, CALL, REPLY, ERROR, and the control events
``kill``, ``monitor``, ``demonitor`` and ``down``. Lifecycle events, TIMER and
SOCKET never come from another node; they are dropped and counted.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from harbor.errors import BacklogFull, HarborError, PayloadError
from harbor.transport import PeerInfo
from harbor.wire import WirePolicy

from ._histogram import Histogram
from .address import node_of
from .errors import NodeDown, Overloaded
from .message import CALL, ERR_NODE_DOWN, ERR_NOT_FOUND, ERR_OTHER, ERROR, REPLY, SEND, SYSTEM

if TYPE_CHECKING:
    from coord.api import NodeInfo
    from harbor.keys import Credentials
    from harbor.listener import Listener
    from harbor.transport import DeliverFn, DeliverPubFn, LogFn, PeerDownFn, Transport

    from ._coord_link import CoordLink
    from ._router import Router

__all__ = ["REMOTE_EVENTS", "WIRE_POLICY", "HarborLink", "HarborSettings", "TransportFactory"]

REMOTE_EVENTS = frozenset({"kill", "monitor", "demonitor", "down"})
"""SYSTEM events another node may send."""

WIRE_POLICY = WirePolicy(frozenset({SEND, CALL, REPLY, ERROR}), SYSTEM, REMOTE_EVENTS)
"""What a transport accepts from the network for this node (checked in the harbor,
before anything reaches the link; the link checks again)."""

ControlFn = Callable[[str, int, int], None]  # (event, source, target) for kill/monitor/demonitor


class TransportFactory(Protocol):
    """Builds the node's harbor transport once its id and incarnation are known
    (``harbor.InprocTransport`` with a hub, in tests)."""

    def __call__(
        self, node_id: int, incarnation: int, deliver: DeliverFn, deliver_pub: DeliverPubFn,
        on_peer_down: PeerDownFn,
    ) -> Transport: ...


@dataclass(frozen=True)
class HarborSettings:
    """Where the harbor binds and what it advertises; ``factory`` replaces ZeroMQ."""

    bind: str = "127.0.0.1"
    advertise: str = "127.0.0.1"
    pull_port: int = 0
    pub_port: int = 0
    factory: TransportFactory | None = None
    credentials: Credentials | None = None  # CURVE on every harbor socket (keys_dir)
    # Seconds after which a frozen or cut-off peer's connection is closed (ZMTP heartbeats).
    peer_timeout: float = 1.0


class HarborLink:
    """Remote delivery for the router; see the module docstring."""

    def __init__(
        self, router: Router, coord: CoordLink, settings: HarborSettings | None = None
    ) -> None:
        self._router = router
        self._coord = coord
        self._settings = settings or HarborSettings()
        self._lock = threading.Lock()
        self.transport: Transport | None = None
        # The bound sockets whose ports endpoints() advertised, until start() adopts them.
        self._listener: Listener | None = None
        # peer node -> {(caller handle, session): (callee handle, perf_counter() sent)}.
        # Under _lock. The send time costs one clock read per remote call and gives
        # the round-trip histogram below (observed under the same lock).
        self._pending: dict[int, dict[tuple[int, int], tuple[int, float]]] = {}
        self.call_latency = Histogram()
        # local session standing for an inbound call -> (wire session, caller incarnation)
        self._inbound: dict[int, tuple[int, int]] = {}
        self._aliases = itertools.count(1)
        self._channels: dict[str, set[int]] = {}
        self._member_waiters: dict[int, list[Callable[[], None]]] = {}
        self._down_hooks: list[Callable[[int], None]] = []
        self._watch_hooks: list[Callable[[int], bool]] = []
        self._control: ControlFn = lambda event, source, target: None
        self.isolated = False  # on_session_lost = "isolate" while the session is lost
        # Tracebacks of a handler's error go to callers on other nodes only when set
        # (config send_tracebacks): they show paths and code to whoever called.
        self.send_tracebacks = False

    def on_control(self, control: ControlFn) -> None:
        """Who handles ``kill``/``monitor``/``demonitor`` sent by another node."""
        self._control = control

    def on_peer_down(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(node_id)`` when a peer is reported down (after its calls failed)."""
        self._down_hooks.append(hook)

    def on_watching(self, hook: Callable[[int], bool]) -> None:
        """``hook(node_id)`` says whether something local watches that node (a monitor)."""
        self._watch_hooks.append(hook)

    def in_use(self, nid: int) -> bool:
        """Whether this node needs ``nid``'s liveness though it sent it nothing lately:
        a call pending on it, or a local monitor of one of its services. The harbor
        keeps its connection (and the ZMTP heartbeats on it) open while this holds."""
        if self._pending.get(nid):  # one dict read: GIL-atomic, racing is harmless here
            return True
        return any(hook(nid) for hook in self._watch_hooks)

    def endpoints(self) -> dict[str, str]:
        """The endpoints to advertise in membership before :meth:`start`: the harbor's
        sockets are bound here (port 0: the OS picks), so what is advertised is what is
        bound and no other process can take a port in between. Raises
        ``TransportError`` if a fixed port is taken."""
        st = self._settings
        if st.factory is not None:  # an in-process transport routes by node id
            return {"pull": "inproc://pull", "pub": "inproc://pub"}
        from harbor.listener import Listener
        from harbor.transport import DEFAULT_MAX_FRAME

        self.close_listener()
        self._listener = Listener(
            st.bind, advertise_host=st.advertise, pull_port=st.pull_port,
            pub_port=st.pub_port, max_frame=DEFAULT_MAX_FRAME, credentials=st.credentials,
        )
        return dict(self._listener.endpoints)  # with "key" under credentials

    def close_listener(self) -> None:
        """Unbind sockets bound by :meth:`endpoints` that no transport adopted (the
        node did not start). Idempotent."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def start(self, incarnation: int, log: LogFn) -> Transport:
        """Build and start the transport (ZeroMQ unless a factory was given), then give
        it the current members. Returns it for the node to stop last."""
        st, nid = self._settings, self._router.node_id
        if st.factory is not None:
            t = st.factory(nid, incarnation, self.deliver, self.deliver_pub, self.peer_down)
        else:
            from harbor.zmq_transport import ZmqTransport

            t = ZmqTransport(
                nid, incarnation, self.deliver, self.deliver_pub, self.peer_down,
                bind_host=st.bind, advertise_host=st.advertise if st.advertise != st.bind else None,
                pull_port=st.pull_port, pub_port=st.pub_port, log=log,
                credentials=st.credentials, wire_policy=WIRE_POLICY,
                peer_timeout=st.peer_timeout, in_use=self.in_use,
                listener=self._listener,
            )
            self._listener = None  # the transport owns it now (and closes it on stop)
            # Idle workers wait on the harbor's inbound socket: the thread that receives a
            # message from another node runs it (no hand-off from the harbor's thread).
            self._router.scheduler.idle = t.idle_wait()
        t.start()
        self.transport = t
        self._coord.on_member(self._member_changed)
        self.refresh_peers()
        return t

    # -- the transport's callbacks (its thread) -------------------------------------------

    def isolate(self, on: bool) -> None:
        """Refuse (``on``) or accept again the cluster's traffic, both ways."""
        self.isolated = on

    def deliver(self, src: int, src_inc: int, messages: list[Any]) -> None:
        """Frames from ``src``: route each message, keeping only what may come from afar."""
        router = self._router
        if self.isolated:
            router.count_drop("isolated")
            return
        for dest, source, wire_session, kind, payload in messages:
            if kind == SEND:
                try:
                    if not router.accept(dest, (source, 0, SEND, payload)):
                        router.count_drop("dead-service")
                except Overloaded:
                    pass  # counted by the router
            elif kind == CALL:
                self._inbound_call(src, src_inc, dest, source, wire_session, payload)
            elif kind in (REPLY, ERROR):
                with self._lock:
                    pending = self._pending.get(src)
                    sent = None if pending is None else pending.pop((dest, wire_session), None)
                    if sent is not None and sent[0] == source:
                        self.call_latency.observe(perf_counter() - sent[1])
                if sent is None or sent[0] != source:
                    router.count_drop("unexpected-reply")
                elif not router.accept(dest, (source, wire_session, kind, payload)):
                    router.count_drop("late-reply")
            elif kind == SYSTEM:
                self._inbound_system(dest, source, payload)
            else:  # TIMER, SOCKET or garbage: never from the network
                router.count_drop("remote-kind-refused")

    def _inbound_call(
        self, src: int, src_inc: int, dest: int, source: int, wire_session: int, payload: Any
    ) -> None:
        alias = next(self._aliases)
        self._inbound[alias] = (wire_session, src_inc)
        try:
            found = self._router.accept(dest, (source, alias, CALL, payload))
        except Overloaded as exc:
            self._inbound.pop(alias, None)
            err = (ERR_OTHER, "Overloaded", str(exc), "")
            self._send(src, (source, dest, wire_session, ERROR, err), src_inc)
            return
        if not found:
            self._inbound.pop(alias, None)
            err = (ERR_NOT_FOUND, "ServiceNotFound", f"no service {dest:#x}", "")
            self._send(src, (source, dest, wire_session, ERROR, err), src_inc)

    def _inbound_system(self, dest: int, source: int, payload: Any) -> None:
        try:
            event, data = payload
        except (TypeError, ValueError):
            self._router.count_drop("remote-bad-system")
            return
        if event not in REMOTE_EVENTS:
            self._router.count_drop("remote-event-refused")
        elif event == "down":
            if isinstance(data, list | tuple) and len(data) == 2:
                self._router.accept(dest, (source, 0, SYSTEM, ("down", tuple(data))))
            else:
                self._router.count_drop("remote-bad-system")
        else:
            self._control(event, source, dest)

    def deliver_pub(self, channel: str, src: int, source: int, payload: Any) -> None:
        """A publication from another node: to every local subscriber."""
        self.publish_local(channel, source, payload)

    def peer_down(self, nid: int, inc: int, reason: str) -> None:
        """Fail every call pending on ``nid`` with ``NodeDown``; then the hooks."""
        with self._lock:
            pending = self._pending.pop(nid, {})
        err = (ERR_NODE_DOWN, "NodeDown", f"node {nid} is down ({reason})", "")
        for caller, session in list(pending):
            self._router.post(caller, (0, session, ERROR, err))
        for hook in self._down_hooks:
            hook(nid)

    # -- the router's remote port ---------------------------------------------------------

    def send(self, dest: int, source: int, session: int, kind: int, payload: Any) -> None:
        """SEND or CALL to another node. Raises ``NodeDown`` for a CALL that cannot go."""
        nid = node_of(dest)
        t = self.transport
        if t is None or self.isolated:
            if kind == CALL:
                why = "isolated: coordination session lost" if t else "no harbor"
                raise NodeDown(f"node {nid} is not reachable ({why})")
            self._router.count_drop("node-down")
            return
        if kind == CALL:
            with self._lock:
                self._pending.setdefault(nid, {})[(source, session)] = (dest, perf_counter())
        try:
            t.send(nid, (dest, source, session, kind, payload), 0, self._busy(source))
        except PayloadError as exc:
            self.withdraw(dest, source, session)
            raise TypeError(f"message to node {nid} cannot be sent: {exc}") from exc
        except BacklogFull as exc:
            self.withdraw(dest, source, session)
            self._router.count_drop("backlog-full")
            if kind == CALL:
                raise Overloaded(f"the send backlog to node {nid} is full ({exc})") from exc
        except HarborError as exc:
            if kind == CALL:
                self.withdraw(dest, source, session)
                raise NodeDown(f"node {nid} is not a member ({type(exc).__name__})") from exc
            self._router.count_drop("node-down")

    def withdraw(self, dest: Any, caller: int, session: int) -> None:
        """Forget a pending call (timed out or abandoned): its late reply is refused.

        ``dest`` is the handle called, or the name or group it was resolved from
        (then every peer's table is searched)."""
        key = (caller, session)
        with self._lock:
            if dest.__class__ is int:
                pending = self._pending.get(node_of(dest))
                if pending is not None:
                    pending.pop(key, None)
                return
            for pending in self._pending.values():
                if pending.pop(key, None) is not None:
                    return

    def reply(self, source: int, dest: int, session: int, kind: int, payload: Any) -> None:
        """REPLY/ERROR to an inbound call, or a SYSTEM notice, to another node."""
        inc = 0
        if session:
            pinned = self._inbound.pop(session, None)
            if pinned is None:
                self._router.count_drop("late-reply")
                return
            session, inc = pinned
        if kind == ERROR and not self.send_tracebacks and payload[3]:
            payload = (payload[0], payload[1], payload[2], "")
        self._send(node_of(dest), (dest, source, session, kind, payload), inc, self._busy(source))

    def control(self, source: int, target: int, event: str) -> None:
        """kill/monitor/demonitor a service on another node (raises ``NodeDown``)."""
        t = self.transport
        if t is None:
            raise NodeDown(f"node {node_of(target)} is not a member")
        try:
            t.send(node_of(target), (target, source, 0, SYSTEM, (event, None)))
        except HarborError as exc:
            raise NodeDown(f"node {node_of(target)} is not reachable: {exc}") from exc

    def _busy(self, source: int) -> bool:
        """True when more work waits (other mailboxes queued, or more messages for the
        sending service): the transport then packs this message with what follows
        instead of sending it at once (batching under load)."""
        router = self._router
        if router.scheduler.queue:
            return True
        svc = router.services.get(source)
        return svc is not None and bool(svc._mailbox.queue)

    def _send(
        self, nid: int, msg: tuple[int, int, int, int, Any], inc: int, batch: bool = False
    ) -> None:
        t = self.transport
        if t is None:
            self._router.count_drop("node-down")
            return
        try:
            t.send(nid, msg, inc, batch)
        except HarborError:
            self._router.count_drop("node-down")

    # -- membership ------------------------------------------------------------------------

    def refresh_peers(self) -> None:
        """Give the transport every member with harbor endpoints (this node excluded)."""
        t = self.transport
        if t is None:
            return
        peers = {}
        for nid, info in self._coord.coord.members().items():
            ep = info.endpoints
            if nid != self._router.node_id and "pull" in ep and "pub" in ep:
                peers[nid] = PeerInfo(info.incarnation, ep["pull"], ep["pub"], ep.get("key", ""))
        t.set_peers(peers)

    def _member_changed(self, event: str, info: NodeInfo) -> None:
        self.refresh_peers()
        if event == "join":
            with self._lock:
                waiters = self._member_waiters.pop(info.node_id, [])
            for wake in waiters:
                wake()

    def when_member(self, nid: int, wake: Callable[[], None]) -> bool:
        """Call ``wake`` once ``nid`` joins; False (and no call) if it is a member now."""
        members = self._coord.coord.members
        with self._lock:
            if nid in members():
                return False
            self._member_waiters.setdefault(nid, []).append(wake)
        if nid in members():  # joined meanwhile
            with self._lock:
                waiters = self._member_waiters.pop(nid, [])
            for w in waiters:
                w()
        return True

    # -- channels ---------------------------------------------------------------------------

    def publish(self, source: int, channel: str, payload: Any) -> None:
        """To every subscriber of ``channel`` here and on every other node, once each."""
        self.publish_local(channel, source, payload)
        if self.transport is not None:
            self.transport.publish(channel, source, payload)

    def publish_local(self, channel: str, source: int, payload: Any) -> None:
        """To this node's subscribers of ``channel``."""
        with self._lock:
            subs = list(self._channels.get(channel, ()))
        for handle in subs:
            self._router.post(handle, (source, 0, SYSTEM, ("channel", (channel, source, payload))))

    def subscribe(self, handle: int, channel: str) -> None:
        """``handle`` receives ``channel`` from now on."""
        with self._lock:
            subs = self._channels.setdefault(channel, set())
            first = not subs
            subs.add(handle)
        if first and self.transport is not None:
            self.transport.subscribe(channel)

    def unsubscribe(self, handle: int, channel: str) -> None:
        """``handle`` stops receiving ``channel``."""
        with self._lock:
            subs = self._channels.get(channel)
            if subs is None:
                return
            subs.discard(handle)
            last = not subs
            if last:
                del self._channels[channel]
        if last and self.transport is not None:
            self.transport.unsubscribe(channel)

    def forget(self, handle: int) -> None:
        """A service ended: drop its channel subscriptions."""
        with self._lock:
            channels = [c for c, subs in self._channels.items() if handle in subs]
        for channel in channels:
            self.unsubscribe(handle, channel)

    def reload_credentials(self) -> bool:
        """Re-read the keys directory (a key removed: that node is cut off). False
        without credentials."""
        creds = self._settings.credentials
        t = self.transport
        if creds is None or t is None:
            return False
        reload = getattr(t, "reload_credentials", None)  # the ZeroMQ transport's
        if reload is None:
            return False
        fresh = creds.reload()
        self._settings = dataclasses.replace(self._settings, credentials=fresh)
        reload(fresh)
        return True

    def stats(self) -> dict[str, Any]:
        """The transport's counters plus the link's own tables."""
        if self.transport is None:
            return {}
        with self._lock:
            pending = sum(len(p) for p in self._pending.values())
        return dict(self.transport.stats(), pending_calls=pending, inbound_calls=len(self._inbound))
