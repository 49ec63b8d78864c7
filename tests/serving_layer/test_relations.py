"""The serving relations over a hand-made published state: which rows count, and how they merge."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lambda_contracts.manifest import CURRENT, Manifest, manifest_path
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import CURRENT as SPEED_CURRENT
from lambda_contracts.speed_snapshot import PartitionSnapshot, Segment, partition_root, snapshot_path
from lambda_contracts.views import VIEW_NAMES, VIEWS_BY_NAME
from serving_layer.database_file import DatabaseFiles, latest_database, publish_database_file
from serving_layer.live import LiveViews
from serving_layer.pgwire import catalog
from serving_layer.query import query
from serving_layer.relations import STATUS, Rows, read_files, relations
from serving_layer.snapshot import ServingSnapshot, resolve

pytestmark = pytest.mark.unit

VIEW = VIEWS_BY_NAME["product_sales_per_hour"]
HOUR = datetime(2026, 11, 24, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 11, tzinfo=UTC).isoformat()


def sales(rows: list[tuple[str, int, int, str, str]], **extra: int) -> pa.Table:
    """Rows of the view: (product, orders, units, revenue, largest order)."""
    columns: dict[str, list[object]] = {
        "bucket": [HOUR] * len(rows),
        "product_id": [r[0] for r in rows],
        "orders": [r[1] for r in rows],
        "units": [r[2] for r in rows],
        "revenue": [Decimal(r[3]) for r in rows],
        "largest_order": [Decimal(r[4]) for r in rows],
    }
    schema = [
        pa.field("bucket", pa.timestamp("us", tz="UTC")),
        pa.field("product_id", pa.string()),
        pa.field("orders", pa.int64()),
        pa.field("units", pa.int64()),
        pa.field("revenue", pa.decimal128(38, 2)),
        pa.field("largest_order", pa.decimal128(12, 2)),
    ]
    for name, value in extra.items():
        columns[name] = [value] * len(rows)
        schema.append(pa.field(name, pa.int32() if name == "kafka_partition" else pa.int64()))
    return pa.table(columns, schema=pa.schema(schema))


def publish_batch(
    settings: Settings, cutoffs: dict[int, int], rows: list[tuple[str, int, int, str, str]], version: int = 1
) -> None:
    root = settings.batch_views_path
    file = root / "segments" / f"{version:06d}-test" / f"{VIEW.name}.parquet"
    file.parent.mkdir(parents=True)
    pq.write_table(sales(rows), file)
    manifest = Manifest(
        version=version,
        run_id="test",
        created_at=NOW,
        topic="events",
        lake_version=3,
        cutoffs=cutoffs,
        segments={VIEW.name: {"2026-11-24": [str(file.relative_to(root))]}},
        views=list(VIEW_NAMES),  # written by this platform: it holds every declared view
    )
    manifest_path(root, version).parent.mkdir(parents=True, exist_ok=True)
    manifest_path(root, version).write_text(manifest.to_json())
    (root / CURRENT).write_text(f"{version}\n")


def publish_speed(
    settings: Settings,
    partition: int,
    next_offset: int,
    segments: dict[tuple[int, int], list[tuple[str, int, int, str, str]]],
    *,
    reconciled: int = 1,
    valid_from: int = 0,
) -> None:
    root = partition_root(settings.speed_views_path, partition)
    listed = []
    for (start, end), rows in segments.items():
        folder = f"segments/{start}-{end}-{reconciled}"
        (root / folder).mkdir(parents=True, exist_ok=True)
        pq.write_table(
            sales(rows, kafka_partition=partition, segment_start=start), root / folder / f"{VIEW.name}.parquet"
        )
        listed.append(Segment(start, end, folder, (VIEW.name,)))
    snapshot = PartitionSnapshot(
        partition,
        1,
        next_offset,
        listed,
        datetime.now(UTC).isoformat(),  # a live worker: its reconciled version holds readers back
        cutoff=0,
        reconciled=reconciled,
        valid_from=valid_from,
        views=VIEW_NAMES,
    )
    snapshot_path(settings.speed_views_path, partition, 1).parent.mkdir(parents=True, exist_ok=True)
    snapshot_path(settings.speed_views_path, partition, 1).write_text(snapshot.to_json())
    (root / SPEED_CURRENT).write_text("1\n")


def merged(settings: Settings) -> dict[str, tuple[int, int, Decimal, Decimal]]:
    rows = query(settings, f"SELECT * FROM {VIEW.name}").to_pylist()
    return {r["product_id"]: (r["orders"], r["units"], r["revenue"], r["largest_order"]) for r in rows}


def test_batch_below_the_cutoff_and_speed_from_it_merge_by_each_measures_rule(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, topic_partitions=2)
    publish_batch(settings, {0: 100, 1: 50}, [("p1", 3, 4, "30.00", "12.00"), ("p2", 1, 1, "5.00", "5.00")])
    publish_speed(
        settings,
        0,
        130,
        {
            (90, 100): [("p1", 7, 7, "70.00", "70.00")],  # below the cutoff, kept for readers of the old version
            (100, 120): [("p1", 2, 2, "20.00", "15.00")],
            (120, 130): [("p3", 1, 2, "8.00", "8.00")],
        },
    )
    publish_speed(settings, 1, 60, {(50, 60): [("p2", 1, 3, "9.00", "9.00")]})

    assert merged(settings) == {
        "p1": (5, 6, Decimal("50.00"), Decimal("15.00")),  # counts and sums add, maxima combine
        "p2": (2, 4, Decimal("14.00"), Decimal("9.00")),
        "p3": (1, 2, Decimal("8.00"), Decimal("8.00")),
    }
    status = query(settings, "SELECT * FROM serving_status ORDER BY kafka_partition").to_pylist()
    assert [(s["batch_cutoff"], s["speed_used"], s["reflected_offset"]) for s in status] == [
        (100, True, 130),
        (50, True, 60),
    ]
    speed_only = query(settings, f"SELECT sum(orders) AS n FROM {VIEW.name}_speed").to_pylist()
    assert speed_only == [{"n": 4}], "the inspection relation shows the speed rows that count"


def test_a_partition_whose_speed_state_does_not_start_at_the_cutoff_is_served_from_the_batch(tmp_path: Path) -> None:
    """Its events from the cutoff on are counted in its speed rows alone: partition 1 may have dropped copies
    of them, so partition 1 is served from the batch too, or those events would be missing."""
    settings = Settings(data_dir=tmp_path, topic_partitions=2)
    publish_batch(settings, {0: 100, 1: 50}, [("p1", 3, 4, "30.00", "12.00")])
    publish_speed(settings, 0, 130, {(110, 130): [("p1", 2, 2, "20.00", "15.00")]})  # a gap: 100..110 missing
    publish_speed(settings, 1, 60, {(50, 60): [("p2", 1, 3, "9.00", "9.00")]})

    assert merged(settings) == {"p1": (3, 4, Decimal("30.00"), Decimal("12.00"))}
    status = query(settings, "SELECT * FROM serving_status ORDER BY kafka_partition").to_pylist()
    assert [(s["speed_used"], s["reflected_offset"]) for s in status] == [(False, 100), (False, 50)]
    assert "do not run on from the cutoff 100" in status[0]["speed_unused_because"]
    assert "partition(s) 0 cannot be merged with batch version 1" in status[1]["speed_unused_because"]


def test_a_partition_that_counted_nothing_from_the_cutoff_does_not_hold_the_others_back(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, topic_partitions=2)
    publish_batch(settings, {0: 100, 1: 50}, [("p1", 3, 4, "30.00", "12.00")])
    publish_speed(settings, 0, 100, {(90, 100): [("p1", 2, 2, "20.00", "15.00")]}, reconciled=2, valid_from=2)
    publish_speed(settings, 1, 60, {(50, 60): [("p2", 1, 3, "9.00", "9.00")]})

    status = query(settings, "SELECT * FROM serving_status ORDER BY kafka_partition").to_pylist()
    assert [(s["speed_used"], s["reflected_offset"]) for s in status] == [(False, 100), (True, 60)]
    assert [s["speed_unused_because"] for s in status] == [
        "rebuilt for batch version 2; readers stay on version 1 until every live speed worker has reconciled "
        "the newer one",
        None,
    ]
    assert merged(settings)["p2"] == (1, 3, Decimal("9.00"), Decimal("9.00"))


def test_readers_stay_on_the_version_live_speed_workers_reconciled_and_each_event_counts_once(tmp_path: Path) -> None:
    """Right after a batch publish, the previous version with fresh speed rows; a rebuilt partition waits."""
    settings = Settings(data_dir=tmp_path, topic_partitions=2)
    publish_batch(settings, {0: 100, 1: 50}, [("p1", 3, 4, "30.00", "12.00")], version=1)
    publish_batch(settings, {0: 120, 1: 60}, [("p1", 5, 6, "50.00", "15.00"), ("p2", 1, 3, "9.00", "9.00")], version=2)
    publish_speed(
        settings, 0, 130, {(100, 120): [("p1", 2, 2, "20.00", "15.00")], (120, 130): [("p3", 1, 2, "8.00", "8.00")]}
    )
    publish_speed(settings, 1, 70, {(50, 60): [("p2", 1, 3, "9.00", "9.00")], (60, 70): [("p4", 1, 1, "1.00", "1.00")]})
    status = query(settings, "SELECT * FROM serving_status ORDER BY kafka_partition").to_pylist()
    assert {s["batch_version"] for s in status} == {1}, "version 2 waits until the speed workers reconciled it"
    assert merged(settings) == {
        "p1": (5, 6, Decimal("50.00"), Decimal("15.00")),
        "p2": (1, 3, Decimal("9.00"), Decimal("9.00")),
        "p3": (1, 2, Decimal("8.00"), Decimal("8.00")),
        "p4": (1, 1, Decimal("1.00"), Decimal("1.00")),
    }

    # partition 1's worker rebuilt from version 2's cutoff and published before partition 0's worker reconciled
    # version 2: partition 1's rows are for version 2 only, and partition 0 may have dropped copies of events
    # they count, so version 1 is served from the batch alone until partition 0 reconciles
    publish_speed(settings, 1, 70, {(60, 70): [("p4", 1, 1, "1.00", "1.00")]}, reconciled=2, valid_from=2)
    status = query(settings, "SELECT * FROM serving_status ORDER BY kafka_partition").to_pylist()
    assert [(s["batch_version"], s["speed_used"], s["reflected_offset"]) for s in status] == [
        (1, False, 100),
        (1, False, 50),
    ]
    assert merged(settings) == {"p1": (3, 4, Decimal("30.00"), Decimal("12.00"))}

    publish_speed(settings, 0, 130, {(120, 130): [("p3", 1, 2, "8.00", "8.00")]}, reconciled=2)
    publish_speed(settings, 1, 70, {(60, 70): [("p4", 1, 1, "1.00", "1.00")]}, reconciled=2, valid_from=2)
    status = query(settings, "SELECT * FROM serving_status ORDER BY kafka_partition").to_pylist()
    assert [(s["batch_version"], s["speed_used"], s["reflected_offset"]) for s in status] == [
        (2, True, 130),
        (2, True, 70),
    ]
    assert merged(settings)["p4"] == (1, 1, Decimal("1.00"), Decimal("1.00"))


STOCK_CLI = Path(__file__).resolve().parents[2] / ".tools" / "duckdb-cli" / "bin" / "duckdb"


def test_the_stock_duckdb_cli_opens_the_served_file_and_reads_every_view(tmp_path: Path) -> None:
    """The served file is written in a storage format older DuckDB releases read, not only this library's."""
    assert STOCK_CLI.exists(), f"no stock DuckDB CLI at {STOCK_CLI}: `./dev test` installs it (duckdb-cli on PyPI)"
    settings = Settings(data_dir=tmp_path, topic_partitions=2)
    publish_batch(settings, {0: 100, 1: 50}, [("p1", 3, 4, "30.00", "12.00"), ("p2", 1, 1, "5.00", "5.00")])
    publish_speed(settings, 0, 130, {(100, 130): [("p1", 2, 2, "20.00", "15.00")]})
    served = publish_database_file(settings)
    cli_version = subprocess.run([STOCK_CLI, "--version"], capture_output=True, text=True, check=True).stdout
    counts = " UNION ALL ".join(f"SELECT '{view.name}', count(*) FROM {view.name}" for view in VIEWS_BY_NAME.values())
    result = subprocess.run(
        [STOCK_CLI, "-readonly", "-csv", "-noheader", str(served), "-c", f"{counts}; SELECT * FROM serving_status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr, f"{cli_version}: {result.stderr}"
    lines = result.stdout.splitlines()
    assert set(lines[: len(VIEWS_BY_NAME)]) == {f"{name},{2 if name == VIEW.name else 0}" for name in VIEWS_BY_NAME}, (
        "every view answers, with the merged rows of this snapshot"
    )
    assert len(lines) == len(VIEWS_BY_NAME) + 2, "and the status relation lists both partitions"


def served_and_read_from_files(live: LiveViews, settings: Settings) -> tuple[dict[str, list[tuple[object, ...]]], ...]:
    """Every relation but the status, as the live tables serve it and as a query over the files reads it."""
    session = live.session()
    names = [name for name in relations(resolve(settings)) if name != STATUS]
    served = {name: sorted(session.execute(f"SELECT * FROM {name}").fetchall()) for name in names}
    read = {
        name: sorted(tuple(r.values()) for r in query(settings, f"SELECT * FROM {name}").to_pylist()) for name in names
    }
    return served, read


def test_live_tables_read_each_file_once_and_still_equal_the_files_through_publishes_and_failed_refreshes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live views keep the rows of files already read and read only new ones: after open segments are
    replaced, a batch version moves the cutoffs, and refreshes fail (rolled back: before the transaction
    began, while reading files, after every file was read; the first before any table was committed),
    every served relation still equals the same query over the files."""
    settings = Settings(data_dir=tmp_path, topic_partitions=2)
    publish_batch(settings, {0: 100, 1: 50}, [("p1", 3, 4, "30.00", "12.00")], version=1)
    publish_speed(settings, 0, 120, {(100, 120): [("p1", 2, 2, "20.00", "15.00")]})
    publish_speed(settings, 1, 60, {(50, 60): [("p2", 1, 3, "9.00", "9.00")]})
    live = LiveViews(settings)
    failing: dict[str, str | None] = {"at": None}
    real_columns, real_changes = catalog.relation_columns, live._loaded.changes

    def fails_at(where: str) -> bool:
        if failing["at"] != where:
            return False
        failing["at"] = None
        return True

    def fail_after_the_rows_were_read(connection: duckdb.DuckDBPyConnection) -> list[tuple[str, list[tuple[str, str]]]]:
        if fails_at("after reading"):
            raise duckdb.IOException("disk went away half-way through the refresh")
        return real_columns(connection)

    def fail_before_the_transaction(snapshot: ServingSnapshot, rows: Rows = read_files) -> dict[str, str]:
        statements = relations(snapshot, rows)  # the rows to read are noted, not read yet
        if rows == live._loaded.rows and fails_at("before the transaction"):
            raise ValueError("a view declaration could not be read")
        return statements

    def fail_while_reading() -> list[str]:
        changes = real_changes()
        if fails_at("while reading"):  # a file pruned under the refresh: the reads before it are undone
            changes.insert(len(changes) // 2, f"SELECT * FROM read_parquet('{settings.data_dir}/views/gone.parquet')")
        return changes

    monkeypatch.setattr(catalog, "relation_columns", fail_after_the_rows_were_read)
    monkeypatch.setattr("serving_layer.live.relations", fail_before_the_transaction)
    monkeypatch.setattr(live._loaded, "changes", fail_while_reading)

    def first() -> None:
        pass

    def open_segment_sealed() -> None:
        rows = {(100, 120): [("p1", 2, 2, "20.00", "15.00")], (120, 130): [("p3", 1, 2, "8.00", "8.00")]}
        publish_speed(settings, 0, 130, rows)

    def open_segment_replaced() -> None:  # by a longer one: a new file
        rows = {(100, 120): [("p1", 2, 2, "20.00", "15.00")], (120, 135): [("p3", 2, 5, "18.00", "10.00")]}
        publish_speed(settings, 0, 135, rows)

    def batch_version_reconciled() -> None:  # the cutoffs move, and both workers reconcile the version
        batch = [("p1", 5, 6, "50.00", "15.00"), ("p2", 1, 3, "9.00", "9.00")]
        publish_batch(settings, {0: 120, 1: 60}, batch, version=2)
        publish_speed(settings, 0, 140, {(120, 140): [("p3", 3, 6, "21.00", "10.00")]}, reconciled=2)
        publish_speed(settings, 1, 65, {(60, 65): [("p4", 1, 1, "1.00", "1.00")]}, reconciled=2)

    steps = [first, open_segment_sealed, open_segment_replaced, batch_version_reconciled]
    failures = ("after reading", None, "while reading", "before the transaction")
    for step, failure in zip(steps, failures, strict=True):
        step()
        if failure:
            failing["at"] = failure
            with pytest.raises((duckdb.IOException, ValueError)):
                live.refresh()
            assert failing["at"] is None, f"failed {failure}"
        assert live.refresh()
        served, read = served_and_read_from_files(live, settings)
        assert served == read
    assert served[VIEW.name] == [
        (HOUR, "p1", 5, 6, Decimal("50.00"), Decimal("15.00")),
        (HOUR, "p2", 1, 3, Decimal("9.00"), Decimal("9.00")),
        (HOUR, "p3", 3, 6, Decimal("21.00"), Decimal("10.00")),
        (HOUR, "p4", 1, 1, Decimal("1.00"), Decimal("1.00")),
    ], "version 2 below the new cutoffs, the speed rows from them on"
    live.close()


def test_the_database_file_is_renewed_only_when_the_snapshot_shows_something_new(tmp_path: Path) -> None:
    """A new file costs a DuckDB database written and checkpointed: none while nothing was published, one
    when rows changed, one when only the offsets the views reflect moved (the status must not lag behind)."""
    settings = Settings(data_dir=tmp_path, topic_partitions=2)
    publish_batch(settings, {0: 100, 1: 50}, [("p1", 3, 4, "30.00", "12.00")])
    publish_speed(settings, 0, 120, {(100, 120): [("p1", 2, 2, "20.00", "15.00")]})
    publish_speed(settings, 1, 60, {(50, 60): [("p2", 1, 3, "9.00", "9.00")]})
    files = DatabaseFiles(settings)
    first = files.renew()
    os.utime(first, (0, 0))
    assert files.renew() == first == latest_database(settings), "nothing published: no new file"
    assert time.time() - first.stat().st_mtime < 60, "but confirmed current: the health probe reads its time"

    rows = {(50, 60): [("p2", 1, 3, "9.00", "9.00")], (60, 70): [("p4", 1, 1, "1.00", "1.00")]}
    publish_speed(settings, 1, 70, rows)
    second = files.renew()
    assert second != first and latest_database(settings) == second

    rows = {(50, 60): [("p2", 1, 3, "9.00", "9.00")], (60, 75): [("p4", 1, 1, "1.00", "1.00")]}
    publish_speed(settings, 1, 75, rows)  # offsets 70..75 held nothing to count (duplicates, say)
    third = files.renew()
    assert third != second and files.renew() == third
    status = duckdb.connect(str(third), read_only=True).execute(
        "SELECT reflected_offset, speed_unused_because FROM serving_status ORDER BY kafka_partition"
    )
    assert status.fetchall() == [(120, None), (75, None)]
