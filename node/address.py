"""Service addresses: handles, names and group selectors.

A handle is an int ``node_id << 32 | local_id``. Local id 0 is reserved for
"outside the services": blocking calls made by plain threads through the
``Node`` object reply to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Dest", "Group", "format_handle", "group", "local_id", "make_handle", "node_of"]

LOCAL_BITS = 32
LOCAL_MASK = (1 << LOCAL_BITS) - 1
MAX_NODE_ID = (1 << 31) - 1


def make_handle(node_id: int, local: int) -> int:
    """Pack a node id and a local id into a handle."""
    return (node_id << LOCAL_BITS) | local


def node_of(handle: int) -> int:
    """The node id part of a handle."""
    return handle >> LOCAL_BITS


def local_id(handle: int) -> int:
    """The node-local part of a handle."""
    return handle & LOCAL_MASK


def format_handle(handle: int) -> str:
    """Print a handle skynet-style: ``:0000000300000012`` is node 3, service 0x12."""
    return f":{handle:016x}"


@dataclass(frozen=True, slots=True)
class Group:
    """A group selector: one live member of ``name``, chosen by consistent hashing of ``key``."""

    name: str
    key: Any = None


def group(name: str, key: Any = None) -> Group:
    """Select a member of service group ``name`` for ``key``.

    Example::

        await self.call(group("rooms", key=room_id), "join", player)
    """
    return Group(name, key)


Dest = int | str | Group
