"""Services the cluster tests start in real node processes (``SKYMESH_SERVICES``)."""

from __future__ import annotations

import os
import time

from node import Service, expose
from node.address import node_of


class Probe(Service):
    """Answers who and where it is; optionally holds a global name and group seats."""

    async def on_start(self, name: str | None = None, group: str | None = None) -> None:
        self.seen: list = []
        self.channel: list = []
        self.down: list = []
        if name:
            await self.register(name)
        if group:
            await self.join_group(group)

    @expose
    def where(self):
        return {"node": node_of(self.handle), "handle": self.handle, "pid": os.getpid()}

    @expose
    def echo(self, value):
        return value

    @expose
    async def relay(self, dest, method, *args):
        return await self.call(dest, method, *args)

    @expose
    async def call_waiting(self, dest, method, wait):
        return await self.call(dest, method, wait=wait, timeout=wait + 10)

    @expose
    async def hang(self, seconds):
        await self.sleep(seconds)
        return "woke"

    @expose
    def put(self, sender, seq):
        self.seen.append((sender, seq))

    @expose
    def seen_count(self):
        return len(self.seen)

    @expose
    def order_ok(self):
        last: dict = {}
        for sender, seq in self.seen:
            if last.get(sender, -1) + 1 != seq:
                return f"sender {sender}: {last.get(sender)} then {seq}"
            last[sender] = seq
        return "ok"

    @expose
    def blast(self, dest, n):
        for i in range(n):
            self.send(dest, "put", self.handle, i)
        return n

    @expose
    def sub(self, channel):
        self.subscribe(channel)

    @expose
    def pub(self, channel, payload):
        self.publish(channel, payload)

    def on_channel(self, channel, source, payload):
        self.channel.append((channel, payload))

    @expose
    def received(self):
        return list(self.channel)

    @expose
    def watch(self, handle):
        self.monitor(handle)

    def on_down(self, handle, reason):
        self.down.append((handle, reason))

    @expose
    def downs(self):
        return list(self.down)

    @expose
    async def locked_section(self, key, hold, backend):
        async with self.lock(key, ttl=5, wait=30, backend=backend) as held:
            enter = time.time()
            await self.sleep(hold)
            return (held.fence, enter, time.time())

    @expose
    async def unique(self, path):
        return await self.uniqueservice(path, cluster=True)


class Singleton(Service):
    """A cluster-unique service: says which node hosts it."""

    @expose
    def where(self):
        return node_of(self.handle)


class Target(Service):
    """What the trust tests attack: counts handler runs and starts, sleeps on request."""

    async def on_start(self, name: str | None = None) -> None:
        self.hits = 0
        self.starts = getattr(self, "starts", 0) + 1
        self.woke = 0
        self.socket_data = 0
        if name:
            await self.register(name)

    @expose
    def hit(self):
        self.hits += 1
        return self.hits

    @expose
    def state(self):
        return {"hits": self.hits, "starts": self.starts, "woke": self.woke,
                "socket": self.socket_data, "pid": os.getpid()}

    @expose
    async def nap(self, seconds):
        await self.sleep(seconds)
        self.woke += 1
        return "rested"

    def on_socket_data(self, sock_id, data):
        self.socket_data += 1
