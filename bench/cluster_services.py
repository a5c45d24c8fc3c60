"""Services bench/cluster.py starts in the remote node process."""

from __future__ import annotations

import time

from node import Service, expose


class Sink(Service):
    """Counts one-way messages; ``until`` answers when ``n`` have arrived."""

    async def on_start(self) -> None:
        self.count = 0
        self.first = 0.0
        await self.register("bench-sink")

    @expose
    def hit(self, i):
        if not self.count:
            self.first = time.perf_counter()
        self.count += 1

    @expose
    async def until(self, n):
        while self.count < n:
            await self.sleep(0.001)
        return self.count, time.perf_counter() - self.first

    @expose
    def reset(self):
        self.count = 0

    @expose
    def echo(self, x):
        return x

    @expose
    async def bouncers(self, n):
        """Start ``n`` Bouncers here (the remote halves of bench/cluster.py's pairs)."""
        return [await self.newservice(Bouncer) for _ in range(n)]


class Bouncer(Service):
    """Sends every ball straight back to the service that sent it."""

    @expose
    def ball(self, peer):
        self.send(peer, "ball", self.handle)
