"""``WsGate``: the gate for browsers, speaking WebSocket (RFC 6455) on the socket thread.

The same :class:`~node.builtins.gate.Agent` API as the TCP gate: one agent
per connection, ``on_client(message)`` for each complete message — ``str``
for a text message, ``bytes`` for a binary one — and ``send_client(data)``,
which sends ``str`` as a text message and ``bytes`` as a binary one.
``close_client(code, reason)`` ends with a close frame.

The protocol is ``wsproto`` (sans-I/O): ``h11`` reads the HTTP request; an
upgrade request goes to ``wsproto`` (which checks it), anything else is a
plain HTTP request, answered from ``http_root`` (the static files of a small
web page, read once at start) or with 426. The agent is started once the
handshake is accepted. An agent encodes its own messages with a ``wsproto``
frame encoder of its own (no extension is ever negotiated, so a frame
depends on nothing but its payload) and writes them from its worker; the
gate encodes the rest (handshake, pong, ping, close) with the connection's
``WSConnection``.

Protection, one log line per closed client, as for the TCP gate plus:
an ``Origin`` not in ``origins`` (403), a request that is not a valid
upgrade (400/426, or the page), an HTTP head over ``max_header`` bytes
(431), a message over ``max_message`` bytes (close 1009), a protocol error
(wsproto's close code, 1002 or 1007), ``on_client`` raising (1008). The
gate pings a client quiet for ``ping_interval`` seconds; a pong, a ping or a
message counts as activity, so ``idle_timeout`` ends peers that stopped
answering. When the gate closes a client it sends a close frame and waits
up to ``close_timeout`` seconds for the client's answering close frame
(reading and discarding meanwhile), then closes the TCP connection. Codes:
1000 ``close_client``, 1001 node stop or the agent ended, 1008 policy,
1009 too big, 1011 agent failed to start, 1013 connection limit.

Example::

    gate = node.newservice(WsGate, Echo, "127.0.0.1", 8080,
                           {"origins": ["same-origin"], "http_root": "web/"})
"""

from __future__ import annotations

import http
import mimetypes
import re
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
)
from wsproto.frame_protocol import FrameProtocol
from wsproto.utilities import RemoteProtocolError

from ..service import expose
from ._agent import ENCODERS, Encoder
from ._gatebase import BASE_DEFAULTS, Client, GateBase

__all__ = ["DEFAULTS", "WsGate"]

DEFAULTS: dict[str, Any] = {
    **BASE_DEFAULTS,
    "max_message": 65536,  # bytes in one message (text counted as UTF-8)
    "max_header": 8192,  # bytes in the HTTP request head
    "origins": None,  # None: any; else exact origins ("https://a.example") or "same-origin"
    "ping_interval": 20.0,  # ping a client quiet this long (0: never); < idle_timeout
    "close_timeout": 2.0,  # wait for the client's close frame, then close the TCP connection
    "http_root": None,  # a directory whose files are served to plain GET (/ is index.html)
}

_STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _frame_encoder() -> Encoder:
    # Server frames are unmasked and no extension is negotiated: a data frame is a
    # function of its payload alone, so each agent may own one.
    proto = FrameProtocol(client=False, extensions=[])
    return lambda data: bytes(proto.send_data(data, True))


ENCODERS["websocket"] = _frame_encoder


class _WsClient(Client):
    __slots__ = ("close_by", "http", "last_ping", "parts", "size", "ws")

    def __init__(self, sid: int, addr: tuple[str, int], now: float, max_header: int) -> None:
        super().__init__(sid, addr, now)
        # The HTTP request until the handshake is answered, then None.
        self.http: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=max_header
        )
        self.ws: WSConnection | None = None  # set once the upgrade is accepted
        self.parts: list[Any] = []  # the message being received, in pieces
        self.size = 0  # its bytes so far
        self.last_ping = now
        self.close_by = 0.0  # close handshake deadline (0: none running)


