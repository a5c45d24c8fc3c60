"""The bank's services: ``Ledger`` shards hold balances, ``Teller`` moves money, ``Bank`` boots.

Safety argument. A transfer holds the cluster locks of both accounts (taken
in sorted order, so two transfers never wait on each other in a cycle)
while it reads both balances and writes both back. Every write carries the
fence of the lock it was made under, and a ledger refuses a fence lower than
the highest it has accepted for that account, so a teller whose lease ran
out (paused, partitioned) cannot overwrite a newer holder's balance. An
audit takes every account's lock, so it sees no transfer half done: the
total it reads never changes.

Not covered: a teller that dies between its two writes loses the money in
flight (a journal would fix that; the example keeps to locks and fences).

Cluster-ready: accounts map to ledgers through the group ``bank.ledger``
(consistent hashing on the account name), tellers are found through the
group ``bank.tellers``; nothing assumes one node.
"""

from __future__ import annotations

import contextlib
from typing import Any

from node import CallError, Service, expose, group

LEDGER_GROUP = "bank.ledger"
TELLER_GROUP = "bank.tellers"


class InsufficientFunds(ValueError):
    """The source account holds less than the amount."""


class StaleFence(RuntimeError):
    """A write under an older lock acquisition than one already applied."""


def ledger(account: str) -> Any:
    """The destination holding ``account``."""
    return group(LEDGER_GROUP, key=account)


class Ledger(Service):
    """A shard of accounts: balances plus, per account, the highest fence accepted."""

    async def on_start(self) -> None:
        self.balances: dict[str, int] = {}
        self.fences: dict[str, int] = {}
        await self.join_group(LEDGER_GROUP)

    @expose
    def open(self, account: str, amount: int) -> None:
        """Create ``account`` with ``amount``; raises ``ValueError`` if it exists."""
        if account in self.balances:
            raise ValueError(f"account {account} exists")
        self.balances[account] = amount

    @expose
    def balance(self, account: str) -> int:
        """The balance; raises ``KeyError`` for an unknown account."""
        return self.balances[account]

    @expose
    def set_balance(self, account: str, value: int, fence: int) -> None:
        """Write a balance under lock fence ``fence``; raises ``StaleFence`` when older."""
        if fence < self.fences.get(account, 0):
            raise StaleFence(f"{account}: fence {fence} < {self.fences[account]}")
        if value < 0:
            raise ValueError(f"{account}: negative balance {value}")
        self.fences[account] = fence
        self.balances[account] = value

    @expose
    def accounts(self) -> dict[str, int]:
        """Every account of this shard and its balance (no lock: may be mid-transfer)."""
        return dict(self.balances)


class Teller(Service):
    """Runs transfers and audits; any number of tellers may run at once, on any node."""

    async def on_start(self, backend: str = "redis", ttl: float = 10.0) -> None:
        self.backend = backend
        self.ttl = ttl
        self.done = 0
        await self.join_group(TELLER_GROUP)

    @expose
    async def transfer(self, src: str, dst: str, amount: int) -> tuple[int, int]:
        """Move ``amount`` from ``src`` to ``dst``; returns their new balances.

        Raises ``InsufficientFunds``, ``ValueError`` (same account, amount <= 0),
        ``LockTimeout`` when the accounts stay busy, ``StaleFence`` if the lock
        was lost mid-way (nothing written after that point).
        """
        if src == dst or amount <= 0:
            raise ValueError("a transfer needs two accounts and a positive amount")
        async with contextlib.AsyncExitStack() as stack:
            fences = await self._lock_all(stack, [src, dst])
            a = await self.call(ledger(src), "balance", src)
            if a < amount:
                raise InsufficientFunds(f"{src} holds {a} < {amount}")
            b = await self.call(ledger(dst), "balance", dst)
            await self.call(ledger(src), "set_balance", src, a - amount, fences[src])
            await self.call(ledger(dst), "set_balance", dst, b + amount, fences[dst])
        self.done += 1
        return a - amount, b + amount

    @expose
    async def audit(self, accounts: list[str]) -> int:
        """The total of ``accounts``, read while holding all their locks (a consistent cut)."""
        async with contextlib.AsyncExitStack() as stack:
            await self._lock_all(stack, accounts)
            total = 0
            for account in accounts:
                total += await self.call(ledger(account), "balance", account)
            return total

    @expose
    def transfers(self) -> int:
        """Transfers this teller completed."""
        return self.done

    async def _lock_all(
        self, stack: contextlib.AsyncExitStack[Any], accounts: list[str]
    ) -> dict[str, int]:
        """Take the locks of ``accounts`` in sorted order (no deadlock); their fences."""
        fences = {}
        for account in sorted(set(accounts)):
            lock = self.lock(f"acct:{account}", ttl=self.ttl, wait=30, backend=self.backend)
            held = await stack.enter_async_context(lock)
            fences[account] = held.fence
        return fences


class Bank(Service):
    """Starts ``ledgers`` Ledger shards and ``tellers`` Tellers, opens ``accounts``."""

    async def on_start(self, accounts: dict[str, int], ledgers: int = 3, tellers: int = 2,
                       backend: str = "redis") -> None:
        self.names = sorted(accounts)
        for _ in range(ledgers):
            await self.newservice(Ledger)
        for _ in range(tellers):
            await self.newservice(Teller, backend)
        for name, amount in accounts.items():
            await self.call(ledger(name), "open", name, amount)
        await self.register("bank")

    @expose
    async def transfer(self, src: str, dst: str, amount: int) -> tuple[int, int]:
        """Hand a transfer to a teller (picked by the source account); same errors."""
        try:
            result: tuple[int, int] = await self.call(group(TELLER_GROUP, key=src), "transfer",
                                                      src, dst, amount)
        except CallError as exc:
            if exc.remote_type == "InsufficientFunds":  # keep the caller's type to catch
                raise InsufficientFunds(exc.remote_message) from None
            raise
        return result

    @expose
    async def audit(self) -> int:
        """The consistent total of every account."""
        total: int = await self.call(group(TELLER_GROUP, key="audit"), "audit", self.names)
        return total

    @expose
    def accounts(self) -> list[str]:
        """The account names."""
        return list(self.names)
