"""Brokers in and out of a running cluster: replicas moved with Kafka's partition reassignment.

Scale-out starts a broker (``LocalBroker.add_node``) and then ``rebalance`` spreads the replicas of every
topic evenly over the live brokers; scale-in ``drain``s a broker (every replica it holds moves to the
others) before it is stopped. Both go through the Admin API's AlterPartitionReassignments, the way
``kafka-reassign-partitions`` does: replicas are added, catch up while producers and consumers go on,
join the ISR, and only then are the old ones removed, so no acknowledged record is lost and no client
stops. Replication traffic is throttled (broker ``*.replication.throttled.rate`` and the topics'
``*.replication.throttled.replicas``) while it runs, and the throttle is removed afterwards.

What scales is the brokers. The KRaft controller quorum (the configured nodes, voters of the metadata
log) stays fixed for the cluster's life: a node that is a voter is refused for removal, since changing
voters (KIP-853) needs its own procedure, and three voters already survive the loss of one.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.settings import Settings

PREFERRED_ELECTION = 0
Replicas = dict[tuple[str, int], list[int]]
"""(topic, partition) -> replica broker ids, preferred leader first."""


class ScalingError(RuntimeError):
    """A scale-out or scale-in that cannot be done safely; the message says why and what to do."""


@dataclass(frozen=True)
class Placement:
    """Where every replica is, and which replicas are in sync."""

    replicas: Replicas
    in_sync: dict[tuple[str, int], list[int]]
    brokers: list[int]
    """Live (registered, unfenced) brokers."""
    min_isr: dict[str, int]
    voters: list[int]
    """The KRaft controller quorum's voters."""

    def per_broker(self) -> dict[int, tuple[int, int]]:
        """Broker -> (replicas held, partitions led)."""
        held = Counter(b for rs in self.replicas.values() for b in rs)
        led = Counter(rs[0] for rs in self.replicas.values() if rs)
        return {b: (held[b], led[b]) for b in sorted(set(self.brokers) | set(held))}

    def describe(self) -> str:
        return ", ".join(
            f"node {b}: {h} replicas, {lead} preferred leaders" for b, (h, lead) in self.per_broker().items()
        )


# -- planning (pure) ------------------------------------------------------------------------------


def spread(current: Mapping[tuple[str, int], list[int]], brokers: list[int], balance: bool = True) -> Replicas:
    """A new placement on ``brokers`` that moves as few replicas as it can.

    Replicas on brokers not in ``brokers`` move to the least-loaded broker the partition does not use;
    with ``balance``, replicas then move from the most to the least loaded broker until the counts differ
    by at most one. A moved replica keeps its position, so preferred leaders move with it; a last pass
    swaps positions inside partitions (no data moves) until preferred leaders are even too.
    """
    if not brokers:
        raise ScalingError("no broker to place replicas on")
    plan = {tp: list(rs) for tp, rs in current.items()}
    load = Counter({b: 0 for b in brokers})
    load.update(b for rs in plan.values() for b in rs if b in load)
    for tp in sorted(plan):
        for position, broker in enumerate(plan[tp]):
            if broker not in load:
                choices = [b for b in brokers if b not in plan[tp]]
                if not choices:
                    raise ScalingError(
                        f"{tp[0]}-{tp[1]} has {len(plan[tp])} replicas: more than the {len(brokers)} brokers"
                    )
                target = min(choices, key=lambda b: (load[b], b))
                plan[tp][position] = target
                load[target] += 1
    while balance:
        high = max(brokers, key=lambda b: (load[b], -b))
        low = min(brokers, key=lambda b: (load[b], b))
        if load[high] - load[low] <= 1:
            break
        movable = [tp for tp in sorted(plan) if high in plan[tp] and low not in plan[tp]]
        if not movable:
            break
        tp = min(movable, key=lambda t: plan[t].index(high) == 0)  # a follower first: leadership stays put
        plan[tp][plan[tp].index(high)] = low
        load[high] -= 1
        load[low] += 1
    _even_leaders(plan, brokers)
    return plan


def _even_leaders(plan: Replicas, brokers: list[int]) -> None:
    for _ in range(len(plan) * len(brokers) + 1):
        leaders = Counter({b: 0 for b in brokers})
        leaders.update(rs[0] for rs in plan.values() if rs)
        pairs = sorted(
            ((high, low) for high in brokers for low in brokers if leaders[high] - leaders[low] > 1),
            key=lambda pair: leaders[pair[1]] - leaders[pair[0]],
        )
        swap = next(
            ((tp, low) for high, low in pairs for tp in sorted(plan) if plan[tp][0] == high and low in plan[tp]), None
        )
        if swap is None:
            return  # even, or only movable by moving data (a single replica): leave it
        tp, low = swap
        at = plan[tp].index(low)
        plan[tp][0], plan[tp][at] = low, plan[tp][0]


