"""`lambdactl status`: one screen that says whether the platform works, and where it does not.

Every figure comes from the component's own published state, not from a process list, so the
same command works on a laptop and against a docker-compose deployment: the broker answers a
DescribeCluster, the lake's Delta log holds the offsets it reflects, the speed layer's snapshots
hold theirs, the batch manifest holds its cutoffs, and Airflow answers its health and REST API.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka.errors import KafkaError

from batch_layer.lake import Lake
from lambda_contracts.manifest import read_current
from lambda_contracts.plumbing.kafka import admin_client, new_consumer, topic_offsets
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import read_snapshot
from lambdactl.airflow_local import ADMIN, saved_admin_password
from serving_layer.database_file import latest_database

HTTP_TIMEOUT_S = 3.0
SPEED_STALE_S = 10.0
"""Speed is 'down' when a partition is behind and its last publish is older than this."""


@dataclass
class Component:
    name: str
    up: bool
    detail: str


@dataclass
class Status:
    components: list[Component] = field(default_factory=list)
    events_per_s: float | None = None
    lag: dict[str, dict[int, int]] = field(default_factory=dict)
    """Consumer -> partition -> records the consumer's published state does not reflect yet."""
    dead_letters: int | None = None

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


PARTS = ("kafka", "lake", "speed", "batch", "serving", "airflow")


def collect(settings: Settings, sample_s: float = 1.0, parts: tuple[str, ...] = PARTS) -> Status:
    """Look at the components in ``parts``; a component that is down is reported, never raised."""
    status = Status()
    ends = _kafka(settings, status, sample_s) if {"kafka", "lake", "speed"} & set(parts) else {}
    if "lake" in parts:
        _lake(settings, status, ends)
    if "speed" in parts:
        _speed(settings, status, ends)
    if "batch" in parts:
        _batch(settings, status)
    if "serving" in parts:
        _serving(settings, status)
    if "airflow" in parts:
        _airflow(settings, status)
    return status


def healthy(status: Status, name: str) -> bool:
    """For container healthchecks: is ``name`` up?"""
    component = status.component(name)
    return component is not None and component.up


def _kafka(settings: Settings, status: Status, sample_s: float) -> dict[int, int]:
    try:
        consumer = new_consumer(settings, group_id=None)
    except KafkaError as error:  # no broker answers: down, and why
        status.components.append(Component("kafka", False, f"unreachable at {settings.bootstrap_servers}: {error}"))
        return {}
    try:
        first = topic_offsets(consumer, settings.events_topic)
        time.sleep(sample_s)  # a rate needs two samples
        ends = topic_offsets(consumer, settings.events_topic)
        dlq = topic_offsets(consumer, settings.dead_letter_topic)
        dlq_start = topic_offsets(consumer, settings.dead_letter_topic, beginning=True)
    finally:
        consumer.close(autocommit=False)
    with admin_client(settings) as admin:
        brokers = len([b for b in admin.describe_cluster()["brokers"] if not b.get("is_fenced")])
        try:
            groups = admin.describe_groups([settings.lake_sink_group, settings.speed_group])
        except KafkaError as error:  # e.g. the group coordinator moves after a broker left
            groups = {
                group: {"members": [], "group_state": f"unknown ({type(error).__name__})"}
                for group in (settings.lake_sink_group, settings.speed_group)
            }
    status.components.append(Component("kafka", True, f"{brokers} broker(s) at {settings.bootstrap_servers}"))
    status.events_per_s = (sum(ends.values()) - sum(first.values())) / sample_s if sample_s else None
    status.dead_letters = sum(dlq.values()) - sum(dlq_start.values())
    for group, description in groups.items():
        members = len(description["members"])
        detail = f"{members} member(s), state {description['group_state']}"
        status.components.append(Component(f"group {group}", members > 0, detail))
    return ends


def _lake(settings: Settings, status: Status, ends: dict[int, int]) -> None:
    lake = Lake(settings.lake_path, settings.events_topic)
    table = lake.table()
    if table is None:
        status.components.append(Component("lake", False, f"no lake at {settings.lake_path} yet"))
        return
    committed = lake.committed_offsets(sorted(ends), table)
    status.lag["lake-sink"] = {p: max(0, ends[p] - committed.get(p, 0)) for p in sorted(ends)}
    status.components.append(Component("lake", True, f"Delta version {table.version()}"))


