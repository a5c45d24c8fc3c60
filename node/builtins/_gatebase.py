"""What every gate shares: clients and their agents, limits, backpressure, TLS.

A gate (:class:`~node.builtins.gate.Gate` for raw TCP,
:class:`~node.builtins.wsgate.WsGate` for WebSocket) owns a listening
socket and every client connection; it cuts the bytes into messages its own
way and hands them to :meth:`GateBase.deliver`. From there on all gates are
alike: one :class:`Agent` per client gets ``gate_client(message)``; while
an agent's mailbox holds more than ``mailbox_limit`` messages its client is
not read; a client with no complete message for ``idle_timeout`` seconds,
past ``max_clients``, or not reading its replies (1 MiB waiting) is closed
with one log line. With ``tls_cert`` (and ``tls_key``) the gate speaks TLS.
"""

from __future__ import annotations

import ssl
from typing import Any, ClassVar

from ..service import Service, expose
from ._agent import Agent

__all__ = ["BASE_DEFAULTS", "Client", "GateBase", "tls_context"]

BASE_DEFAULTS: dict[str, Any] = {
    "max_clients": 10000,
    "max_per_address": 0,  # connections from one IP address (0: no limit)
    "idle_timeout": 60.0,  # seconds without a complete message
    "mailbox_limit": 256,  # agent backlog above which its client is not read
    "agent_args": [],  # extra arguments for the agent's on_connect
    "tls_cert": None,  # PEM certificate chain file: the gate speaks TLS
    "tls_key": None,  # PEM private key file (None: it is in tls_cert)
}

