"""One probe per component: how far it is and whether it works, read from what it publishes.

``lambdactl status``, the demo's console and ``lambdactl lake`` all call these, so a figure means
the same everywhere. Every probe reads the component's own published state (the broker's metadata,
the lake's Delta log, speed snapshots, the batch manifest, the serving database file, Airflow's
health endpoint), never a process list, so the same probes work against a docker-compose
deployment. Thresholds come from settings (``status_*``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka.errors import KafkaError

from batch_layer.lake import Lake, LakeProgress
from lambda_contracts.manifest import Manifest, read_current
from lambda_contracts.plumbing.kafka import admin_client, new_consumer, topic_offsets
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import PartitionSnapshot, read_snapshot
from lambdactl.airflow_api import AirflowHealth, airflow_health, airflow_url
from serving_layer.database_file import latest_database


@dataclass(frozen=True)
class Component:
    name: str
    up: bool
    detail: str


@dataclass(frozen=True)
class GroupProbe:
    component: Component
    group: str
    members: list[list[int]]
    """Per member, the partitions of the events topic it owns."""


@dataclass(frozen=True)
class KafkaProbe:
    component: Component
    ends: dict[int, int] = field(default_factory=dict)
    """Partition -> end offset of the events topic."""
    events_per_s: float | None = None
    dead_letters: int | None = None
    groups: list[GroupProbe] = field(default_factory=list)


def probe_kafka(settings: Settings, sample_s: float = 0.0) -> KafkaProbe:
    """The brokers, the events topic's end offsets (and rate over ``sample_s``), dead letters, groups."""
    try:
        consumer = new_consumer(settings, group_id=None)
    except KafkaError as error:  # no broker answers: down, and why
        return KafkaProbe(Component("kafka", False, f"unreachable at {settings.bootstrap_servers}: {error}"))
    try:
        first = topic_offsets(consumer, settings.events_topic)
        if sample_s:
            time.sleep(sample_s)  # a rate needs two samples
        ends = topic_offsets(consumer, settings.events_topic)
        dlq = topic_offsets(consumer, settings.dead_letter_topic)
        dlq_start = topic_offsets(consumer, settings.dead_letter_topic, beginning=True)
    finally:
        consumer.close(autocommit=False)
    with admin_client(settings) as admin:
        brokers = len([b for b in admin.describe_cluster()["brokers"] if not b.get("is_fenced")])
        try:
            described = admin.describe_groups([settings.lake_sink_group, settings.speed_group])
        except KafkaError as error:  # e.g. the group coordinator moves after a broker left
            described = {
                group: {"members": [], "group_state": f"unknown ({type(error).__name__})"}
                for group in (settings.lake_sink_group, settings.speed_group)
            }
    groups = [_group(settings, name, description) for name, description in described.items()]
    return KafkaProbe(
        Component("kafka", True, f"{brokers} broker(s) at {settings.bootstrap_servers}"),
        ends=ends,
        events_per_s=(sum(ends.values()) - sum(first.values())) / sample_s if sample_s else None,
        dead_letters=sum(dlq.values()) - sum(dlq_start.values()),
        groups=groups,
    )


def _group(settings: Settings, name: str, description: dict[str, Any]) -> GroupProbe:
    """A consumer group's members and the partitions of the events topic each one owns."""
    owned = []
    for member in description["members"]:
        assignment = member.get("member_assignment") or {}
        assigned = assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
        owned.append(sorted(p for a in assigned if a["topic"] == settings.events_topic for p in a["partitions"]))
    detail = f"{len(owned)} member(s), state {description['group_state']}"
    if owned:
        detail += "; partitions " + " ".join("[" + ",".join(map(str, o)) + "]" for o in sorted(owned))
    return GroupProbe(Component(f"group {name}", bool(owned), detail), name, owned)


@dataclass(frozen=True)
class LakeProbe:
    component: Component
    progress: LakeProgress | None = None
    lag: dict[int, int] = field(default_factory=dict)
    """Partition -> records of the topic the lake does not hold yet (with the topic's ends known)."""


def probe_lake(settings: Settings, ends: dict[int, int]) -> LakeProbe:
    partitions = sorted(ends) or list(range(settings.topic_partitions))
    progress = Lake(settings.lake_path, settings.events_topic).progress(partitions)
    if progress is None:
        return LakeProbe(Component("lake", False, f"no lake at {settings.lake_path} yet: start `lambdactl lake-sink`"))
    lag = {p: max(0, ends[p] - progress.offsets.get(p, 0)) for p in sorted(ends)}
    return LakeProbe(Component("lake", True, f"Delta version {progress.version}"), progress, lag)


