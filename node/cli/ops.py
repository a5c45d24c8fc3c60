"""Operator subcommands of the ``skymesh`` CLI: health, console, call, status, reload.

``console``, ``call`` and ``status`` talk to a node's ``.console`` (see
``node/builtins/console.py``): ``--host``/``--port``/``--token-file``, or ``--config``
for the node's ``console_port``/``console_token_file`` (``SKYMESH_*`` apply); the
token is never taken from argv, nor sent: the console proves it holds it first. For a
cluster (the config names ZooKeeper), ``status`` lists the members from
ZooKeeper and asks each one's console, advertised in its membership
endpoints under ``"console"``.

Exit status: 0 done, 1 the command failed or a node did not answer, 2 bad usage.
"""

from __future__ import annotations

import argparse
import hmac
import json
import secrets
import shlex
import socket
import sys
from pathlib import Path
from typing import Any, cast

from ..builtins.console import client_proof, server_proof

__all__ = ["ConsoleClient", "add_commands", "console_token", "run"]

EXIT_FAIL, EXIT_USAGE = 1, 2


def add_commands(sub: Any) -> None:
    """Add the operator subcommands to the ``skymesh`` parser's subparsers."""
    from . import cluster as cli_cluster
    from . import keys as cli_keys

    cli_cluster.add_commands(sub)
    cli_keys.add_commands(sub)

    c = sub.add_parser("console", help="the debug console of a node (interactive or -c CMD)")
    _console_args(c)
    c.add_argument("-c", "--command", dest="one_shot", help="run one command, print, exit")

    k = sub.add_parser("call", help="call <dest> <method> [json args...] through a console")
    _console_args(k)
    k.add_argument("dest", help="handle (:hex, 0xhex, decimal) or name")
    k.add_argument("method")
    k.add_argument("args", nargs="*", help="each parsed as JSON, else taken as a string")

    s = sub.add_parser("status", help="nodes, master, names, groups, services, mailboxes")
    _console_args(s)
    s.add_argument("--json", action="store_true", help="one JSON document")

    r = sub.add_parser("reload", help="live reload: re-import MODULE on every node's console")
    _console_args(r)
    r.add_argument("module", help="the dotted module name, as the nodes imported it")
    r.add_argument("--node", type=int, action="append", dest="nodes", metavar="N",
                   help="only node N (repeatable; needs a cluster config)")


def _console_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the node's TOML config (console_port, console_token)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="console port (default: the config's)")
    p.add_argument("--token-file", help="file holding the console token (default: the config's)")
    p.add_argument("--timeout", type=float, default=10.0)


