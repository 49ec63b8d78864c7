"""`lambdactl status`: one screen that says whether the platform works, and where it does not.

It composes the probes (``lambdactl.probes``), which read each component's own published state,
so the same command works on a laptop and against a docker-compose deployment.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from lambda_contracts.settings import Settings
from lambdactl.probes import (
    Component,
    probe_airflow,
    probe_batch,
    probe_kafka,
    probe_lake,
    probe_serving,
    probe_speed,
)


@dataclass
class Status:
    components: list[Component] = field(default_factory=list)
    events_per_s: float | None = None
    lag: dict[str, dict[int, int]] = field(default_factory=dict)
    """Consumer -> partition -> records the consumer's published state does not reflect yet."""
    dead_letters: int | None = None
    groups: dict[str, list[list[int]]] = field(default_factory=dict)
    """Consumer group -> per member, the partitions it owns."""

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


PARTS = ("kafka", "lake", "speed", "batch", "serving", "airflow")


def collect(settings: Settings, sample_s: float = 1.0, parts: tuple[str, ...] = PARTS) -> Status:
    """Look at the components in ``parts``; a component that is down is reported, never raised."""
    status = Status()
    ends: dict[int, int] = {}
    if {"kafka", "lake", "speed"} & set(parts):
        kafka = probe_kafka(settings, sample_s)
        status.components += [kafka.component, *(g.component for g in kafka.groups)]
        status.groups = {g.group: g.members for g in kafka.groups}
        status.events_per_s, status.dead_letters, ends = kafka.events_per_s, kafka.dead_letters, kafka.ends
    if "lake" in parts:
        lake = probe_lake(settings, ends)
        status.components.append(lake.component)
        if lake.progress is not None:
            status.lag["lake-sink"] = lake.lag
    if "speed" in parts:
        speed = probe_speed(settings, ends)
        status.components.append(speed.component)
        if speed.lag:
            status.lag["speed"] = speed.lag
    if "batch" in parts:
        status.components.append(probe_batch(settings).component)
    if "serving" in parts:
        status.components.append(probe_serving(settings))
    if "airflow" in parts:
        airflow = probe_airflow(settings)
        status.components.append(airflow.component)
        if airflow.last_batch_run is not None:
            status.components.append(airflow.last_batch_run)
    return status


def healthy(status: Status, name: str) -> bool:
    """For container healthchecks: is ``name`` up?"""
    component = status.component(name)
    return component is not None and component.up


def as_json(status: Status) -> str:
    """The status for scripts: one JSON object."""
    return json.dumps(asdict(status), sort_keys=True)


def render(status: Status) -> list[str]:
    """The status as lines for a terminal."""
    lines = [f"{'up' if c.up else 'DOWN':>4}  {c.name:<18} {c.detail}" for c in status.components]
    if status.events_per_s is not None:
        lines.append(f"events in: {status.events_per_s:,.0f}/s; dead letters kept: {status.dead_letters:,}")
    for consumer, lag in status.lag.items():
        per_partition = " ".join(f"{p}:{n:,}" for p, n in lag.items())
        lines.append(f"lag {consumer}: {sum(lag.values()):,} records (partition:lag {per_partition})")
    return lines