BACKPRESSURE_TICK = 0.005  # how often paused clients are looked at


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server-side TLS context from PEM files, or None when ``cert`` is None.

    TLS 1.2 at least, no renegotiation. Raises ``ValueError`` naming the file
    that could not be loaded.
    """
    if cert is None:
        if key is not None:
            raise ValueError("tls_key given without tls_cert")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # a renegotiation would stall a non-blocking read
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from exc
    return ctx


class Client:
    """One connection as a gate sees it. Owner: the gate service."""

    __slots__ = ("addr", "agent", "closing", "cut", "last_seen", "paused", "pending", "sid", "why")

    def __init__(self, sid: int, addr: tuple[str, int], now: float) -> None:
        self.sid = sid
        self.addr = addr
        self.agent = 0  # 0 until the agent's on_start finished
        # Messages read but not yet given to the agent: it does not exist yet, or is behind.
        self.pending: list[Any] = []
        self.last_seen = now  # last complete message (or handshake, or pong)
        self.paused = False
        self.closing = False  # the gate is closing it: what it still sends is dropped
        self.cut = False  # force-closed: later events of the socket need no more action
        self.why = ""  # the agent's on_disconnect reason when the gate knows better


class GateBase(Service):
    """The gate service without its wire format: subclasses parse bytes into messages.

    ``newservice(GateClass, agent, host, port, options)``: ``agent`` is an
    :class:`Agent` subclass or ``"module:Class"``; ``options`` override the
    class's ``DEFAULTS``. ``on_start`` raises ``SocketError`` when it cannot
    listen and ``ValueError`` for an unknown option or an unloadable cert.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = BASE_DEFAULTS
    SPAWN_ON_ACCEPT: ClassVar[bool] = True  # False: the subclass calls spawn() (handshake)

    def on_start(
        self,
        agent: type[Agent] | str,
        host: str = "127.0.0.1",
        port: int = 0,
        options: dict[str, Any] | None = None,
    ) -> None:
        unknown = set(options or ()) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} options: {sorted(unknown)}")
        opts = {**self.DEFAULTS, **(options or {})}
        self.agent_cls = agent
        self.framing = ""  # the agents' encoder name (ENCODERS), set by configure
        self.max_clients: int = int(opts["max_clients"])
        self.max_per_address: int = int(opts["max_per_address"])
        self.idle_timeout: float = float(opts["idle_timeout"])
        self.mailbox_limit: int = int(opts["mailbox_limit"])
        self.agent_args: list[Any] = list(opts["agent_args"])
        self.clients: dict[int, Client] = {}
        self.by_agent: dict[int, int] = {}  # agent handle -> sock id
        self.rejected = 0
        self.ticking = False  # Invariant: True while a backpressure tick is scheduled
        self.configure(opts)
        self.lid = self.listen(host, port, tls=tls_context(opts["tls_cert"], opts["tls_key"]))
        self.timeout(max(self.idle_timeout / 4, 0.05), self._idle_tick)

    def on_stop(self) -> None:
        self.socket_close(self.lid, force=True)
        for c in self.clients.values():
            self.socket_close(c.sid)

    # -- for subclasses -------------------------------------------------------------------

    def configure(self, opts: dict[str, Any]) -> None:
        """Read the subclass's own options and set ``self.framing``; raise ``ValueError``."""
        raise NotImplementedError

    def new_client(self, sid: int, addr: tuple[str, int]) -> Client:
        """The per-connection record (a subclass may keep more per client)."""
        return Client(sid, addr, self.now())

    def hangup(self, sock_id: int, code: int, reason: str, force: bool) -> None:
        """Close one client; ``code``/``reason`` are for protocols that can say why."""
        c = self.clients.get(sock_id)
        if c is not None:
            c.closing = True
        self.socket_close(sock_id, force)

    def deliver(self, c: Client, messages: list[Any]) -> None:
        """Hand complete messages to ``c``'s agent as its backlog allows (else hold them)."""
        if not messages or c.closing:
            return
        c.last_seen = self.now()
        if c.agent and not c.pending and not c.paused and self._backlog(c) < self.mailbox_limit:
            for m in messages:  # the common case: straight to the agent
                self.send(c.agent, "gate_client", m)
            if self._backlog(c) > self.mailbox_limit:
                self._feed(c)
            return
        c.pending.extend(messages)
        self._feed(c)

    async def spawn(self, c: Client) -> None:
        """Start ``c``'s agent; held messages follow once it runs."""
        try:
            handle = await self.newservice(
                self.agent_cls, self.handle, c.sid, c.addr, self.framing, *self.agent_args
            )
        except Exception as exc:
            if self.clients.get(c.sid) is c:
                self._bad(c.sid, c.addr, f"agent failed to start: {exc}", 1011)
            return
        if self.clients.get(c.sid) is not c or c.closing:  # the client left meanwhile
            self.kill(handle)
            return
        c.agent = handle
        self.by_agent[handle] = c.sid
        self.monitor(handle)
        self._feed(c)

    # -- exposed --------------------------------------------------------------------------

    @expose
    def address(self) -> tuple[str, int] | None:
        """The ``(host, port)`` the gate listens on."""
        return self.socket_address(self.lid)

    @expose
    def stat(self) -> dict[str, int]:
        """Clients connected, clients paused for backpressure, connections refused."""
        paused = sum(1 for c in self.clients.values() if c.paused)
        return {"clients": len(self.clients), "paused": paused, "rejected": self.rejected}

    @expose
    def kick(self, sock_id: int, code: int = 1000, reason: str = "", force: bool = False) -> bool:
        """Close a client's connection (its agent gets ``on_disconnect``); ``code`` and
        ``reason`` reach WebSocket clients in the close frame."""
        if sock_id not in self.clients:
            return False
        self.hangup(sock_id, code, reason, force)
        return True

    # -- socket events --------------------------------------------------------------------

    async def on_socket_accept(self, listen_id: int, sock_id: int, addr: tuple[str, int]) -> None:
        if len(self.clients) >= self.max_clients:
            self.rejected += 1
            self._bad(sock_id, addr, f"connection limit {self.max_clients} reached", 1013)
            return
        if self.max_per_address and sum(
            1 for other in self.clients.values() if other.addr[0] == addr[0]
        ) >= self.max_per_address:
            self.rejected += 1
            self._bad(sock_id, addr, f"{self.max_per_address} connections from {addr[0]} already",
                      1013)
            return
        c = self.clients[sock_id] = self.new_client(sock_id, addr)
        if self.SPAWN_ON_ACCEPT:
            await self.spawn(c)

    def on_socket_close(self, sock_id: int, reason: str) -> None:
        if sock_id == self.lid:
            self.log(f"gate listener closed: {reason}", "error")
            return
        c = self.clients.pop(sock_id, None)
        if c is not None and reason.startswith("error: TLS handshake"):
            self.log(f"closing client {c.addr[0]}:{c.addr[1]} (socket {sock_id}): {reason}",
                     "warning")
        if c is not None and c.agent:
            self.by_agent.pop(c.agent, None)
            self.send(c.agent, "gate_disconnect", c.why or reason)

    def on_socket_warning(self, sock_id: int, buffered: int) -> None:
        c = self.clients.get(sock_id)
        if c is not None and buffered and not c.cut:
            # No close handshake: nothing more would reach a client that does not read.
            self.log(f"closing client {c.addr[0]}:{c.addr[1]} (socket {sock_id}): "
                     f"not reading its replies ({buffered} bytes waiting)", "warning")
            c.closing = c.cut = True
            self.socket_close(sock_id, force=True)

    def on_down(self, handle: int, reason: str) -> None:
        sid = self.by_agent.pop(handle, None)
        if sid is not None and sid in self.clients:
            self.hangup(sid, 1001, "going away", False)  # the agent ended: its client goes too

    # -- protection -----------------------------------------------------------------------

    def _bad(self, sock_id: int, addr: tuple[str, int], why: str, code: int = 1008) -> None:
        """Close one misbehaving client, with one log line."""
        self.log(f"closing client {addr[0]}:{addr[1]} (socket {sock_id}): {why}", "warning")
        self.hangup(sock_id, code, why, True)

    def _backlog(self, c: Client) -> int:
        svc = self._services.get(c.agent)
        return svc.queued() if svc is not None else 0

    def _feed(self, c: Client) -> None:
        """Hand held messages to the agent while its backlog allows; pause reading otherwise.

        Messages already read when the pause takes effect wait here, so the agent's
        mailbox stays near ``mailbox_limit`` whatever the client sends.
        """
        if not c.agent:  # not started yet: hold a mailbox's worth, then stop reading
            if len(c.pending) > self.mailbox_limit:
                self._pause_client(c)
            return
        room = self.mailbox_limit - self._backlog(c)
        if c.pending and room > 0:
            batch, c.pending = c.pending[:room], c.pending[room:]
            for m in batch:
                self.send(c.agent, "gate_client", m)
        if c.pending or self._backlog(c) > self.mailbox_limit:
            self._pause_client(c)
        elif c.paused and self._backlog(c) <= self.mailbox_limit // 2:
            self._resume_client(c)

    def _pause_client(self, c: Client) -> None:
        if not c.paused:
            c.paused = True
            self.socket_pause(c.sid)
            if not self.ticking:
                self.ticking = True
                self.timeout(BACKPRESSURE_TICK, self._resume_tick)

    def _resume_client(self, c: Client) -> None:
        c.paused = False
        c.last_seen = self.now()  # waiting on its agent is not the client's idleness
        self.socket_resume(c.sid)

    def _resume_tick(self) -> None:
        still = False
        for c in list(self.clients.values()):
            if c.paused:
                self._feed(c)
                still = still or c.paused
        self.ticking = still
        if still:
            self.timeout(BACKPRESSURE_TICK, self._resume_tick)

    def idle_what(self, c: Client) -> str:
        """What an idle client was doing, for the log line."""
        return "no data"

    def _idle_tick(self) -> None:
        limit = self.now() - self.idle_timeout
        for c in list(self.clients.values()):
            if c.last_seen < limit and not c.paused and not c.closing:
                self._bad(c.sid, c.addr, f"idle for {self.idle_timeout}s ({self.idle_what(c)})")
        self.timeout(max(self.idle_timeout / 4, 0.05), self._idle_tick)
