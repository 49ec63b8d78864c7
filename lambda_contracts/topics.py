"""Topic names and their specifications, derived from settings.

Events are keyed by entity (user or device id), so one entity's events stay in order on one
partition; the partition count is therefore part of the contract and only ever grows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lambda_contracts.settings import Settings

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def platform_topics(settings: Settings) -> list[TopicSpec]:
    """The events topic and its dead-letter topic, as the settings ask for them."""
    common = {
        "min.insync.replicas": str(settings.topic_min_insync_replicas),
        "cleanup.policy": "delete",
    }
    return [
        TopicSpec(
            settings.events_topic,
            settings.topic_partitions,
            settings.topic_replication_factor,
            {**common, "retention.ms": str(settings.events_retention_hours * HOUR_MS)},
        ),
        TopicSpec(
            settings.dead_letter_topic,
            settings.topic_partitions,
            settings.topic_replication_factor,
            {**common, "retention.ms": str(settings.dead_letter_retention_hours * HOUR_MS)},
        ),
    ]
