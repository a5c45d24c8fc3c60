"""The node's side of the harbor: messages to and from other nodes.

Mixed into ``Node``. A remote CALL is delivered into the local mailbox with
its session as ``(session, caller_incarnation)``: every reply path goes
through ``_reply``, which pins the reply to that incarnation, so a node
restarted with the same id never receives replies meant for its predecessor.
Pending outgoing calls are remembered per peer so that a peer reported down
fails them at once with ``NodeDown``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .address import node_of
from .errors import NodeDown
from .message import CALL, ERR_NODE_DOWN, ERR_NOT_FOUND, ERROR, REPLY, SYSTEM

if TYPE_CHECKING:
    from coord.api import Coordinator, NodeInfo
    from harbor.transport import Transport

    from .service import Service


def free_port(host: str) -> int:
    """A port the OS says is free on ``host`` now (the transport binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("0.0.0.0", "*") else "0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


class Remote:
    """Harbor half of ``Node``."""

    node_id: int
    incarnation: int
    coord: Coordinator
    _lock: threading.RLock
    _services: dict[int, Service]
    _push_ext: Callable[[int, tuple[int, int, int, Any]], None]
    _count_drop: Callable[[str], None]

    def _init_remote(self, bind: str, advertise: str | None, ports: tuple[int, int]) -> None:
        self._bind = bind
        self._advertise = advertise or bind
        self._ports = ports
        self._transport: Transport | None = None
        # peer node -> {(caller handle, session): True} for calls awaiting a reply.
        self._pending_remote: dict[int, dict[tuple[int, int], bool]] = {}
        # remote target -> local watchers (monitor of a service on another node)
        self._remote_watches: dict[int, set[int]] = {}
        self._channels: dict[str, set[int]] = {}
        self._member_waiters: dict[int, list[Callable[[], None]]] = {}

    def _harbor_endpoints(self, clustered: bool) -> dict[str, str]:
        if not clustered:
            return {}
        pull, pub = self._ports
        pull = pull or free_port(self._bind)
        pub = pub or free_port(self._bind)
        self._ports = (pull, pub)
        return {"pull": f"tcp://{self._advertise}:{pull}", "pub": f"tcp://{self._advertise}:{pub}"}

    def _start_harbor(self) -> None:
        from harbor.zmq_transport import ZmqTransport

        t = ZmqTransport(
            self.node_id, self.incarnation, self._harbor_deliver, self._harbor_pub,
            self._peer_down, bind_host=self._bind,
            advertise_host=self._advertise if self._advertise != self._bind else None,
            pull_port=self._ports[0], pub_port=self._ports[1],
            log=lambda text: self._log(0, "warning", text),  # type: ignore[attr-defined]
        )
        t.start()
        self._transport = t
        self.add_component(t)  # type: ignore[attr-defined]
        self._refresh_peers()

    def _refresh_peers(self) -> None:
        from harbor.transport import PeerInfo

        t = self._transport
        if t is None:
            return
        peers = {}
        for nid, info in self.coord.members().items():
            ep = info.endpoints
            if nid != self.node_id and "pull" in ep and "pub" in ep:
                peers[nid] = PeerInfo(info.incarnation, ep["pull"], ep["pub"])
        t.set_peers(peers)

    def _member_changed(self, event: str, info: NodeInfo) -> None:
        self._refresh_peers()
        if event == "join":
            with self._lock:
                waiters = self._member_waiters.pop(info.node_id, [])
            for wake in waiters:
                wake()

    # -- outgoing --------------------------------------------------------------------------------

    def _remote_send(self, dest: int, msg: tuple[int, int, int, Any]) -> None:
        """SEND or CALL to a service on another node. Raises NodeDown for a CALL."""
        from harbor.errors import HarborError, PayloadError

        source, session, kind, payload = msg
        nid = node_of(dest)
        t = self._transport
        if t is None:
            if kind == CALL:
                raise NodeDown(f"node {nid} is not a member (standalone node)")
            self._count_drop("node-down")
            return
        if kind == CALL:
            pending = self._pending_remote.get(nid)
            if pending is None:
                pending = self._pending_remote.setdefault(nid, {})
            pending[(source, session)] = True
        try:
            t.send(nid, (dest, source, session, kind, payload))
        except PayloadError as exc:
            if kind == CALL:
                self._pending_remote.get(nid, {}).pop((source, session), None)
            raise TypeError(f"message to node {nid} cannot be sent: {exc}") from exc
        except HarborError as exc:
            if kind == CALL:
                self._pending_remote.get(nid, {}).pop((source, session), None)
                raise NodeDown(f"node {nid} is not a member ({type(exc).__name__})") from exc
            self._count_drop("node-down")

    def _remote_reply(self, source: int, dest: int, session: Any, kind: int, payload: Any) -> None:
        """REPLY/ERROR (or a SYSTEM notice) to another node; dropped if that node is gone."""
        from harbor.errors import HarborError

        t = self._transport
        if session.__class__ is tuple:
            session, inc = session
        else:
            inc = 0
        if t is None:
            self._count_drop("node-down")
            return
        try:
            t.send(node_of(dest), (dest, source, session, kind, payload), inc)
        except HarborError:
            self._count_drop("node-down")

    # -- incoming (the harbor's thread) -----------------------------------------------------------

    def _harbor_deliver(self, src: int, src_inc: int, messages: list[Any]) -> None:
        services = self._services
        pending = self._pending_remote.get(src)
        for dest, source, wire_session, kind, payload in messages:
            session: Any = wire_session
            if kind == CALL:
                session = (wire_session, src_inc)
            elif kind in (REPLY, ERROR):
                if pending is not None:
                    pending.pop((dest, wire_session), None)
            elif kind == SYSTEM:
                self._remote_system(src, dest, source, payload)
                continue
            svc = services.get(dest)
            if svc is not None:
                if svc._mailbox.push((source, session, kind, payload)):
                    self._scheduler.wake()  # type: ignore[attr-defined]
            elif dest == self._ext_handle:  # type: ignore[attr-defined]
                self._push_ext(dest, (source, session, kind, payload))
            elif kind == CALL:
                err = (ERR_NOT_FOUND, "ServiceNotFound", f"no service {dest:#x}", "")
                self._remote_reply(dest, source, session, ERROR, err)
            else:
                self._count_drop("dead-service")

    def _remote_system(self, src: int, dest: int, source: int, payload: Any) -> None:
        event, data = payload
        if event == "kill":
            self.kill(dest)  # type: ignore[attr-defined]
        elif event == "monitor":
            self._monitor(source, dest)  # type: ignore[attr-defined]
        elif event == "demonitor":
            self._demonitor(source, dest)  # type: ignore[attr-defined]
        else:  # a notice for a local service (down, ...)
            self._push_ext(dest, (source, 0, SYSTEM, (event, tuple(data))))

    def _harbor_pub(self, channel: str, src: int, source: int, payload: Any) -> None:
        for handle in self._channels.get(channel, set()).copy():
            self._push_ext(handle, (source, 0, SYSTEM, ("channel", (channel, source, payload))))

    def _peer_down(self, nid: int, inc: int, reason: str) -> None:
        """Fail every call pending on ``nid`` with NodeDown; tell remote monitors."""
        pending = self._pending_remote.pop(nid, {})
        err = (ERR_NODE_DOWN, "NodeDown", f"node {nid} is down ({reason})", "")
        for caller, session in list(pending):
            self._push_ext(caller, (0, session, ERROR, err))
        with self._lock:
            gone = [t for t in self._remote_watches if node_of(t) == nid]
            notices = [(t, self._remote_watches.pop(t)) for t in gone]
        for target, watchers in notices:
            for w in watchers:
                self._push_ext(w, (target, 0, SYSTEM, ("down", (target, "nodedown"))))

    # -- the service-facing verbs ------------------------------------------------------------------

    def _remote_control(self, source: int, target: int, event: str) -> None:
        """kill/monitor/demonitor a service on another node."""
        if event == "monitor":
            with self._lock:
                self._remote_watches.setdefault(target, set()).add(source)
        elif event == "demonitor":
            with self._lock:
                self._remote_watches.get(target, set()).discard(source)
        t = self._transport
        try:
            if t is None:
                raise NodeDown(f"node {node_of(target)} is not a member")
            t.send(node_of(target), (target, source, 0, SYSTEM, (event, None)))
        except Exception:
            if event == "monitor":
                self._push_ext(source, (target, 0, SYSTEM, ("down", (target, "nodedown"))))

    def _publish(self, source: int, channel: str, payload: Any) -> None:
        for handle in self._channels.get(channel, set()).copy():
            self._push_ext(handle, (source, 0, SYSTEM, ("channel", (channel, source, payload))))
        if self._transport is not None:
            self._transport.publish(channel, source, payload)

    def _subscribe(self, handle: int, channel: str) -> None:
        with self._lock:
            subs = self._channels.setdefault(channel, set())
            first = not subs
            subs.add(handle)
        if first and self._transport is not None:
            self._transport.subscribe(channel)

    def _unsubscribe(self, handle: int, channel: str) -> None:
        with self._lock:
            subs = self._channels.get(channel)
            if subs is None:
                return
            subs.discard(handle)
            last = not subs
            if last:
                del self._channels[channel]
        if last and self._transport is not None:
            self._transport.unsubscribe(channel)

    def _forget_remote(self, handle: int) -> None:
        """A service ended: drop its channel subscriptions."""
        for channel in [c for c, subs in self._channels.items() if handle in subs]:
            self._unsubscribe(handle, channel)

    def _when_member(self, nid: int, wake: Callable[[], None]) -> bool:
        """Call ``wake`` once ``nid`` joins; False if it is a member already."""
        with self._lock:
            if nid in self.coord.members():
                return False
            self._member_waiters.setdefault(nid, []).append(wake)
        if nid in self.coord.members():  # joined meanwhile
            with self._lock:
                waiters = self._member_waiters.pop(nid, [])
            for w in waiters:
                w()
        return True

