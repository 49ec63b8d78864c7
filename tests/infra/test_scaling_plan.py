"""Replica placement plans for scale-out and scale-in: even, minimal, safe (pure functions, no broker)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from infra.scaling import Placement, Replicas, ScalingError, drain_refusal, moves, spread

pytestmark = pytest.mark.unit


def _round_robin(partitions: int, brokers: list[int], rf: int, topic: str = "events") -> Replicas:
    return {(topic, p): [brokers[(p + i) % len(brokers)] for i in range(rf)] for p in range(partitions)}


def _counts(plan: Replicas) -> tuple[Counter[int], Counter[int]]:
    return Counter(b for rs in plan.values() for b in rs), Counter(rs[0] for rs in plan.values())


@pytest.mark.parametrize("seed", range(20))
def test_a_new_broker_gets_a_fair_share_and_nothing_else_moves_needlessly(seed: int) -> None:
    rng = random.Random(seed)
    old = list(range(1, rng.randint(3, 5) + 1))
    current = _round_robin(rng.randint(1, 24), old, rf=rng.randint(1, 3)) | _round_robin(6, old, 2, topic="dlq")
    brokers = [*old, max(old) + 1]
    plan = spread(current, brokers)
    held, led = _counts(plan)
    assert max(held[b] for b in brokers) - min(held[b] for b in brokers) <= 1, held
    assert all(len(set(rs)) == len(rs) == len(current[tp]) for tp, rs in plan.items()), "distinct replicas"
    before, _ = _counts(current)
    floor = sum(before.values()) // len(brokers)
    moved = sum(len(set(rs) - set(current[tp])) for tp, rs in plan.items())
    assert moved <= sum(max(0, before[b] - floor) for b in brokers), "only replicas above a fair share move"
    if all(len(rs) > 1 for rs in plan.values()):  # with one replica, leadership cannot move without data
        assert max(led.values()) - min(led[b] for b in brokers) <= 1, led


def test_a_drained_broker_keeps_nothing_and_only_its_replicas_move() -> None:
    current = _round_robin(6, [1, 2, 3, 4], rf=3)
    plan = spread(current, [1, 2, 3], balance=False)
    assert all(4 not in rs for rs in plan.values())
    assert all(set(rs) >= set(current[tp]) - {4} for tp, rs in plan.items()), "the other replicas stay"
    changed = moves(current, plan)
    assert all(4 in current[tp] for tp in changed)
    with pytest.raises(ScalingError, match="more than the 2 brokers"):
        spread(current, [1, 2], balance=False)


def _placement(replicas: Replicas, brokers: list[int], in_sync: Replicas | None = None) -> Placement:
    return Placement(replicas, in_sync or dict(replicas), brokers, {"events": 2}, voters=[1, 2, 3])


def test_removals_that_break_replication_min_isr_or_the_quorum_are_refused() -> None:
    four = _round_robin(6, [1, 2, 3, 4], rf=3)
    assert drain_refusal(_placement(four, [1, 2, 3, 4]), 4) is None
    assert "voter of the KRaft controller quorum (1, 2, 3)" in (drain_refusal(_placement(four, [1, 2, 3, 4]), 2) or "")
    assert "no live broker 7" in (drain_refusal(_placement(four, [1, 2, 3, 4]), 7) or "")
    three = _round_robin(6, [1, 2, 3], rf=3)
    refusal = drain_refusal(_placement(three, [1, 2, 3]), 3) or ""
    assert "would leave 2 brokers for topic events with replication factor 3" in refusal
    two_way = _round_robin(6, [1, 2], rf=1)
    refusal = drain_refusal(Placement(two_way, dict(two_way), [1, 2], {"events": 2}, voters=[1]), 2) or ""
    assert "fewer than min.insync.replicas 2 of topic events" in refusal
    lagging = dict(four) | {("events", 0): [four[("events", 0)][0]]}
    refusal = drain_refusal(_placement(four, [1, 2, 3, 4], in_sync=lagging), 4) or ""
    assert "1 partitions are under-replicated (e.g. events-0" in refusal
