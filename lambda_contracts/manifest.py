"""The batch view manifest: which Parquet segments make up a batch view version, and its cutoff.

Layout under ``<data_dir>/views/batch``::

    CURRENT                      the published version number (replaced atomically)
    manifests/000007.json        one immutable manifest per version
    segments/000007-1a2b3c4d/    the Parquet files that version added (one folder per attempt)

A manifest says: every batch view row here counts exactly the valid events whose Kafka offset
is below ``cutoffs[partition]``, each ``event_id`` once, and ``ids`` lists exactly those event ids.
Readers read CURRENT once, then only that version's manifest and files, so they never mix two
versions; old files stay until no reader can still need them.

Rows and ids are kept per **period** of event time: an hour (``2026-11-24T13``) or, once compacted,
a whole day (``2026-11-24``). Copies of an event share its event time, so everything a run needs to
count an event once lies in that event's period: a run touches only the periods its new events
fall in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lambda_contracts.views import FIRST_VIEWS

CURRENT = "CURRENT"
MANIFESTS = "manifests"
SEGMENTS = "segments"


@dataclass(frozen=True)
class Manifest:
    version: int
    run_id: str
    created_at: str
    topic: str
    lake_version: int
    cutoffs: dict[int, int]
    """Partition -> offset C: events with offset < C are in this version, the rest are not."""
    segments: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """View -> period -> Parquet files of view rows, relative to the batch views folder."""
    base_version: int = 0
    recomputed_days: list[str] = field(default_factory=list)
    """Event days a recompute rebuilt from the lake (empty for an incremental run)."""
    ids: dict[str, list[str]] = field(default_factory=dict)
    """Period -> Parquet files of the event ids counted in it (one column, ``event_id``)."""
    touched: list[str] = field(default_factory=list)
    """Periods whose rows or ids this version rewrote."""
    counted: int = 0
    """Events this version added (new first copies below the new cutoffs)."""
    views: list[str] | None = None
    """The views this version holds rows of for every event below its cutoffs (None: written before
    manifests listed them, so ``FIRST_VIEWS``). A view declared since is backfilled by the next run."""

    def holds(self, view: str) -> bool:
        """Whether this version's rows of ``view`` are complete below the cutoffs (version 0 holds nothing to miss)."""
        if self.version == 0:
            return True
        return view in (FIRST_VIEWS if self.views is None else self.views)

    def files(self, view: str) -> list[str]:
        return [f for period in sorted(self.segments.get(view, {})) for f in self.segments[view][period]]

    def id_files(self, periods: Iterable[str] | None = None) -> list[str]:
        wanted = sorted(self.ids) if periods is None else sorted(set(periods) & set(self.ids))
        return [f for period in wanted for f in self.ids[period]]

    def period_of(self, hour: str) -> str:
        """The period an event hour (``YYYY-MM-DDTHH``) belongs to here: its day once compacted, else itself."""
        day = hour[:10]
        return day if day in self.ids or any(day in periods for periods in self.segments.values()) else hour

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["cutoffs"] = {int(p): int(c) for p, c in data["cutoffs"].items()}
        return cls(**data)


EMPTY = Manifest(version=0, run_id="", created_at="", topic="", lake_version=-1, cutoffs={})


def hour_key(moment: datetime) -> str:
    """The period key of an event hour, in UTC: ``YYYY-MM-DDTHH``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


def is_day(period: str) -> bool:
    return len(period) == len("YYYY-MM-DD")


def manifest_path(root: Path, version: int) -> Path:
    return root / MANIFESTS / f"{version:06d}.json"


def current_version(root: Path) -> int:
    """The published version, 0 before the first publish."""
    try:
        return int((root / CURRENT).read_text().strip())
    except FileNotFoundError:
        return 0


def read_manifest(root: Path, version: int) -> Manifest:
    if version == 0:
        return EMPTY
    return Manifest.from_json(manifest_path(root, version).read_text())


def read_current(root: Path) -> Manifest:
    """The published manifest (an empty one before the first publish)."""
    return read_manifest(root, current_version(root))
