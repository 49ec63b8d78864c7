"""Creating the platform's topics from settings, idempotently.

An existing topic with fewer partitions than asked for is reported, not silently grown:
adding partitions moves keys to other partitions and breaks per-entity ordering.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from kafka import KafkaAdminClient

from lambda_contracts.plumbing.kafka import new_consumer, topic_offsets
from lambda_contracts.settings import Settings
from lambda_contracts.topics import TopicSpec

TOPIC_ALREADY_EXISTS = 36


log = logging.getLogger(__name__)


class TopicMismatchError(RuntimeError):
    """An existing topic differs from its specification in a way that cannot be fixed in place."""


@dataclass(frozen=True)
class TopicReport:
    name: str
    partitions: int
    created: bool


def ensure_topics(admin: KafkaAdminClient, specs: list[TopicSpec]) -> list[TopicReport]:
    """Create missing topics and check existing ones; safe to run any number of times."""
    request = {
        spec.name: {
            "num_partitions": spec.partitions,
            "replication_factor": spec.replication_factor,
            "configs": spec.configs,
        }
        for spec in specs
    }
    response = admin.create_topics(request, raise_errors=False)
    created: set[str] = set()
    for topic in response["topics"]:
        if topic["error_code"] == 0:
            created.add(topic["name"])
        elif topic["error_code"] != TOPIC_ALREADY_EXISTS:
            raise TopicMismatchError(
                f"could not create topic {topic['name']}: {topic['error_message']} (error code {topic['error_code']})"
            )
    admin.wait_for_topics([spec.name for spec in specs])
    described = _partitions_with_leaders(admin, [spec.name for spec in specs])
    reports = []
    for spec in specs:
        actual = described[spec.name]
        if actual < spec.partitions:
            raise TopicMismatchError(
                f"topic {spec.name} has {actual} partitions but settings ask for {spec.partitions}; "
                "growing it would move keys between partitions. Either set "
                f"LAMBDA_TOPIC_PARTITIONS={actual} or recreate the topic on a fresh data dir."
            )
        reports.append(TopicReport(spec.name, actual, spec.name in created))
    return reports


def _partitions_with_leaders(admin: KafkaAdminClient, names: list[str], timeout_s: float = 30.0) -> dict[str, int]:
    """Partition counts once every partition has a leader: on a cluster, a broker that has not
    yet heard of a new topic describes it with no partitions."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.describe_topics(names)
        complete = all(t["partitions"] and all(p["leader_id"] >= 0 for p in t["partitions"]) for t in topics)
        if complete or time.monotonic() > deadline:
            if not complete:
                log.warning("topics %s still have partitions without a leader after %.0fs", names, timeout_s)
            return {t["name"]: len(t["partitions"]) for t in topics}
        time.sleep(0.2)  # polling the cluster's metadata, bounded by the deadline


@dataclass(frozen=True)
class PartitionPlacement:
    topic: str
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    end_offset: int

    def describe(self) -> str:
        return (
            f"{self.topic}[{self.partition}] leader {self.leader} replicas {self.replicas} "
            f"in-sync {self.isr} end offset {self.end_offset:,}"
        )


def describe_partitions(admin: KafkaAdminClient, settings: Settings) -> list[PartitionPlacement]:
    """Where each partition of the events topic lives and how far it goes."""
    topic = admin.describe_topics([settings.events_topic])[0]
    consumer = new_consumer(settings, group_id=None)
    try:
        ends = topic_offsets(consumer, settings.events_topic)
    finally:
        consumer.close(autocommit=False)
    return [
        PartitionPlacement(
            settings.events_topic,
            p["partition_index"],
            p["leader_id"],
            sorted(p["replica_nodes"]),
            sorted(p["isr_nodes"]),
            ends.get(p["partition_index"], 0),
        )
        for p in sorted(topic["partitions"], key=lambda p: p["partition_index"])
    ]
