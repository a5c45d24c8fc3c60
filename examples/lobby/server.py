"""The lobby's services: ``Lobby`` (starts everything), ``Room`` hosts, ``Player`` agents.

Cluster-ready by construction: players find room hosts through the service
group ``lobby.rooms`` (consistent hashing on the room name, so every node
picks the same host for a room), nicknames are global names ``nick.<nick>``
taken under the cluster lock ``nick:<nick>``, and everything else is
messages between handles. Nothing assumes the peers share a node.

Client protocol, one command per frame (2-byte length framing), per line
(text port) or per WebSocket text message (web port, which also serves the
page in ``web/`` at ``/``): ``login <nick>``, ``join <room>``, ``say
<text>``, ``who``, ``leave``, ``quit``. Answers are ``ok ...`` or ``error
...``; chat arrives as ``<room> <nick>: <text>``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from node import CallFailed, LockTimeout, NameTaken, Service, expose, group
from node.builtins import Agent, Gate, WsGate

ROOMS_GROUP = "lobby.rooms"
MAX_NICK = 24
WEB_ROOT = Path(__file__).resolve().parent / "web"  # index.html, lobby.js, lobby.css


SHOUT_CHANNEL = "lobby.shout"


class Room(Service):
    """Hosts every room whose name hashes to it in the group ``lobby.rooms``."""

    async def on_start(self) -> None:
        self.rooms: dict[str, dict[int, str]] = {}  # room -> {player handle: nick}
        await self.join_group(ROOMS_GROUP)

    @expose
    def join(self, room: str, player: int, nick: str) -> tuple[int, list[str]]:
        """Add ``player``; returns (this host's handle, the nicks now in the room)."""
        members = self.rooms.setdefault(room, {})
        for other in members:
            self.send(other, "deliver", f"{room} * {nick} joined")
        members[player] = nick
        self.monitor(player)  # a player killed, or on a node that died, is dropped (on_down)
        return self.handle, sorted(members.values())

    @expose
    def leave(self, room: str, player: int) -> None:
        """Remove ``player``; the others are told."""
        if not any(player in m for r, m in self.rooms.items() if r != room):
            self.demonitor(player)
        members = self.rooms.get(room, {})
        nick = members.pop(player, None)
        if nick is None:
            return
        for other in members:
            self.send(other, "deliver", f"{room} * {nick} left")
        if not members:
            del self.rooms[room]

    def on_down(self, handle: int, reason: str) -> None:
        for room in [r for r, m in self.rooms.items() if handle in m]:
            self.leave(room, handle)

    @expose
    def say(self, room: str, player: int, text: str) -> int:
        """Broadcast ``text`` from ``player``; returns how many got it."""
        members = self.rooms.get(room, {})
        nick = members.get(player)
        if nick is None:
            raise PermissionError(f"not in room {room}")
        line = f"{room} {nick}: {text}"
        for other in members:
            self.send(other, "deliver", line)  # dead players' sends are dropped, never raise
        return len(members)

    @expose
    def who(self, room: str) -> list[str]:
        """Nicks in ``room``."""
        return sorted(self.rooms.get(room, {}).values())


class Player(Agent):
    """One connected client: parses commands, holds its nick and room."""

    def on_connect(self) -> None:
        self.nick: str | None = None
        self.room: str | None = None
        self.room_host = 0
        self.send_client("ok welcome: login <nick>")

    async def on_client(self, data: bytes | str) -> None:
        # bytes from the TCP gates (garbage -> UnicodeError: dropped), str from the web
        text = data if isinstance(data, str) else data.decode("utf-8")
        words = text.strip().split(" ", 1)
        cmd, arg = words[0], (words[1].strip() if len(words) > 1 else "")
        async with self.critical():  # one command at a time, answers in order
            try:
                answer = await self._command(cmd, arg)
            except (CallFailed, LockTimeout, PermissionError, ValueError) as exc:
                answer = f"error {exc}"
            self.send_client(answer)  # str: UTF-8 on TCP, a text message on WebSocket

    async def _command(self, cmd: str, arg: str) -> str:
        if cmd == "login":
            return await self._login(arg)
        if cmd == "quit":
            self.close_client()
            return "ok bye"
        if self.nick is None:
            raise PermissionError("login first")
        if cmd == "shout":
            # Lobby-wide chat through a channel: every logged-in player on every node.
            self.publish(SHOUT_CHANNEL, f"{self.nick} shouts: {arg}")
            return "ok shouted"
        if cmd == "join":
            if not arg.isidentifier():
                raise ValueError("room names are identifiers")
            await self._leave()
            self.room_host, nicks = await self.call(group(ROOMS_GROUP, key=arg), "join",
                                                    arg, self.handle, self.nick)
            self.room = arg
            return f"ok joined {arg}: {' '.join(nicks)}"
        if self.room is None:
            raise PermissionError("join a room first")
        if cmd == "say":
            n = await self.call(self.room_host, "say", self.room, self.handle, arg)
            return f"ok said to {n}"
        if cmd == "who":
            return "ok " + " ".join(await self.call(self.room_host, "who", self.room))
        if cmd == "leave":
            await self._leave()
            return "ok left"
        raise ValueError(f"unknown command {cmd!r}")

    async def _login(self, nick: str) -> str:
        if self.nick is not None:
            raise PermissionError(f"already logged in as {self.nick}")
        if not nick.isidentifier() or len(nick) > MAX_NICK:
            raise ValueError("nicknames are identifiers of at most 24 characters")
        # The lock makes check-then-register one step cluster-wide; the name then
        # holds the nick for as long as this agent lives (it dies with the client).
        async with self.lock(f"nick:{nick}", ttl=5, wait=2):
            if await self.query(f"nick.{nick}") is not None:
                raise PermissionError(f"nick {nick} is taken")
            try:
                await self.register(f"nick.{nick}")
            except NameTaken:
                raise PermissionError(f"nick {nick} is taken") from None
        self.nick = nick
        self.subscribe(SHOUT_CHANNEL)
        return f"ok hello {nick}"

    async def _leave(self) -> None:
        if self.room is not None:
            room, self.room = self.room, None
            await self.call(self.room_host, "leave", room, self.handle)

    def on_channel(self, channel: str, source: int, payload: str) -> None:
        self.send_client(f"* {payload}")

    @expose
    def deliver(self, line: str) -> None:
        """A chat line for this client (from a Room)."""
        self.send_client(line)

    async def on_disconnect(self, reason: str) -> None:
        with contextlib.suppress(CallFailed):  # the room host is gone too: nothing to leave
            await self._leave()


class Lobby(Service):
    """Starts ``rooms`` Room hosts and the gates for Players: length-framed and text
    TCP, and with ``web_port`` a WebSocket gate that also serves the web page.

    Run one per node: clients of any node meet in the same rooms and share one
    nickname space. ``web_options`` are added to the WebSocket gate's options
    (``tls_cert``/``tls_key`` for https and wss, ``origins``, ...); by default
    it takes WebSocket connections only from pages of its own origin.
    """

    async def on_start(self, port: int = 0, text_port: int = 0, rooms: int = 2,
                       host: str = "127.0.0.1", web_port: int | None = None,
                       web_options: dict[str, Any] | None = None) -> None:
        self.hosts = [await self.newservice(Room) for _ in range(rooms)]
        opts: dict[str, Any] = {"max_frame": 1024, "idle_timeout": 300.0}
        self.gate = await self.newservice(Gate, Player, host, port, opts)
        self.text_gate = await self.newservice(Gate, Player, host, text_port,
                                               dict(opts, framing="line"))
        self.web_gate = 0
        if web_port is not None:
            web: dict[str, Any] = {"max_message": 1024, "idle_timeout": 300.0,
                                   "origins": ["same-origin"], "http_root": str(WEB_ROOT)}
            self.web_gate = await self.newservice(WsGate, Player, host, web_port,
                                                  {**web, **(web_options or {})})
        await self.register(".lobby")  # node-local: every node may run its own front door

    @expose
    async def ports(self) -> dict[str, int]:
        """``{"binary": port, "text": port}``, and ``"web"`` with a web gate."""
        binary = await self.call(self.gate, "address")
        text = await self.call(self.text_gate, "address")
        out = {"binary": binary[1], "text": text[1]}
        if self.web_gate:
            out["web"] = (await self.call(self.web_gate, "address"))[1]
        return out
