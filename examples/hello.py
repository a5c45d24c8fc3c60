"""The smallest useful service: ``skymesh node --standalone --service examples.hello:Hello``."""

from __future__ import annotations

from node import Service, expose


class Hello(Service):
    """Greets callers and counts greetings; ticks a heartbeat line every ``period`` seconds."""

    async def on_start(self, greeting: str = "hello", period: float = 0) -> None:
        self.greeting = greeting
        self.count = 0
        await self.register(".hello")
        if period:
            self.timeout(period, self.tick, period)
        self.log(f"Hello service up at {self.handle:#x}")

    def tick(self, period: float) -> None:
        self.log(f"tick: {self.count} greetings so far")
        self.timeout(period, self.tick, period)

    @expose
    def hello(self, who: str) -> str:
        self.count += 1
        return f"{self.greeting}, {who}"

    @expose
    async def hello_later(self, who: str, delay: float) -> str:
        await self.sleep(delay)
        return self.hello(who)

    def on_stop(self) -> None:
        self.log(f"Hello service stopping after {self.count} greetings")
