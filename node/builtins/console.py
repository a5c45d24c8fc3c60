"""``.console``: the debug console, a text line protocol over TCP on loopback.

A :class:`~node.builtins.gate.Gate` in line framing whose agents run commands; every
answer ends with ``<CMD OK>`` or ``<CMD Error> reason`` (skynet's debug
console), so scripts know where it stops. With a token the first line must
be ``auth <token>``. Try it with ``nc 127.0.0.1 <port>`` or ``skymesh console``.

Commands: ``help``, ``list``, ``stat``, ``mem``, ``info <h>``, ``kill <h>``,
``ping <h>``, ``interrupt <h>``, ``gc``, ``names``, ``groups``, ``locks``,
``nodes``, ``call <dest> <method> [arg ...]`` (each arg JSON, else a string),
``status`` (one JSON line: the node as ``skymesh status`` shows it),
``health`` (coordination session, workers and harbor answer: ``builtins/health.py``),
``reload [--timeout s] <module>`` (live reload on this node), ``quit``.
``<h>`` is ``:0000000100000005``, ``0x100000005``, a decimal handle or a name.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import secrets
import shlex
import sys
import time
from typing import Any

from ..address import format_handle
from ..config import is_loopback
from ..errors import CallError, CallFailed, ReloadError
from ..node import Node
from ..service import expose
from .gate import Agent, Gate

__all__ = [
    "Console", "ConsoleAgent", "client_proof", "is_loopback", "parse_dest", "server_proof",
    "start_console",
]

OK, ERR = "<CMD OK>", "<CMD Error>"
HELP = (
    ("list", "every service: address, class, state, mailbox, messages, cpu"),
    ("stat", "node figures: services, drops, workers, timers, sockets, messages/s"),
    ("mem", "process memory and garbage collector figures"),
    ("info <h>", "one service: stats, names, where its coroutines wait"),
    ("kill <h>", "end a service"),
    ("ping <h>", "round trip to a service"),
    ("interrupt <h>", "raise Interrupted in the handler a service runs now"),
    ("gc", "run the garbage collector"),
    ("names", "local and global names"),
    ("groups", "service groups and their members"),
    ("locks", "cluster locks held by this node's coroutines"),
    ("nodes", "cluster members, master and epoch"),
    ("reload-keys", "re-read keys_dir: a removed node key cuts that node off"),
    ("call [--timeout s] <dest> <method> [arg ...]", "call a service; args JSON, else strings"),
    ("status", "everything above as one JSON line (skymesh status)"),
    ("health", "coordination connected, workers and harbor answer (skymesh health)"),
    ("hello <nonce>", "first line when the console has a token (skymesh console does it)"),
    ("reload [--timeout s] <module>", "re-import a module, swap its services' classes"),
    ("quit", "close this session"),
)
RATE_EVERY = 1.0  # seconds between samples of messages handled
AUTH_DEADLINE = 5.0  # seconds a session may take to authenticate


def server_proof(token: str, client_nonce: str, server_nonce: str) -> str:
    """What the console shows to prove it holds ``token``."""
    msg = f"skymesh-console-server:{client_nonce}:{server_nonce}".encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def client_proof(token: str, client_nonce: str, server_nonce: str) -> str:
    """What a client shows to prove it holds ``token``."""
    msg = f"skymesh-console-client:{client_nonce}:{server_nonce}".encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def start_console(node: Node, port: int, token: str | None = None, host: str = "127.0.0.1") -> int:
    """Start ``.console`` on ``host:port`` (``port=0``: any free port) and return its handle.

    Call from a plain thread (it blocks until the console listens). Raises
    ``ServiceStartError`` if it cannot listen. The bound port:
    ``node.call(handle, "address")``.
    """
    handle: int = node.newservice(Console, host, port, token, name=".console")
    return handle


def parse_dest(text: str) -> int | str:
    """A handle from ``:hex``, ``0xhex`` or decimal text; anything else is a name.

    >>> parse_dest(":0000000100000005"), parse_dest("12"), parse_dest(".logger")
    (4294967301, 12, '.logger')
    """
    if text.startswith(":"):
        return int(text[1:], 16)
    if text.lower().startswith("0x"):
        return int(text, 16)
    if text.isdigit():
        return int(text)
    return text


def _arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class Console(Gate):
    """The console's listener: a line-framed gate with :class:`ConsoleAgent` agents."""

    def on_start(  # type: ignore[override]  # a gate whose agent and options are fixed
        self, host: str = "127.0.0.1", port: int = 0, token: str | None = None
    ) -> None:
        if not token and not is_loopback(host):
            raise PermissionError(
                f"the console binds {host} without a token: set console_token_file "
                "(or keys_dir), or bind it to 127.0.0.1"
            )
        # 32 sessions, 8 per address; a session that has not authenticated within
        # AUTH_DEADLINE seconds is closed, so idle sockets cannot lock operators out.
        opts = {"framing": "line", "max_frame": 4096, "max_clients": 32,
                "max_per_address": 8, "idle_timeout": 3600.0,
                "agent_args": [token, is_loopback(host)]}
        super().on_start(ConsoleAgent, host, port, opts)
        self.rate = 0.0
        self.seen: dict[int, int] = {}
        self.timeout(RATE_EVERY, self._sample)

    def _sample(self) -> None:
        # Messages handled since the last sample, over live services (ended ones drop out).
        counts = {s["handle"]: s["messages"] for s in Node.of(self).services()}
        done = sum(max(0, n - self.seen.get(h, n)) for h, n in counts.items())
        self.seen = counts
        self.rate = done / RATE_EVERY
        self.timeout(RATE_EVERY, self._sample)

    @expose
    def messages_per_second(self) -> float:
        """Messages handled by every service of the node over the last second."""
        return self.rate