def moves(current: Mapping[tuple[str, int], list[int]], plan: Replicas) -> Replicas:
    """The partitions whose replica list changes."""
    return {tp: rs for tp, rs in plan.items() if list(current[tp]) != rs}


# -- reading the cluster --------------------------------------------------------------------------


def placement(admin: KafkaAdminClient, topics: list[str] | None = None) -> Placement:
    """Replicas and ISR of ``topics`` (default: every topic, internal ones included)."""
    names = topics if topics is not None else sorted(admin.list_topics())
    replicas: Replicas = {}
    in_sync: dict[tuple[str, int], list[int]] = {}
    for topic in admin.describe_topics(names):
        for partition in topic["partitions"]:
            key = (topic["name"], partition["partition_index"])
            replicas[key] = list(partition["replica_nodes"])
            in_sync[key] = list(partition["isr_nodes"])
    brokers = sorted(b["broker_id"] for b in admin.describe_cluster()["brokers"] if not b.get("is_fenced"))
    quorum = admin.describe_metadata_quorum()["topics"][0]["partitions"][0]
    voters = sorted(v["replica_id"] for v in quorum["current_voters"])
    return Placement(replicas, in_sync, brokers, _min_isr(admin, names), voters)


def _min_isr(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, t, ["min.insync.replicas"]) for t in topics]
    described = admin.describe_configs(resources, config_filter="all")["topic"]
    return {topic: int(configs["min.insync.replicas"]["value"]) for topic, configs in described.items()}


# -- moving replicas ------------------------------------------------------------------------------


def rebalance(settings: Settings, show: Callable[[str], None] = print, throttle_mb_s: float = 50.0) -> Placement:
    """Spread every non-internal topic's replicas evenly over the live brokers; the placement after."""
    with admin_client(settings) as admin:
        before = placement(admin, [t for t in sorted(admin.list_topics()) if not t.startswith("__")])
        plan = spread(before.replicas, before.brokers)
        show(f"before: {before.describe()}")
        reassign(admin, before, plan, show, throttle_mb_s)
        after = placement(admin, sorted({t for t, _ in before.replicas}))
        show(f"after:  {after.describe()}")
        return after


def drain(settings: Settings, node_id: int, show: Callable[[str], None] = print, throttle_mb_s: float = 50.0) -> None:
    """Move every replica off ``node_id`` (all topics, internal ones too), refusing what is unsafe."""
    with admin_client(settings) as admin:
        before = placement(admin)
        refusal = drain_refusal(before, node_id)
        if refusal:
            raise ScalingError(refusal)
        remaining = [b for b in before.brokers if b != node_id]
        plan = spread(before.replicas, remaining, balance=False)
        show(f"draining node {node_id}: {sum(node_id in rs for rs in before.replicas.values())} replicas to move")
        reassign(admin, before, plan, show, throttle_mb_s)
        left = [tp for tp, rs in placement(admin).replicas.items() if node_id in rs]
        if left:
            raise ScalingError(
                f"node {node_id} still holds {len(left)} replicas (e.g. {left[0]}): a topic was created "
                "on it meanwhile; drain again"
            )
        show(f"node {node_id} holds no replica: it can be stopped")


def drain_refusal(current: Placement, node_id: int) -> str | None:
    """Why removing ``node_id`` would be unsafe now, or None."""
    if node_id not in current.brokers:
        return f"no live broker {node_id} (live: {', '.join(map(str, current.brokers))})"
    remaining = len(current.brokers) - 1
    widest = max(current.replicas.items(), key=lambda item: len(item[1]), default=None)
    if widest and len(widest[1]) > remaining:
        return (
            f"removing node {node_id} would leave {remaining} brokers for topic {widest[0][0]} with replication "
            f"factor {len(widest[1])}: each replica needs a broker of its own. Add a broker first (`lambdactl "
            "broker add`)"
        )
    strict = max(current.min_isr.items(), key=lambda item: item[1], default=None)
    if strict and strict[1] > remaining:
        return (
            f"removing node {node_id} would leave {remaining} brokers, fewer than min.insync.replicas "
            f"{strict[1]} of topic {strict[0]}: producers with acks=all would be refused"
        )
    if node_id in current.voters:
        return (
            f"node {node_id} is a voter of the KRaft controller quorum ({', '.join(map(str, current.voters))}), "
            "which stays fixed for the cluster's life: drain and remove broker-only nodes (added with "
            "`lambdactl broker add`)"
        )
    lagging = [tp for tp, rs in sorted(current.replicas.items()) if set(current.in_sync[tp]) != set(rs)]
    if lagging:
        topic, partition = lagging[0]
        return (
            f"{len(lagging)} partitions are under-replicated (e.g. {topic}-{partition}: in sync "
            f"{current.in_sync[lagging[0]]} of {current.replicas[lagging[0]]}); moving replicas now could take a "
            "partition below min.insync.replicas. Wait until `lambdactl topics describe` shows them in sync"
        )
    return None


