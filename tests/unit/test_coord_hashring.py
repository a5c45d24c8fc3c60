"""The consistent-hash ring: balance and minimal movement."""

from __future__ import annotations

from collections import Counter

from coord.hashring import HashRing

KEYS = [f"user:{i}" for i in range(20000)]


def test_empty_ring_and_single_member():
    assert HashRing([]).get("x") is None
    assert {HashRing([7]).get(k) for k in KEYS[:100]} == {7}


def test_deterministic_and_order_independent():
    a, b = HashRing([3, 1, 2]), HashRing([2, 3, 1, 1])
    assert all(a.get(k) == b.get(k) for k in KEYS[:2000])


def test_balance_with_virtual_nodes():
    ring = HashRing(range(1, 11))
    counts = Counter(ring.get(k) for k in KEYS)
    assert set(counts) == set(range(1, 11))
    assert max(counts.values()) / min(counts.values()) < 1.6


def test_join_moves_about_one_nth_and_only_to_the_new_member():
    n = 8
    before = HashRing(range(1, n + 1))
    after = HashRing(range(1, n + 2))
    moved = [k for k in KEYS if before.get(k) != after.get(k)]
    assert all(after.get(k) == n + 1 for k in moved)
    frac = len(moved) / len(KEYS)
    assert 0.5 / (n + 1) < frac < 1.6 / (n + 1), frac


def test_leave_moves_only_the_leavers_keys():
    n = 8
    before = HashRing(range(1, n + 1))
    after = HashRing([m for m in range(1, n + 1) if m != 4])
    moved = [k for k in KEYS if before.get(k) != after.get(k)]
    assert all(before.get(k) == 4 for k in moved)
    assert 0.5 / n < len(moved) / len(KEYS) < 1.6 / n