class ConsoleAgent(Agent):
    """One console session: parses a line, runs the command, writes the answer."""

    def on_connect(self, token: str | None = None, loopback: bool = True) -> None:
        self.token = token
        self.authed = token is None
        self.plain_auth = loopback  # "auth <token>" only on a loopback console
        self.nonces: tuple[str, str] | None = None
        self.token_failed = False
        self.quitting = False
        if not self.authed:
            self.timeout(AUTH_DEADLINE, self._auth_deadline)

    def _auth_deadline(self) -> None:
        if not self.authed:
            self.close_client()

    async def on_client(self, data: bytes) -> None:
        line = data.decode("utf-8", "replace").strip()
        if not line:
            return
        async with self.critical():  # answers leave in the order commands came
            try:
                out = await self._run(line)
            except Exception as exc:
                self.send_client(f"{ERR} {type(exc).__name__}: {exc}".encode())
                if self.token_failed:
                    self.close_client()  # after the answer: close flushes what was written
                return
            text = "\n".join([*out, OK]) if out else OK
            self.send_client(text.encode())
            if self.quitting:
                self.close_client()

    def _check_auth(self, words: list[str]) -> list[str] | None:
        """Mutual proof of the token, which never crosses the wire: the client sends
        ``hello <nonce>``, the console answers ``proof <nonce> <hmac>`` (so the client
        knows it reached a console holding the token) and the client then sends
        ``prove <hmac>``. On a loopback console ``auth <token>`` also works (nc)."""
        if self.authed:
            return None
        token = self.token
        assert token is not None
        if words[0] == "hello" and len(words) == 2 and self.nonces is None:
            server_nonce = secrets.token_hex(16)
            self.nonces = (words[1][:64], server_nonce)
            return [f"proof {server_nonce} {server_proof(token, *self.nonces)}"]
        if words[0] == "prove" and len(words) == 2 and self.nonces is not None:
            if hmac.compare_digest(words[1], client_proof(token, *self.nonces)):
                self.authed = True
                return []
            self.token_failed = True
            raise PermissionError("bad token")
        if words[0] == "auth" and len(words) == 2 and self.plain_auth:
            if hmac.compare_digest(words[1].encode(), token.encode()):
                self.authed = True
                return []
            self.token_failed = True
            raise PermissionError("bad token")
        raise PermissionError("hello <nonce> required (skymesh console authenticates)")

    async def _run(self, line: str) -> list[str]:
        words = shlex.split(line)
        auth = self._check_auth(words)
        if auth is not None:
            return auth
        cmd, args = words[0].lower(), words[1:]
        node = Node.of(self)
        if cmd == "help":
            return [f"{usage:<34} {what}" for usage, what in HELP]
        if cmd == "quit":
            self.quitting = True
            return ["bye"]
        if cmd == "list":
            return [_service_line(s) for s in node.services()]
        if cmd == "stat":
            stats = dict(node.stats(), **node.sockets_stats(),
                         messages_per_second=await self._rate())
            return [f"{k}: {v}" for k, v in stats.items()]
        if cmd == "mem":
            return _mem()
        if cmd == "gc":
            before = len(gc.get_objects())
            freed = gc.collect()
            return [f"collected {freed} unreachable objects; {before} -> {len(gc.get_objects())}"]
        if cmd in ("info", "kill", "ping", "interrupt"):
            if len(args) != 1:
                raise ValueError(f"usage: {cmd} <handle or name>")
            return await self._on_service(cmd, parse_dest(args[0]))
        if cmd == "names":
            local = [f"{n} {format_handle(h)} (local)"
                     for n, h in sorted(node.local_names().items())]
            glob = [f"{n} {format_handle(h)}" for n, h in sorted(node.coord.names().items())]
            return local + glob
        if cmd == "groups":
            return [f"{g}: {' '.join(format_handle(h) for h in members)}"
                    for g, members in sorted(node.coord.groups().items())]
        if cmd == "locks":
            return [f"{held.key} fence={held.fence} backend={held.backend} "
                    f"held by {format_handle(h)}" for h, held in node.held_locks() if held.valid]
        if cmd == "reload-keys":
            done = node.reload_keys()
            return ["keys reloaded" if done else "no keys_dir: nothing to reload"]
        if cmd == "nodes":
            master, epoch = node.coord.master()
            lines = [f"master {master} epoch {epoch}"]
            for nid, info in sorted(node.coord.members().items()):
                eps = " ".join(f"{k}={v}" for k, v in sorted(info.endpoints.items()))
                lines.append(f"node {nid} host={info.host} pid={info.pid} {eps}".rstrip())
            return lines
        if cmd == "call":
            timeout = None
            if args[:1] == ["--timeout"] and len(args) > 1:
                timeout, args = float(args[1]), args[2:]
            if len(args) < 2:
                raise ValueError("usage: call [--timeout SECONDS] <dest> <method> [arg ...]")
            dest, method = parse_dest(args[0]), args[1]
            result = await self.call(dest, method, *map(_arg, args[2:]), timeout=timeout)
            return [json.dumps(result, default=repr)]
        if cmd == "status":
            return [json.dumps(await self._status(), default=repr)]
        if cmd == "reload":
            return await self._reload_command(node, args)
        if cmd == "health":
            from .health import check

            return await check(self)
        raise ValueError(f"unknown command {cmd!r} (try help)")

    async def _reload_command(self, node: Node, args: list[str]) -> list[str]:
        """Live reload on this node only: the CLI asks each node's console in turn, so a
        reload never travels as a cluster message. The import and the wait for the
        swaps run on the offload pool, never blocking a worker."""
        timeout = 10.0
        if args[:1] == ["--timeout"] and len(args) > 1:
            timeout, args = float(args[1]), args[2:]
        if len(args) != 1 or not all(p.isidentifier() for p in args[0].split(".")):
            raise ValueError("usage: reload [--timeout SECONDS] <module>")
        failed: str | None
        lines: list[str]
        failed, lines = await self.offload(_reload_on, node, args[0], timeout)
        if failed is not None:
            raise ReloadError(failed)  # one line: why, and that the old code runs on
        return lines

    async def _rate(self) -> float:
        rate: float = await self.call(self.gate, "messages_per_second", timeout=5)
        return rate

    async def _on_service(self, cmd: str, dest: int | str) -> list[str]:
        node = Node.of(self)
        handle = node.resolve(dest)
        if cmd == "kill":
            return [f"killed {format_handle(handle)}" if node.kill(handle) else "no such service"]
        if cmd == "interrupt":
            done = node.interrupt(handle)
            return [f"interrupted {format_handle(handle)}" if done else "not running a handler"]
        if cmd == "ping":
            t0 = time.perf_counter()
            try:
                await self.call(handle, "__ping__", timeout=5)
            except CallError as exc:  # it answered: "no handler" proves it dispatches
                if exc.remote_type != "NoHandler":
                    raise
            return [f"{format_handle(handle)} alive: {(time.perf_counter() - t0) * 1000:.3f} ms"]
        entry = next((s for s in node.services() if s["handle"] == handle), None)
        if entry is None:
            raise ValueError(f"no service {format_handle(handle)} on this node")
        names, waits = entry.pop("names"), entry.pop("waiting_in")
        lines = [f"{k}: {v}" for k, v in entry.items()]
        lines.append(f"names: {' '.join(names) or '-'}")
        lines.append(f"suspended in: {', '.join(waits) or '-'}")
        return lines

    async def _status(self) -> dict[str, Any]:
        node = Node.of(self)
        master, epoch = node.coord.master()
        try:
            rate = await self._rate()
        except CallFailed:
            rate = 0.0
        return {
            "node": node.node_id,
            "master": master,
            "epoch": epoch,
            "members": {str(i): dict(m.endpoints) for i, m in node.coord.members().items()},
            "names": {n: format_handle(h) for n, h in node.coord.names().items()},
            "local_names": {n: format_handle(h) for n, h in node.local_names().items()},
            "groups": {g: [format_handle(h) for h in m] for g, m in node.coord.groups().items()},
            "services": node.services(),
            "messages_per_second": rate,
            "stats": node.stats(),
        }


def _reload_on(node: Node, module: str, timeout: float) -> tuple[str | None, list[str]]:
    """On an offload thread: (why it failed or None, the report's lines)."""
    try:
        return None, node.reload(module, timeout).lines()
    except ReloadError as exc:
        return str(exc), []


def _service_line(s: dict[str, Any]) -> str:
    return (f"{s['address']} {s['class']} {s['state']} mailbox={s['mailbox']} "
            f"messages={s['messages']} cpu={s['cpu']:.3f}s pending={s['pending_calls']}")


def _mem() -> list[str]:
    lines = []
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            lines += [x.strip() for x in f if x.startswith(("VmRSS", "VmHWM", "VmSize"))]
    except OSError:  # not Linux: the peak is what the platform offers
        import resource

        lines.append(f"maxrss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
    lines.append(f"python blocks: {sys.getallocatedblocks()}")
    lines.append(f"gc counts: {gc.get_count()} objects tracked: {len(gc.get_objects())}")
    return lines
