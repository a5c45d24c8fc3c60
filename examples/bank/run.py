"""Concurrent random transfers with audits in between; exits 1 if the total ever moved.

    python -m examples.bank.run --accounts 20 --transfers 2000 --threads 8
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
from typing import Any

from node import CallError, Node

from .bank import Bank


def run(node: Node, accounts: int, transfers: int, threads: int, seed: int = 1) -> dict[str, Any]:
    """Start a Bank on ``node``, run the load from ``threads`` plain threads and audit it.

    Returns a summary; ``ok`` is False if any audit saw a different total.
    """
    opening = {f"acct{i:03d}": 100 for i in range(accounts)}
    bank = node.newservice(Bank, opening, 3, 4)
    expected = sum(opening.values())
    audits: list[int] = []
    counts = {"done": 0, "refused": 0}
    lock = threading.Lock()

    def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        names = sorted(opening)
        for i in range(transfers // threads):
            src, dst = rng.sample(names, 2)
            try:
                node.call(bank, "transfer", src, dst, rng.randint(1, 60), timeout=60)
                outcome = "done"
            except CallError as exc:
                if exc.remote_type != "InsufficientFunds":
                    raise
                outcome = "refused"
            with lock:
                counts[outcome] += 1
            if i % 25 == 0:
                total = node.call(bank, "audit", timeout=60)
                with lock:
                    audits.append(total)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    audits.append(node.call(bank, "audit", timeout=60))
    bad = [a for a in audits if a != expected]
    return {"expected": expected, "audits": len(audits), "bad_audits": bad, "ok": not bad,
            **counts}


def main() -> int:
    """Run from the command line; prints one JSON summary."""
    p = argparse.ArgumentParser(description="bank transfers under cluster locks")
    p.add_argument("--accounts", type=int, default=20)
    p.add_argument("--transfers", type=int, default=2000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args()
    with Node.standalone(workers=args.workers) as node:
        summary = run(node, args.accounts, args.transfers, args.threads)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