def run(args: argparse.Namespace) -> int:
    """Run an operator subcommand; returns the exit status."""
    from . import cluster as cli_cluster

    done = cli_cluster.run(args, local_health=_local_health)
    if done is None:
        from . import keys as cli_keys

        done = cli_keys.run(args)
    if done is not None:
        return done
    if args.command in ("console", "call", "status", "reload"):
        try:
            return _with_console(args)
        except _UsageError as exc:
            print(f"skymesh: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(f"skymesh: console unreachable: {exc}", file=sys.stderr)
            return EXIT_FAIL
    print(f"skymesh: unknown command {args.command}", file=sys.stderr)
    return EXIT_USAGE


class _UsageError(Exception):
    pass


class ConsoleClient:
    """A blocking client of a node's ``.console``.

    Raises ``OSError`` when unreachable and ``PermissionError`` for a bad token.

    Example::

        with ConsoleClient("127.0.0.1", 7001) as c:
            ok, lines = c.command("list")
    """

    def __init__(
        self, host: str, port: int, token: str | None = None, timeout: float = 10.0
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        if token is not None:
            try:
                self._authenticate(token)
            except BaseException:
                self.close()
                raise

    def _authenticate(self, token: str) -> None:
        """The console proves it holds the token first; the token itself never goes."""
        nonce = secrets.token_hex(16)
        ok, lines = self.command(f"hello {nonce}")
        words = lines[0].split() if ok and lines else []
        if len(words) != 3 or words[0] != "proof" or not hmac.compare_digest(
            words[2], server_proof(token, nonce, words[1])
        ):
            raise PermissionError("the console did not prove it holds the token: not ours")
        ok, lines = self.command(f"prove {client_proof(token, nonce, words[1])}")
        if not ok:
            raise PermissionError(lines[-1] if lines else "bad token")

    def command(self, line: str) -> tuple[bool, list[str]]:
        """Send one command line; return (ok, answer lines). On error the last line says why."""
        self.sock.sendall(line.encode() + b"\n")
        out: list[str] = []
        while True:
            raw = self.file.readline()
            if not raw:
                raise ConnectionError("console closed the connection")
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text == "<CMD OK>":
                return True, out
            if text.startswith("<CMD Error>"):
                out.append(text[len("<CMD Error>"):].strip())
                return False, out
            out.append(text)

    def close(self) -> None:
        """Close the connection."""
        self.file.close()
        self.sock.close()

    def __enter__(self) -> ConsoleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _settings(args: argparse.Namespace) -> tuple[Any, int | None, str | None]:
    """(config or None, port, token) from the flags, then the config."""
    cfg = None
    if args.config is not None or args.port is None:
        from ..config import load_config
        from ..errors import ConfigError

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise _UsageError(f"config error: {exc}") from exc
    port = args.port if args.port is not None else getattr(cfg, "console_port", None)
    token = console_token(cfg) if cfg is not None else None
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _UsageError(f"cannot read the token file: {exc}") from exc
    return cfg, port, token


def console_token(cfg: Any) -> str | None:
    """The console token a node config implies: ``console_token(_file)``, else the one in
    ``keys_dir`` (the node itself takes it from there), else None.

    Raises ``OSError`` (naming the file) if ``keys_dir/console.token`` exists but
    cannot be read.
    """
    if cfg.console_token is not None or cfg.keys_dir is None:
        return cast(str | None, cfg.console_token)
    path = Path(cfg.keys_dir) / "console.token"
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OSError(f"cannot read the console token {path}: {exc.strerror}") from exc


def _local_health(cfg: Any, timeout: float) -> str | None:
    """Run ``health`` on this node's console (loopback); None if it said ok, else why not."""
    try:
        token = console_token(cfg)
        with ConsoleClient("127.0.0.1", cfg.console_port, token, timeout) as console:
            ok, lines = console.command("health")
    except PermissionError as exc:
        return f"the console refused us: {exc}"
    except TimeoutError:
        return f"the node's console did not answer within {timeout:g}s"
    except OSError as exc:
        return f"the node's console is unreachable: {exc}"
    if not ok:
        return lines[-1] if lines else "the console's health check failed"
    return None


def _with_console(args: argparse.Namespace) -> int:
    cfg, port, token = _settings(args)
    if args.command == "status" and cfg is not None and cfg.zk_hosts and args.port is None:
        return _cluster_status(args, cfg, token)
    if args.command == "reload":
        return _reload(args, cfg, port, token)
    if port is None:
        raise _UsageError("no console port: pass --port or a config with console_port")
    with ConsoleClient(args.host, port, token, args.timeout) as c:
        if args.command == "call":
            # The node's side of the call ends first (0.8 of --timeout), so the whole
            # operation, socket included, is bounded by --timeout and says why it failed.
            inner = f"{max(args.timeout * 0.8, 0.01):.3f}"
            words = ["call", "--timeout", inner, args.dest, args.method, *args.args]
            line = " ".join(shlex.quote(w) for w in words)
            ok, lines = c.command(line)
            print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
            return 0 if ok else EXIT_FAIL
        if args.command == "status":
            ok, lines = c.command("status")
            if not ok:
                print("\n".join(lines), file=sys.stderr)
                return EXIT_FAIL
            status = json.loads(lines[0])
            _print_status(_cluster_view(None, {status["node"]: status}), args.json)
            return 0
        if args.one_shot is not None:
            ok, lines = c.command(args.one_shot)
            print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
            return 0 if ok else EXIT_FAIL
        return _interactive(c)


def _interactive(c: ConsoleClient) -> int:
    while True:
        try:
            line = input("skymesh> ")
        except EOFError:
            return 0
        if not line.strip():
            continue
        try:
            ok, lines = c.command(line)
        except ConnectionError:
            return 0  # "quit", or the node went away
        for text in lines:
            print(text if ok else f"error: {text}")


# -- status -----------------------------------------------------------------------------------


def _cluster_view(cluster: str | None, per_node: dict[Any, Any]) -> dict[str, Any]:
    """One document from each node's console ``status`` (or an error string per node)."""
    answered = [s for s in per_node.values() if isinstance(s, dict)]
    first = answered[0] if answered else {}
    return {
        "cluster": cluster or "standalone",
        "master": first.get("master"),
        "epoch": first.get("epoch"),
        "names": first.get("names", {}),
        "groups": first.get("groups", {}),
        "nodes": {str(k): v for k, v in per_node.items()},
    }


def _print_status(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view, indent=2, sort_keys=True))
        return
    print(f"cluster {view['cluster']}: {len(view['nodes'])} node(s), "
          f"master {view['master']} epoch {view['epoch']}")
    for name, handle in sorted(view["names"].items()):
        print(f"name  {name} -> {handle}")
    for group, members in sorted(view["groups"].items()):
        print(f"group {group}: {' '.join(members)}")
    for nid, st in sorted(view["nodes"].items()):
        if not isinstance(st, dict):
            print(f"node {nid}: {st}")
            continue
        print(f"node {nid}: {len(st['services'])} services, "
              f"{st['messages_per_second']:.1f} messages/s, uptime {st['stats']['uptime']}s")
        for s in st["services"]:
            print(f"  {s['address']} {s['class']:<16} {s['state']:<8} mailbox={s['mailbox']} "
                  f"messages={s['messages']}")


def _cluster_status(args: argparse.Namespace, cfg: Any, token: str | None) -> int:
    """Members, master, names and groups from ZooKeeper (read-only), then each console."""
    from coord.errors import CoordError
    from coord.observer import ClusterView

    try:
        opts = cfg.coord_options()  # the node's own ZooKeeper identity and TLS
        with ClusterView(
            cfg.zk_hosts, cfg.cluster, args.timeout, auth=opts["zk_auth"], tls=opts["zk_tls"]
        ) as view:
            members = view.members()
            master, epoch = view.master()
            names = view.names()
            groups = view.groups()
    except CoordError as exc:
        print(f"skymesh: ZooKeeper unreachable or unreadable: {exc}", file=sys.stderr)
        return EXIT_FAIL
    per_node: dict[Any, Any] = {}
    failed = False
    for nid, where in sorted(_console_addresses(members).items()):
        if isinstance(where, str):
            per_node[nid] = where
            continue
        try:
            with ConsoleClient(*where, token, args.timeout) as c:
                ok, lines = c.command("status")
            per_node[nid] = json.loads(lines[0]) if ok else f"console error: {lines[-1]}"
            failed = failed or not ok
        except OSError as exc:
            per_node[nid] = f"console unreachable: {exc}"
            failed = True
    doc = _cluster_view(cfg.cluster, per_node)
    doc.update({
        "master": master,
        "epoch": epoch,
        "names": {k: f":{v:016x}" for k, v in names.items()},
        "groups": {g: [f":{h:016x}" for h in m] for g, m in groups.items()},
    })
    _print_status(doc, args.json)
    return EXIT_FAIL if failed else 0


def _console_addresses(members: dict[int, Any]) -> dict[int, tuple[str, int] | str]:
    """Each member's console ``(host, port)`` from its membership endpoints, or why not."""
    out: dict[int, tuple[str, int] | str] = {}
    for nid, info in members.items():
        endpoint = info.endpoints.get("console", "").removeprefix("tcp://")
        host, _, port = endpoint.rpartition(":")
        out[nid] = (host or info.host, int(port)) if port.isdigit() else "no console advertised"
    return out


# -- reload -----------------------------------------------------------------------------------


def _reload(args: argparse.Namespace, cfg: Any, port: int | None, token: str | None) -> int:
    """Ask each node's console, one after the other, to reload ``args.module``.

    The CLI fans out (not one node's console to the others) so that a reload is
    only ever an operator's console command: no cluster message can start one.
    Exit 1 if any chosen node failed, could not be reached, or if no node had the
    module loaded (a typo reloads nothing).
    """
    if cfg is not None and cfg.zk_hosts and args.port is None:
        from coord.errors import CoordError
        from coord.observer import ClusterView

        try:
            with ClusterView(cfg.zk_hosts, cfg.cluster, args.timeout) as view:
                targets = _console_addresses(view.members())
        except CoordError as exc:
            print(f"skymesh: ZooKeeper unreachable or unreadable: {exc}", file=sys.stderr)
            return EXIT_FAIL
        if args.nodes:
            missing = sorted(set(args.nodes) - set(targets))
            targets = {n: w for n, w in targets.items() if n in args.nodes}
            for nid in missing:
                targets[nid] = "not a cluster member"
    elif args.nodes:
        raise _UsageError("--node needs a cluster config (zk_hosts) to find the nodes")
    elif port is None:
        raise _UsageError("no console port: pass --port or a config with console_port")
    else:
        targets = {0: (args.host, port)}
    inner = f"{max(args.timeout * 0.8, 0.01):.3f}"  # the node's wait ends before ours
    line = " ".join(shlex.quote(w) for w in ("reload", "--timeout", inner, args.module))
    failed, loaded = False, False
    for nid, where in sorted(targets.items()):
        label = f"node {nid}" if nid else f"{args.host}:{port}"
        if isinstance(where, str):
            print(f"{label}: not reloaded: {where}", file=sys.stderr)
            failed = True
            continue
        try:
            with ConsoleClient(*where, token, args.timeout) as c:
                ok, lines = c.command(line)
        except PermissionError as exc:
            print(f"{label}: not reloaded: console refused: {exc}", file=sys.stderr)
            failed = True
            continue
        except OSError as exc:
            print(f"{label}: not reloaded: console unreachable: {exc}", file=sys.stderr)
            failed = True
            continue
        if not ok:
            print(f"{label}: {lines[-1]}", file=sys.stderr)
            failed = True
            continue
        print("\n".join(lines))
        loaded = loaded or not any("is not loaded here" in x for x in lines)
    if not loaded and not failed:
        print(f"skymesh: {args.module} is loaded on none of these nodes", file=sys.stderr)
    return EXIT_FAIL if failed or not loaded else 0