class WsGate(GateBase):
    """The WebSocket gateway; start it with ``newservice(WsGate, agent, host, port, options)``.

    ``options`` override :data:`DEFAULTS` (``tls_cert``/``tls_key`` for wss).
    ``stat()`` adds ``refused``: handshakes refused (bad request, origin).
    """

    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS
    SPAWN_ON_ACCEPT: ClassVar[bool] = False  # the agent starts when the handshake is accepted

    def configure(self, opts: dict[str, Any]) -> None:
        self.framing = "websocket"
        self.max_message = int(opts["max_message"])
        self.max_header = int(opts["max_header"])
        origins = opts["origins"]
        self.origins: frozenset[str] | None = None if origins is None else frozenset(origins)
        self.ping_interval = float(opts["ping_interval"])
        if self.ping_interval and self.ping_interval >= self.idle_timeout:
            raise ValueError("ping_interval must be shorter than idle_timeout")
        self.close_timeout = float(opts["close_timeout"])
        self.files = _load_static(opts["http_root"])
        self.refused = 0
        self.closing: dict[int, _WsClient] = {}  # close handshakes running
        tick = min(self.ping_interval or self.close_timeout, self.close_timeout) / 4
        self.tick = max(tick, 0.05)
        self.timeout(self.tick, self._ws_tick)

    def new_client(self, sid: int, addr: tuple[str, int]) -> Client:
        return _WsClient(sid, addr, self.now(), self.max_header)

    def idle_what(self, c: Client) -> str:
        assert isinstance(c, _WsClient)
        if c.ws is None:
            return "no handshake"
        return "partial message" if c.parts else "no message or pong"

    @expose
    def stat(self) -> dict[str, int]:
        """Clients, paused clients, connections over the limit, handshakes refused."""
        return {**super().stat(), "refused": self.refused}

    def on_stop(self) -> None:
        for c in list(self.clients.values()):
            self.hangup(c.sid, 1001, "going away", False)  # the close frame, then the socket
        super().on_stop()

    # -- closing --------------------------------------------------------------------------

    def hangup(self, sock_id: int, code: int, reason: str, force: bool) -> None:
        """Close a client: with an open WebSocket, the close handshake (bounded by
        ``close_timeout``); before the handshake, the socket."""
        c = self.clients.get(sock_id)
        if not isinstance(c, _WsClient) or c.ws is None or c.ws.state is not ConnectionState.OPEN:
            super().hangup(sock_id, code, reason, force)
            return
        c.closing = True
        c.pending.clear()
        c.parts.clear()
        self.socket_write(sock_id, c.ws.send(CloseConnection(code=code, reason=reason)))
        c.close_by = self.now() + self.close_timeout
        self.closing[sock_id] = c
        if c.paused:  # its answering close frame must be read
            self._resume_client(c)

    def on_socket_close(self, sock_id: int, reason: str) -> None:
        self.closing.pop(sock_id, None)
        super().on_socket_close(sock_id, reason)

    # -- bytes in -------------------------------------------------------------------------

    def on_socket_data(self, sock_id: int, data: bytes) -> None:
        c = self.clients.get(sock_id)
        if not isinstance(c, _WsClient):
            return  # closed by us; a few chunks may still have been on their way
        if c.ws is None:
            if not c.closing:
                self._request(c, data)
            return
        self._frames(c, data)

    def _frames(self, c: _WsClient, data: bytes) -> None:
        ws = c.ws
        assert ws is not None
        if ws.state is ConnectionState.CLOSED:
            return  # the close handshake is over; the socket is closing
        ws.receive_data(data)
        messages: list[Any] = []
        for event in ws.events():
            if isinstance(event, Message):
                if c.closing:
                    continue  # after our close frame: read and drop
                d = event.data
                c.size += len(d) if isinstance(d, bytes | bytearray) else len(d.encode())
                if c.size > self.max_message:
                    self._bad(c.sid, c.addr, f"message over max_message {self.max_message}"
                              " bytes", 1009)
                    continue
                c.parts.append(d)
                if event.message_finished:
                    first = c.parts[0]
                    joined = "".join(c.parts) if isinstance(first, str) else b"".join(c.parts)
                    messages.append(joined)
                    c.parts, c.size = [], 0
            elif isinstance(event, Ping):
                c.last_seen = self.now()
                if ws.state is ConnectionState.OPEN:
                    self.socket_write(c.sid, ws.send(event.response()))
            elif isinstance(event, Pong):
                c.last_seen = self.now()
            elif isinstance(event, CloseConnection):
                self._closed_by_peer(c, event)
                break
        self.deliver(c, messages)

    def _closed_by_peer(self, c: _WsClient, event: CloseConnection) -> None:
        ws = c.ws
        assert ws is not None
        if ws.state is ConnectionState.REMOTE_CLOSING:  # the client closes: answer, then go
            c.why = f"close {event.code}"
            c.closing = True
            self.socket_write(c.sid, ws.send(event.response()))
            self.socket_close(c.sid)  # after what is queued: bounded like our own close
            c.close_by = self.now() + self.close_timeout
            self.closing[c.sid] = c
        elif ws.state is ConnectionState.CLOSED:  # the answer to our close frame
            self.socket_close(c.sid)
        else:  # still OPEN: wsproto found a protocol error and says which close code
            self._bad(c.sid, c.addr, f"protocol error: {event.reason}", event.code)

    # -- the handshake (plain HTTP until accepted) ------------------------------------------

    def _request(self, c: _WsClient, data: bytes) -> None:
        conn = c.http
        assert conn is not None
        c.size += len(data)  # h11 bounds only a head still incomplete: bound them all
        if c.size > self.max_header:
            self._refuse(c, 431, f"request head over max_header {self.max_header} bytes")
            return
        conn.receive_data(data)
        try:
            req = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._refuse(c, exc.error_status_hint, f"bad HTTP request: {exc}")
            return
        if req is h11.NEED_DATA:
            return
        if not isinstance(req, h11.Request):
            self._refuse(c, 400, f"unexpected {type(req).__name__}")
            return
        headers = dict(req.headers)  # h11 lower-cases the names
        if b"upgrade" not in headers:
            self._plain_http(c, req)
            return
        origin = headers.get(b"origin", b"").decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        if not self._origin_ok(origin, host):
            self._refuse(c, 403, f"origin {origin or '(none)'} not allowed")
            return
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(list(req.headers), req.target)
            upgrade = next(ws.events())
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            self._log_refusal(c, f"bad WebSocket upgrade: {exc}")
            if isinstance(hint, RejectConnection):
                self.socket_write(c.sid, ws.send(hint))
            super().hangup(c.sid, 400, "", False)
            return
        assert isinstance(upgrade, Request)
        self.socket_write(c.sid, ws.send(AcceptConnection()))
        trailing = conn.trailing_data[0]  # frames a client sent without waiting for the 101
        c.http, c.ws, c.size = None, ws, 0
        c.last_seen = c.last_ping = self.now()
        self.fork(self.spawn, c)
        if trailing:
            self._frames(c, trailing)

    def _origin_ok(self, origin: str, host: str) -> bool:
        if self.origins is None:
            return True
        if origin in self.origins:
            return True
        return "same-origin" in self.origins and bool(origin) and (
            urlsplit(origin).netloc.lower() == host.lower()
        )

    def _plain_http(self, c: _WsClient, req: h11.Request) -> None:
        """Answer a request that is not an upgrade: a static file, 404, 405 or 426."""
        path = req.target.decode("latin-1").split("?", 1)[0]
        name = "index.html" if path == "/" else path[1:]
        if self.files is None:
            self._refuse(c, 426, "not a WebSocket upgrade", [(b"upgrade", b"websocket")])
            return
        if req.method not in (b"GET", b"HEAD"):
            self._refuse(c, 405, f"method {req.method.decode('latin-1')}")
            return
        found = self.files.get(name)
        if found is None:
            self._refuse(c, 404, f"no file {path[:100]}")
            return
        body, ctype = found
        self._respond(c, 200, [(b"content-type", ctype)], b"" if req.method == b"HEAD" else body,
                      len(body))
        super().hangup(c.sid, 200, "", False)

    def _refuse(self, c: _WsClient, status: int, why: str,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self._log_refusal(c, why)
        self._respond(c, status, [(b"content-type", b"text/plain"), *(headers or [])],
                      f"{status} {http.HTTPStatus(status).phrase}\n".encode())
        super().hangup(c.sid, status, why, False)

    def _log_refusal(self, c: _WsClient, why: str) -> None:
        self.refused += 1
        self.log(f"refusing client {c.addr[0]}:{c.addr[1]} (socket {c.sid}): {why}", "warning")

    def _respond(self, c: _WsClient, status: int, headers: list[tuple[bytes, bytes]],
                 body: bytes, length: int | None = None) -> None:
        conn = c.http
        assert conn is not None
        n = len(body) if length is None else length
        head = [*headers, (b"content-length", str(n).encode()), (b"connection", b"close"),
                (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]
        reason = http.HTTPStatus(status).phrase.encode()
        try:
            out = conn.send(h11.Response(status_code=status, headers=head, reason=reason)) or b""
            if body:
                out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # h11 cannot answer in this state: just close
            return
        self.socket_write(c.sid, out)

    # -- keepalive and close deadlines --------------------------------------------------------

    def _ws_tick(self) -> None:
        now = self.now()
        for sid, closing in list(self.closing.items()):
            if now >= closing.close_by:  # no answering close frame: close the TCP connection
                del self.closing[sid]
                self.socket_close(sid, force=True)
        if self.ping_interval:
            quiet = now - self.ping_interval
            for c in self.clients.values():
                if (isinstance(c, _WsClient) and c.ws is not None and not c.closing
                        and c.last_seen <= quiet and c.last_ping <= quiet
                        and c.ws.state is ConnectionState.OPEN):
                    c.last_ping = now
                    self.socket_write(c.sid, c.ws.send(Ping(payload=b"skymesh")))
        self.timeout(self.tick, self._ws_tick)


def _load_static(root: str | None) -> dict[str, tuple[bytes, bytes]] | None:
    """The files directly in ``root`` (name -> (body, content type)), read once.

    Only these names are ever served, so no request path reaches the file system.
    Raises ``ValueError`` if ``root`` is not a directory.
    """
    if root is None:
        return None
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"http_root {root} is not a directory")
    files: dict[str, tuple[bytes, bytes]] = {}
    for p in sorted(base.iterdir()):
        if p.is_file() and _STATIC_NAME.fullmatch(p.name):
            ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype == "application/javascript":
                ctype += "; charset=utf-8"
            files[p.name] = (p.read_bytes(), ctype.encode())
    return files
