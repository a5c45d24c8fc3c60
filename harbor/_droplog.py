"""Counters and throttled drop logging for the harbor I/O thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from harbor.errors import FRAME_REASONS

# Reasons the sending side drops messages for, besides the inbound FRAME_REASONS.
SEND_REASONS: Final = frozenset(
    {
        "peer-left",  # queued for a peer removed from the peer set before it was flushed
        "peer-down",  # backlog of a peer reported down
        "send-error",  # ZeroMQ refused the frame (socket closed under us)
        "callback",  # a deliver/deliver_pub/on_peer_down callback raised
        "endpoint",  # a peer endpoint ZeroMQ cannot connect to
        "untrusted-peer",  # a peer advertised a CURVE key that is not allow-listed for it
        "backlog-full",  # send() refused: the peer's send backlog is at its byte limit
        "park-full",  # a frame from a not-yet-known node found the parking full (count or bytes)
    }
)
LOG_INTERVAL: Final = 10.0

COUNTERS: Final = (
    "frames_in",
    "frames_out",
    "msgs_in",
    "msgs_out",
    "pubs_in",
    "pubs_out",
    "ticks",
    "subs",
    "pushes",
    "pushes_idle_closed",
    "peers",
    "peers_down",
    "peers_revived",
    "auth_denied",
    "auth_admitted",
)


class DropLog:
    """Counts drops by reason and logs each reason at most once per interval.

    Keyed by reason only (a fixed set), never by peer: forged node ids cannot
    grow the table or the log. The line names the peer of the first drop.

    Owner: the harbor I/O thread writes; other threads only copy ``counts``
    (a dict copy is atomic under the GIL, and every key exists from the start).
    """

    def __init__(self, log: Callable[[str], None], prefix: str) -> None:
        self.log = log
        self.prefix = prefix
        # Owner: I/O thread. Invariant: keys never change after __init__.
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        for reason in sorted(FRAME_REASONS | SEND_REASONS):
            self.counts[f"drop_{reason}"] = 0
        # Owner: I/O thread. reason -> (time of the last log line, drops since).
        # Invariant: keys are drop reasons only, so the table is bounded.
        self._last: dict[str, tuple[float, int]] = {}

    def drop(self, reason: str, peer: int, detail: str, n: int = 1) -> None:
        """Count ``n`` drops for ``reason``; log unless this reason was logged recently."""
        self.counts[f"drop_{reason}"] += n
        now = time.monotonic()
        key = reason
        last, since = self._last.get(key, (-LOG_INTERVAL, 0))
        if now - last >= LOG_INTERVAL:
            more = f" (+{since} more since last report)" if since else ""
            who = f"node {peer}" if peer else "unknown node"
            self.log(f"{self.prefix}: dropped {n} ({reason}), peer {who}: {detail}{more}")
            self._last[key] = (now, 0)
        else:
            self._last[key] = (last, since + n)
