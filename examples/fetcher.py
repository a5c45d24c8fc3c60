"""Blocking clients off the workers: a service that fetches URLs with ``urllib``.

``urllib.request.urlopen`` blocks its thread; called from a handler it would
stall a worker (with two workers, two slow fetches stop the node). Through
``self.offload`` it runs on the node's offload pool, the handler's coroutine
waits, and every other message keeps flowing.

Run: ``skymesh node --standalone --service examples.fetcher:Fetcher`` and
call it, or see ``tests/unit/test_examples.py``.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from node import Service, expose


def _get(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = resp.read()
        return {"status": resp.status, "bytes": len(body), "body": body[:200].decode("latin-1")}


class Fetcher(Service):
    """``fetch(url)`` returns ``{"status", "bytes", "body"}`` without blocking a worker."""

    def on_start(self) -> None:
        self.fetched = 0

    @expose
    async def fetch(self, url: str, timeout: float = 10.0) -> dict[str, Any]:
        result: dict[str, Any] = await self.offload(_get, url, timeout, timeout=timeout + 1)
        self.fetched += 1
        return result

    @expose
    def count(self) -> int:
        return self.fetched