@dataclass(frozen=True)
class SpeedProbe:
    component: Component
    snapshots: dict[int, PartitionSnapshot | None] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)


def probe_speed(settings: Settings, ends: dict[int, int]) -> SpeedProbe:
    """Down when a partition is behind the topic and has not published for ``status_speed_stale_seconds``."""
    now = datetime.now(UTC)
    partitions = sorted(ends) or list(range(settings.topic_partitions))
    snapshots = {p: read_snapshot(settings.speed_views_path, p) for p in partitions}
    if not any(snapshots.values()):
        idle = not any(ends.values())
        detail = "no events yet" if idle else "no speed state published yet: is a speed worker running?"
        return SpeedProbe(Component("speed", idle, detail), snapshots)
    lag, stale = {}, []
    for partition, snapshot in snapshots.items():
        behind = max(0, ends.get(partition, 0) - (snapshot.next_offset if snapshot else 0))
        lag[partition] = behind
        age = (now - datetime.fromisoformat(snapshot.published_at)).total_seconds() if snapshot else float("inf")
        if behind and age > settings.status_speed_stale_seconds:
            stale.append(f"{partition} ({age:.0f} s)")
    newest = max(datetime.fromisoformat(s.published_at) for s in snapshots.values() if s)
    detail = f"newest publish {(now - newest).total_seconds():.1f} s ago"
    if stale:
        detail += f"; behind and not publishing: partitions {', '.join(stale)}"
    return SpeedProbe(Component("speed", not stale, detail), snapshots, lag)


@dataclass(frozen=True)
class BatchProbe:
    component: Component
    manifest: Manifest
    age_s: float | None = None

    @property
    def covered_records(self) -> int:
        return sum(self.manifest.cutoffs.values())


def probe_batch(settings: Settings) -> BatchProbe:
    """Down before the first version, or when the newest is older than ``batch_stale_after_s``."""
    manifest = read_current(settings.batch_views_path)
    if manifest.version == 0:
        return BatchProbe(Component("batch", False, "no batch version published yet"), manifest)
    age = (datetime.now(UTC) - datetime.fromisoformat(manifest.created_at)).total_seconds()
    detail = f"version {manifest.version}, cutoff chosen {age / 60:.1f} min ago (run {manifest.run_id})"
    return BatchProbe(Component("batch", age <= settings.batch_stale_after_s, detail), manifest, age)


def probe_serving(settings: Settings) -> Component:
    """Down when serve last confirmed the newest database file current more than ``serving_stale_after_s``
    ago (it writes a new one when a layer published, else touches the current one)."""
    try:
        database = latest_database(settings)
    except FileNotFoundError:
        return Component("serving", False, "no database file published yet (lambdactl serve)")
    age = time.time() - database.stat().st_mtime
    return Component(
        "serving", age <= settings.serving_stale_after_s, f"{database.name} confirmed current {age:.1f} s ago"
    )


@dataclass(frozen=True)
class AirflowProbe:
    component: Component
    last_batch_run: Component | None = None


def probe_airflow(settings: Settings) -> AirflowProbe:
    """Airflow's own health (scheduler, dag-processor, triggerer, database) and the last batch_views run."""
    url = airflow_url(settings)
    health: AirflowHealth = airflow_health(url)
    if health.error is not None:
        return AirflowProbe(Component("airflow", False, f"no answer from {url}: {health.error}"))
    detail = ", ".join(f"{name} {state}" for name, state in health.parts.items())
    return AirflowProbe(Component("airflow", health.healthy, detail), _last_dag_run(settings, url))


def _last_dag_run(settings: Settings, url: str) -> Component:
    from lambdactl.airflow_api import AirflowLoginMissingError, airflow_api

    try:
        runs = airflow_api(settings, "/api/v2/dags/batch_views/dagRuns?order_by=-run_after&limit=1")
    except AirflowLoginMissingError as missing:
        return Component("batch_views DAG", False, str(missing))
    except (OSError, ValueError, KeyError) as error:
        return Component("batch_views DAG", False, f"could not read its runs from {url}: {error}")
    if not runs.get("dag_runs"):
        return Component("batch_views DAG", False, "no run yet")
    run = runs["dag_runs"][0]
    return Component("batch_views DAG", run["state"] != "failed", f"last run {run['dag_run_id']}: {run['state']}")
