"""The batch's id index as the speed layer keeps it: new files added, compactions absorbed, not reloaded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambda_contracts.columns import UTC_MICROS
from lambda_contracts.manifest import Manifest
from lambda_contracts.plumbing import event_ids
from speed_layer.counted import BatchIds

pytestmark = pytest.mark.unit

HOUR = "2026-12-07T02"
EVENT_TIME = datetime(2026, 12, 7, 2, 30, tzinfo=UTC)


def ids(count: int, seed: int) -> list[str]:
    return [str(uuid.UUID(int=seed << 64 | n, version=4)) for n in range(count)]


def id_file(root: Path, name: str, values: list[str]) -> str:
    pq.write_table(pa.table({"event_id": pa.array(values, pa.string())}), root / name)
    return name


def version(number: int, cutoff: int, files: dict[str, list[str]]) -> Manifest:
    return Manifest(number, f"run-{number}", "2026-12-07T03:00:00+00:00", "events", number, {0: cutoff}, ids=files)


@pytest.fixture(params=["in memory", "mapped"])
def batch(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BatchIds:
    """The index as the speed worker keeps it: in memory, or mapped from its scratch folder (runs of 64
    ids or more in files here, so these small periods exercise that path)."""
    folder = None
    if request.param == "mapped":
        monkeypatch.setattr(event_ids, "MAPPED_FROM_IDS", 64)
        folder = tmp_path / "scratch"
    return BatchIds(tmp_path, timedelta(minutes=5), folder=folder)


def events(values: list[str]) -> pa.Table:
    times = pa.array([EVENT_TIME] * len(values), UTC_MICROS)
    return pa.table({"event_id": pa.array(values, pa.string()), "event_time": times})


def test_a_compaction_is_absorbed_and_what_it_rewrote_is_offered_once(tmp_path: Path, batch: BatchIds) -> None:
    first, second, third, never = ids(300, 1), ids(200, 2), ids(100, 3), ids(50, 4)
    a, b = id_file(tmp_path, "a.parquet", first), id_file(tmp_path, "b.parquet", second)
    batch.use(version(1, 500, {HOUR: [a, b]}))
    asked = events(first + second + third + never)
    assert batch.counted(asked).sum() == 500  # loads the period
    # version 2 merges b with its own new ids into m: the loaded set takes what it lacks
    merged = id_file(tmp_path, "m.parquet", second + third)
    offered: list[int] = []
    batch.use(version(2, 600, {HOUR: [a, merged]}), lambda added: offered.append(len(added)))
    assert offered == [300], "the rewritten file's ids are offered for the speed layer's check"
    assert list(batch.counted(asked)) == [True] * 600 + [False] * 50
    held = batch._periods[HOUR][0]
    assert len(held) == 600, "no id is held twice after a compaction"
    mapped = [isinstance(run["high"], np.memmap) for run in held._runs]
    assert all(mapped) if batch.folder else not any(mapped)


def test_a_version_whose_cutoffs_went_back_is_loaded_again(tmp_path: Path, batch: BatchIds) -> None:
    first, second = ids(300, 1), ids(200, 2)
    both = id_file(tmp_path, "both.parquet", first + second)
    batch.use(version(1, 500, {HOUR: [both]}))
    assert batch.counted(events(first + second)).all()
    fewer = id_file(tmp_path, "fewer.parquet", first)  # an operator put an older state back, say
    batch.use(version(2, 300, {HOUR: [fewer]}))
    assert list(batch.counted(events(first + second))) == [True] * 300 + [False] * 200


def test_a_period_no_longer_listed_is_forgotten(tmp_path: Path, batch: BatchIds) -> None:
    batch.use(version(1, 10, {HOUR: [id_file(tmp_path, "h.parquet", ids(10, 1))]}))
    batch.counted(events(ids(10, 1)))
    batch.use(version(2, 10, {"2026-12-07": [id_file(tmp_path, "d.parquet", ids(10, 1))]}))
    assert HOUR not in batch._periods
    assert batch.counted(events(ids(10, 1))).all(), "looked up in its day now"