def reassign(
    admin: KafkaAdminClient, before: Placement, plan: Replicas, show: Callable[[str], None], throttle_mb_s: float
) -> None:
    """Apply ``plan`` with a replication throttle, show progress, return once every moved replica is in sync."""
    changing = moves(before.replicas, plan)
    if not changing:
        show("nothing to move: the placement is already balanced")
        return
    started = time.monotonic()
    with _throttled(admin, before.replicas, changing, throttle_mb_s):
        errors = admin.alter_partition_reassignments({TopicPartition(t, p): rs for (t, p), rs in changing.items()})
        failed = {tp: e for tp, e in errors.items() if e is not None}
        if failed:
            raise ScalingError(f"the controller refused {len(failed)} reassignments: {failed}")
        _wait_in_sync(admin, changing, started, show)
    by_topic: dict[str, list[int]] = {}
    for topic, partition in changing:
        by_topic.setdefault(topic, []).append(partition)
    admin.elect_leaders(PREFERRED_ELECTION, by_topic, raise_errors=False)  # leadership follows the new order
    show(f"moved {len(changing)} partitions in {time.monotonic() - started:.1f} s")


def _wait_in_sync(admin: KafkaAdminClient, changing: Replicas, started: float, show: Callable[[str], None]) -> None:
    deadline = started + 600
    topics = sorted({t for t, _ in changing})
    while True:
        pending = admin.list_partition_reassignments([TopicPartition(t, p) for t, p in changing])
        now = placement(admin, topics)
        done = [tp for tp, rs in changing.items() if now.replicas[tp] == rs and set(now.in_sync[tp]) == set(rs)]
        show(
            f"  {len(done)} of {len(changing)} partitions moved and in sync, {len(pending)} reassignments running "
            f"({time.monotonic() - started:.1f} s)"
        )
        if len(done) == len(changing) and not pending:
            return
        if time.monotonic() > deadline:
            raise ScalingError(
                f"replicas did not catch up within 10 minutes ({len(done)} of {len(changing)}): is a broker down? "
                "`lambdactl broker status`; the reassignment goes on in the cluster"
            )
        time.sleep(1.0)  # the cluster's own progress is the signal; this paces the polling


@contextlib.contextmanager
def _throttled(admin: KafkaAdminClient, current: Replicas, changing: Replicas, mb_s: float) -> Iterator[None]:
    """Kafka's reassignment throttle: a rate on every broker involved, on the moving replicas only."""
    rate = str(int(mb_s * 1_000_000))
    brokers = sorted({b for tp in changing for b in (*current[tp], *changing[tp])})
    leaders: dict[str, list[str]] = {}
    followers: dict[str, list[str]] = {}
    for (topic, partition), target in changing.items():
        leaders.setdefault(topic, []).extend(f"{partition}:{b}" for b in current[(topic, partition)])
        followers.setdefault(topic, []).extend(
            f"{partition}:{b}" for b in target if b not in current[(topic, partition)]
        )
    rates = {"leader.replication.throttled.rate": rate, "follower.replication.throttled.rate": rate}
    admin.alter_configs(
        [ConfigResource(ConfigResourceType.BROKER, str(b), dict(rates)) for b in brokers], raise_on_unknown=False
    )
    topic_configs = [
        ConfigResource(
            ConfigResourceType.TOPIC,
            topic,
            {
                "leader.replication.throttled.replicas": ",".join(leaders[topic]),
                "follower.replication.throttled.replicas": ",".join(followers.get(topic, [])),
            },
        )
        for topic in leaders
    ]
    admin.alter_configs(topic_configs, raise_on_unknown=False)
    try:
        yield
    finally:
        admin.reset_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(b), list(rates)) for b in brokers], raise_on_unknown=False
        )
        admin.reset_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    topic,
                    ["leader.replication.throttled.replicas", "follower.replication.throttled.replicas"],
                )
                for topic in leaders
            ],
            raise_on_unknown=False,
        )
