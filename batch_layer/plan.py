"""What a batch run will do, decided once and saved under its run id so that a retry does the same.

An *advance* moves each partition's cutoff from ``previous[p]`` to ``cutoffs[p]`` (on a sealed speed
boundary the lake holds) and counts the new records in ``[previous, cutoff)``. A *recompute* keeps the
cutoffs and rebuilds the given event days from the lake, from scratch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from batch_layer.lake import Lake
from lambda_contracts.manifest import read_current
from lambda_contracts.plumbing.files import write_atomically
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import read_snapshot
from lambda_contracts.views import VIEW_NAMES

PLANS = "plans"


class EmptyLakeError(Exception):
    """The lake holds no data yet."""


@dataclass(frozen=True)
class Plan:
    run_id: str
    base_version: int
    version: int
    lake_version: int
    cutoffs: dict[int, int]
    reason: str
    mode: Literal["advance", "recompute"] = "advance"
    previous: dict[int, int] = field(default_factory=dict)
    """Advance: the base version's cutoffs, where the new records start."""
    days: list[str] = field(default_factory=list)
    """Recompute: the event days rebuilt from the lake."""

    @property
    def new_ranges(self) -> dict[int, tuple[int, int]]:
        """Partition -> the offsets ``[previous, cutoff)`` this advance counts."""
        return {p: (self.previous.get(p, 0), c) for p, c in self.cutoffs.items() if c > self.previous.get(p, 0)}

    @property
    def moves_nothing(self) -> bool:
        return self.mode == "advance" and not self.new_ranges


def plan_path(root: Path, run_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in run_id)
    return root / PLANS / f"{safe}.json"


def make_plan(settings: Settings, run_id: str, recompute: tuple[date | None, date | None] | None = None) -> Plan:
    """Decide cutoffs (advance) or the days to rebuild (recompute, at the current cutoffs)."""
    lake = Lake(settings.lake_path, settings.events_topic)
    table = lake.table()
    if table is None:
        raise EmptyLakeError(f"no lake at {settings.lake_path} yet: start the lake sink first")
    base = read_current(settings.batch_views_path)
    partitions = range(settings.topic_partitions)
    previous = {p: base.cutoffs.get(p, 0) for p in partitions}
    missing = [name for name in VIEW_NAMES if not base.holds(name)]
    if missing:  # views declared since the base was published: backfilled from the whole lake, once
        days = lake.days(table)
        reason = f"backfill of {', '.join(missing)} (new views): recompute of every event day, {len(days)} days"
        return Plan(run_id, base.version, base.version + 1, table.version(), previous, reason, "recompute", days=days)
    if recompute is None:
        lake_offsets = lake.committed_offsets(partitions, table)
        cutoffs = {p: choose_cutoff(settings, p, previous[p], lake_offsets[p]) for p in partitions}
        return Plan(run_id, base.version, base.version + 1, table.version(), cutoffs, "advance", "advance", previous)
    first, last = recompute
    days = [
        day
        for day in lake.days(table)
        if (first is None or day >= first.isoformat()) and (last is None or day <= last.isoformat())
    ]
    reason = f"recompute {first or 'start'}..{last or 'end'}"
    return Plan(run_id, base.version, base.version + 1, table.version(), previous, reason, "recompute", days=days)


def choose_cutoff(settings: Settings, partition: int, previous: int, lake_offset: int) -> int:
    """The new cutoff: the highest sealed speed boundary the lake holds, so the merge stays exact.

    Without a live speed layer (none published, or its last publish is older than
    ``speed_stale_after_seconds``) the cutoff is what the lake holds; a speed worker that comes
    back later jumps to it or rebuilds from it.
    """
    snapshot = read_snapshot(settings.speed_views_path, partition)
    if snapshot is None:
        return max(previous, lake_offset)
    age = datetime.now(UTC) - datetime.fromisoformat(snapshot.published_at)
    if age.total_seconds() > settings.speed_stale_after_seconds:
        return max(previous, lake_offset)
    usable = [b for b in snapshot.boundaries() if previous <= b <= lake_offset]
    return max(usable, default=previous)


def save_plan(path: Path, plan: Plan) -> None:
    write_atomically(path, json.dumps(asdict(plan), indent=1))


def load_plan(path: Path) -> Plan | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    for name in ("cutoffs", "previous"):
        data[name] = {int(p): int(c) for p, c in data.get(name, {}).items()}
    data.pop("recomputed_days", None)
    return Plan(**data)
