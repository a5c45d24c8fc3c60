"""A consistent-hash ring with virtual nodes, for ``Coordinator.pick``.

Each member is placed at ``replicas`` points on a 64-bit ring; a key belongs
to the first point clockwise from its hash. When a member joins or leaves,
only the keys of that member's arcs move (about 1/N of them).

>>> ring = HashRing([1, 2, 3])
>>> ring.get("user:42") in (1, 2, 3)
True
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

__all__ = ["HashRing"]


def _hash(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class HashRing:
    """An immutable ring over integer members (service handles)."""

    def __init__(self, members: Iterable[int], replicas: int = 160) -> None:
        """Build the ring; ``replicas`` virtual points per member."""
        self.members: tuple[int, ...] = tuple(sorted(set(members)))
        points = sorted((_hash(f"{m}#{i}"), m) for m in self.members for i in range(replicas))
        self._hashes = [h for h, _ in points]
        self._owners = [m for _, m in points]

    def get(self, key: object) -> int | None:
        """The member owning ``key`` (by ``str(key)``), or None for an empty ring."""
        if not self._hashes:
            return None
        i = bisect.bisect(self._hashes, _hash(str(key)))
        return self._owners[i % len(self._owners)]