def _speed(settings: Settings, status: Status, ends: dict[int, int]) -> None:
    now = datetime.now(UTC)
    partitions = sorted(ends) or list(range(settings.topic_partitions))
    snapshots = {p: read_snapshot(settings.speed_views_path, p) for p in partitions}
    if not any(snapshots.values()):
        status.components.append(Component("speed", False, "no speed state published yet"))
        return
    lag, stale = {}, []
    for partition, snapshot in snapshots.items():
        behind = max(0, ends.get(partition, 0) - (snapshot.next_offset if snapshot else 0))
        lag[partition] = behind
        age = (now - datetime.fromisoformat(snapshot.published_at)).total_seconds() if snapshot else float("inf")
        if behind and age > SPEED_STALE_S:
            stale.append(f"{partition} ({age:.0f} s)")
    status.lag["speed"] = lag
    newest = max(datetime.fromisoformat(s.published_at) for s in snapshots.values() if s)
    detail = f"newest publish {(now - newest).total_seconds():.1f} s ago"
    if stale:
        detail += f"; behind and not publishing: partitions {', '.join(stale)}"
    status.components.append(Component("speed", not stale, detail))


def _batch(settings: Settings, status: Status) -> None:
    manifest = read_current(settings.batch_views_path)
    if manifest.version == 0:
        status.components.append(Component("batch", False, "no batch version published yet"))
        return
    age = (datetime.now(UTC) - datetime.fromisoformat(manifest.created_at)).total_seconds()
    limit = 2 * settings.batch_interval_minutes * 60 + 300
    detail = f"version {manifest.version}, cutoff chosen {age / 60:.1f} min ago (run {manifest.run_id})"
    status.components.append(Component("batch", age <= limit, detail))


def _serving(settings: Settings, status: Status) -> None:
    try:
        database = latest_database(settings)
    except FileNotFoundError:
        status.components.append(Component("serving", False, "no database file published yet (lambdactl serve)"))
        return
    age = time.time() - database.stat().st_mtime
    up = age <= max(10.0, 5 * settings.serving_refresh_seconds)
    status.components.append(Component("serving", up, f"{database.name} published {age:.1f} s ago"))


def _airflow(settings: Settings, status: Status) -> None:
    url = airflow_url(settings)
    try:
        health = _get_json(f"{url}/api/v2/monitor/health")
    except (urllib.error.URLError, OSError, ValueError) as error:
        status.components.append(Component("airflow", False, f"no answer from {url}: {error}"))
        return
    parts = {name: value.get("status") for name, value in health.items() if isinstance(value, dict)}
    up = all(state == "healthy" for state in parts.values())
    detail = ", ".join(f"{name} {state}" for name, state in parts.items())
    status.components.append(Component("airflow", up, detail))
    status.components.append(_last_dag_run(settings, url))


def _last_dag_run(settings: Settings, url: str) -> Component:
    try:
        runs = airflow_api(settings, "/api/v2/dags/batch_views/dagRuns?order_by=-run_after&limit=1")
    except AirflowLoginMissingError as missing:
        return Component("batch_views DAG", False, str(missing))
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        return Component("batch_views DAG", False, f"could not read its runs from {url}: {error}")
    if not runs.get("dag_runs"):
        return Component("batch_views DAG", False, "no run yet")
    run = runs["dag_runs"][0]
    return Component("batch_views DAG", run["state"] != "failed", f"last run {run['dag_run_id']}: {run['state']}")


class AirflowLoginMissingError(RuntimeError):
    """No Airflow password is known for the REST API."""


def airflow_url(settings: Settings) -> str:
    return settings.airflow_url or f"http://127.0.0.1:{settings.airflow_port}"


def airflow_api(settings: Settings, path: str) -> Any:
    """GET ``path`` from Airflow's REST API, logged in as the configured user."""
    password = _airflow_password(settings)
    if password is None:
        raise AirflowLoginMissingError("set LAMBDA_AIRFLOW_PASSWORD to read from Airflow's REST API")
    url = airflow_url(settings)
    token = _post_json(f"{url}/auth/token", {"username": settings.airflow_username, "password": password})
    return _get_json(f"{url}{path}", {"Authorization": f"Bearer {token['access_token']}"})


def _airflow_password(settings: Settings) -> str | None:
    if settings.airflow_password.get_secret_value():
        return settings.airflow_password.get_secret_value()
    if settings.airflow_username == ADMIN:
        return saved_admin_password(settings)  # the embedded demo's generated one
    return None


def _get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.loads(response.read())


def _post_json(url: str, body: dict[str, str]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.loads(response.read())


def render(status: Status) -> list[str]:
    """The status as lines for a terminal."""
    lines = [f"{'up' if c.up else 'DOWN':>4}  {c.name:<18} {c.detail}" for c in status.components]
    if status.events_per_s is not None:
        lines.append(f"events in: {status.events_per_s:,.0f}/s; dead letters kept: {status.dead_letters:,}")
    for consumer, lag in status.lag.items():
        per_partition = " ".join(f"{p}:{n:,}" for p, n in lag.items())
        lines.append(f"lag {consumer}: {sum(lag.values()):,} records (partition:lag {per_partition})")
    return lines
