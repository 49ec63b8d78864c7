"""The batch view manifest: which Parquet segments make up a batch view version, and its cutoff.

Layout under ``<data_dir>/views/batch``::

    CURRENT                      the published version number (replaced atomically)
    manifests/000007.json        one immutable manifest per version
    segments/000007-1a2b3c4d/    the Parquet files that version added (one folder per attempt)

A manifest says: every batch view row here counts exactly the valid events whose Kafka offset
is below ``cutoffs[partition]``. Readers read CURRENT once, then only that version's manifest and
files, so they never mix two versions; old files stay until no reader can still need them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
    """View -> bucket day (YYYY-MM-DD) -> Parquet files, relative to the batch views folder."""
    base_version: int = 0
    recomputed_days: list[str] = field(default_factory=list)

    def files(self, view: str) -> list[str]:
        return [f for day in sorted(self.segments.get(view, {})) for f in self.segments[view][day]]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["cutoffs"] = {int(p): int(c) for p, c in data["cutoffs"].items()}
        return cls(**data)


EMPTY = Manifest(version=0, run_id="", created_at="", topic="", lake_version=-1, cutoffs={})


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
