"""Claiming ``nodes/<id>`` when a node starts with a fixed id (issue 12).

A node killed and restarted at once finds its predecessor's ephemeral
``nodes/<id>`` still there: ZooKeeper deletes it only when the dead session
expires, up to a session timeout later. Refusing then makes every process
supervisor see a failure; waiting forever hides a real duplicate id.

Rule: safety never depends on telling the two apart, because only ZooKeeper
decides who holds the id (an ephemeral ``create`` succeeds for one session).
The tell only chooses between failing fast and waiting:

- *Live other node*: some TCP endpoint the holder advertised (its harbor's
  PULL/PUB sockets, its console) accepts a connection. A killed process's
  listening sockets are closed by the kernel as it dies, so a dead
  predecessor never answers, unless its address is the one this node
  advertises itself (a container restarted with the same name and ports),
  which is skipped. Then ``NodeIdTaken`` at once, as before.
- *Maybe a dead predecessor* (nothing answers, or no TCP endpoint): log one
  progress line and wait, watching the znode with ``exists``, re-probing
  every second, up to ``wait`` seconds (about the session timeout plus a
  margin); claim the id as soon as the znode is gone. If it is still held
  at the deadline its session is alive, so ``NodeIdTaken``.

Misjudging a live node as dead (its endpoints unreachable from here) costs a
bounded wait, then ``NodeIdTaken``; misjudging a dead one as live (another
process took its port) fails fast as before the change.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError

from coord._runtime import log
from coord._zkutil import session_id
from coord.api import NodeInfo
from coord.errors import NodeIdTaken

__all__ = ["claim_node_id", "tcp_address"]

PROBE_TIMEOUT = 0.5  # seconds per endpoint; a live node's listening socket answers at once


def tcp_address(endpoint: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``tcp://host:port`` or ``host:port``; None for anything else.

    >>> tcp_address("tcp://10.0.0.5:5000"), tcp_address("node2:7000"), tcp_address("ipc://x")
    (('10.0.0.5', 5000), ('node2', 7000), None)
    """
    if "://" in endpoint:
        scheme, _, endpoint = endpoint.partition("://")
        if scheme != "tcp":
            return None
    host, sep, port = endpoint.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        return None
    return host, int(port)


def _answers(endpoints: dict[str, str], own: set[tuple[str, int]]) -> str | None:
    """The first of ``endpoints`` (not one of ours) accepting a TCP connection, else None."""
    for ep in endpoints.values():
        addr = tcp_address(ep)
        if addr is None or addr in own:
            continue
        try:
            with socket.create_connection(addr, timeout=PROBE_TIMEOUT):
                return ep
        except OSError:
            continue
    return None


def claim_node_id(client: Any, path: str, info: NodeInfo, wait: float) -> None:
    """Create the ephemeral ``path`` holding ``info`` for this session (blocking).

    Raises ``NodeIdTaken`` at once if the holder answers on an endpoint, or
    after ``wait`` seconds if its session is still alive; kazoo errors pass
    through (the caller translates them).
    """
    own = {a for ep in info.endpoints.values() if (a := tcp_address(ep)) is not None}
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            client.create(path, info.to_json(), ephemeral=True)
            if announced:
                log.info("coord: node id %d claimed: the predecessor's session ended", info.node_id)
            return
        except NodeExistsError:
            pass
        gone = threading.Event()
        try:
            data, stat = client.get(path, watch=lambda _e, g=gone: g.set())
        except NoNodeError:
            continue  # it just went away: claim it
        if stat.ephemeralOwner == session_id(client):
            # Our own create from an attempt whose reply was lost: adopt it, with this
            # attempt's info (a retried start() drew a new incarnation).
            client.set(path, info.to_json(), version=stat.version)
            return
        try:
            holder = NodeInfo.from_json(data or b"")
        except ValueError:
            holder = NodeInfo(info.node_id, 0, "?", 0, {})
        while not gone.is_set():
            live = _answers(holder.endpoints, own)
            if live is not None:
                raise NodeIdTaken(
                    f"node id {info.node_id} is in use by a live node "
                    f"(pid {holder.pid} on {holder.host} answers on {live})"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodeIdTaken(
                    f"node id {info.node_id} is in use: its holder (pid {holder.pid} on "
                    f"{holder.host}) answers on no endpoint, but its session did not "
                    f"end within {wait:.1f}s"
                )
            if not announced:
                announced = True
                log.warning(
                    "coord: node id %d is still held by incarnation %d (pid %d on %s), "
                    "which answers on no endpoint; waiting up to %.1fs for its session "
                    "to expire",
                    info.node_id,
                    holder.incarnation,
                    holder.pid,
                    holder.host,
                    left,
                )
            gone.wait(min(1.0, left))
