"""Which view set serving reads: the Lambda views, or a Kappa set that replaced them (blue/green).

A Kappa set is a speed layer of its own under ``<data_dir>/kappa/<name>`` (own consumer group, own
snapshots, an empty batch root) that rebuilt every view from the log. Serving reads the set named in
``<data_dir>/serving/view-set.json``, or the Lambda views when there is none. The pointer is replaced
atomically and read once per snapshot resolution, so a query reads the old set or the new one, never a
mix. It remembers the set it replaced and when, so that set's files outlive the readers that resolved
it before the switch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from lambda_contracts.plumbing.files import write_atomically
from lambda_contracts.settings import Settings

LAMBDA = "lambda"
"""The name the pointer uses for the Lambda views (batch + speed)."""


@dataclass(frozen=True)
class ServedSet:
    name: str
    """A Kappa set's name, or ``LAMBDA``."""
    previous: str | None = None
    switched_at: str | None = None


def view_set_settings(settings: Settings, name: str) -> Settings:
    """A Kappa set's own speed layer: its folder under ``data/kappa``, its own consumer group, no batch."""
    return settings.model_copy(
        update={"data_dir": settings.data_dir / "kappa" / name, "speed_group": f"{settings.speed_group}-kappa-{name}"}
    )


def pointer_path(settings: Settings) -> Path:
    return settings.data_dir / "serving" / "view-set.json"


def served_set(settings: Settings) -> ServedSet:
    """What serving reads now (the Lambda views unless a switch named a Kappa set)."""
    try:
        return ServedSet(**json.loads(pointer_path(settings).read_text()))
    except FileNotFoundError:
        return ServedSet(LAMBDA)


def switch_served_set(settings: Settings, name: str) -> ServedSet:
    """Make ``name`` (a Kappa set, or ``LAMBDA``) the set serving reads, atomically."""
    current = served_set(settings)
    switched = ServedSet(name, current.name, datetime.now(UTC).isoformat())
    write_atomically(pointer_path(settings), json.dumps(asdict(switched)) + "\n")
    return switched


def served_settings(settings: Settings) -> Settings:
    """The settings whose view roots serving reads now."""
    name = served_set(settings).name
    return settings if name == LAMBDA else view_set_settings(settings, name)
