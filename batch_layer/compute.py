"""The batch layer's PySpark work: count new events into the views (advance) or rebuild days (recompute).

**Advance** costs what the new records cost. It reads only the lake files holding offsets in
``[previous C, C)`` (the Delta log's per-file statistics; each file holds one Kafka partition), keeps
each event's first copy among them, drops the ids already counted (the id index of the periods they
fall in: copies of an event share its event time, so no other period can hold one), aggregates what
is left with the views' declarations, and merges those partial rows into the previous rows of the
same periods with each measure's merge rule. Periods the new records do not touch are not read.

**Recompute** rebuilds event days from every lake record below ``C``, ids included. It is the oracle:
the tests hold every sequence of advances to what a recompute of everything publishes.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession, functions

from batch_layer.lake import Lake
from batch_layer.plan import Plan
from lambda_contracts.columns import LAKE_SCHEMA, UTC_MICROS, arrow_type
from lambda_contracts.manifest import SEGMENTS, Manifest
from lambda_contracts.plumbing import duck
from lambda_contracts.settings import Settings
from lambda_contracts.views import BUCKET, VIEWS, View

log = logging.getLogger(__name__)

PERIOD = "period"
IDS = "ids"
MAX_ID_RUNS = 8
"""A period's newest id files are merged (size-tiered) when a run would leave more than this many."""
PART = "part"
"""The folder column files are split by (``part=<period>``); ``period`` itself stays inside the files."""


@dataclass
class Update:
    """What a run wrote: per touched period, the files that now hold its rows and its ids."""

    segments: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """View -> period -> files (an empty list: the view has no rows in that period any more)."""
    ids: dict[str, list[str]] = field(default_factory=dict)
    replaced: set[str] = field(default_factory=set)
    """Periods whose previous rows and ids this update supersedes."""
    counted: int = 0


def hour_period(base: Manifest) -> str:
    """Spark SQL for an event's period: its hour, or its day where that day is compacted in ``base``."""
    hour = "date_format(date_trunc('hour', event_time), \"yyyy-MM-dd'T'HH\")"
    days = sorted(
        {p for periods in base.segments.values() for p in periods if len(p) == 10}
        | {p for p in base.ids if len(p) == 10}
    )
    if not days:
        return hour
    listed = ", ".join(f"'{d}'" for d in days)
    return f"CASE WHEN substr({hour}, 1, 10) IN ({listed}) THEN substr({hour}, 1, 10) ELSE {hour} END"


def spark_ddl(schema: pa.Schema) -> str:
    """A Spark schema for Arrow fields (given explicitly, so no job infers it from file footers)."""
    names = {
        pa.string(): "STRING",
        pa.int32(): "INT",
        pa.int64(): "BIGINT",
        pa.date32(): "DATE",
        UTC_MICROS: "TIMESTAMP",
    }
    columns = []
    for item in schema:
        kind = item.type
        spark_type = f"DECIMAL({kind.precision},{kind.scale})" if pa.types.is_decimal(kind) else names[kind]
        columns.append(f"{item.name} {spark_type}")
    return ", ".join(columns)


LAKE_DDL = spark_ddl(LAKE_SCHEMA)
IDS_DDL = f"{PERIOD} STRING, event_id STRING"


def read_lake(spark: SparkSession, settings: Settings, files: list[str]) -> DataFrame:
    """Lake rows from an explicit file list (no Delta log replay in Spark: delta-rs chose the files)."""
    root = str(settings.lake_path.resolve())
    return spark.read.schema(LAKE_DDL).option("basePath", root).parquet(*files)


NEEDED = sorted(
    {"event_id", "event_time", "event_type", "kafka_partition", "kafka_offset"}
    | {d.source for v in VIEWS for d in v.partial_dimensions}
    | {m.column for v in VIEWS for m in v.measures if m.column}
    | {f.column for v in VIEWS for f in v.filters}
)
"""The lake columns the views read: narrower rows through the shuffle and the cache."""


POSITION, FIRST_POSITION = "_position", "_first_position"
"""Working columns of ``first_copies``: a record's place in (partition, offset) order, and its id's first."""


def first_copies(rows: DataFrame, ranges: dict[int, tuple[int, int]]) -> DataFrame:
    """Each event_id once: its first copy by (partition, offset), the rule ``views.deduplicated_sql`` states.

    Copies are rare, so whole rows are not shuffled to find them: a hash aggregate of (event_id,
    position) alone finds the ids seen more than once and where their first copy is, and a join keeps
    that copy. ``ranges`` (partition -> [from, to) offsets, which every row lies in) number the
    positions in (partition, offset) order.
    """
    numbered = rows.withColumn(POSITION, functions.expr(position_sql(ranges)))
    repeated = (
        numbered.groupBy("event_id")
        .agg(functions.count("*").alias("copies"), functions.min(POSITION).alias(FIRST_POSITION))
        .where("copies > 1")
        .select("event_id", FIRST_POSITION)
    )
    first = f"{FIRST_POSITION} IS NULL OR {POSITION} = {FIRST_POSITION}"
    return numbered.join(repeated, "event_id", "left").where(first).drop(POSITION, FIRST_POSITION)


def position_sql(ranges: dict[int, tuple[int, int]]) -> str:
    """A record's place among all records of ``ranges`` in (partition, offset) order, counted from 0.

    One long orders them exactly as the pair does (no packing of partition and offset into bits that
    large offsets could overflow), as long as the ranges hold fewer than 2**63 records.
    """
    cases, before = [], 0
    for partition, (start, end) in sorted(ranges.items()):
        cases.append(f"WHEN {partition} THEN kafka_offset - {start} + {before}")
        before += end - start
    return f"CASE kafka_partition {' '.join(cases)} END" if cases else "CAST(NULL AS BIGINT)"


def range_condition(ranges: dict[int, tuple[int, int]]) -> str:
    cases = " ".join(
        f"WHEN {p} THEN kafka_offset >= {a} AND kafka_offset < {b}" for p, (a, b) in sorted(ranges.items())
    )
    return f"CASE kafka_partition {cases} ELSE false END" if cases else "false"


def cutoff_condition(cutoffs: dict[int, int]) -> str:
    """SQL that keeps records below their partition's cutoff."""
    return range_condition({p: (0, c) for p, c in cutoffs.items()})


def advance(spark: SparkSession, settings: Settings, plan: Plan, base: Manifest) -> Update:
    """Count the records in ``[previous C, C)`` into the views; work follows the new records.

    The result is small (the ids of the new events and the rows of the periods they touch), so it
    is collected as Arrow and written from the driver: one Spark job per output, no commit protocol.
    """
    lake = Lake(settings.lake_path, settings.events_topic)
    table = DeltaTable(str(settings.lake_path), version=plan.lake_version)
    files = lake.files_with_offsets(table, plan.new_ranges)
    if not files:
        return Update()
    periods = touched_periods(files, plan.new_ranges, base)
    rows = read_lake(spark, settings, files).where(range_condition(plan.new_ranges)).select(*NEEDED)
    root = settings.batch_views_path
    counted_before = base.id_files(periods)
    if counted_before:  # copies counted below the previous cutoff; dropping them first keeps the first-copy rule
        ids = spark.read.schema(IDS_DDL).parquet(*[str(root / f) for f in counted_before]).select("event_id")
        rows = rows.join(ids, "event_id", "left_anti")
    new = first_copies(rows, plan.new_ranges).withColumn(PERIOD, functions.expr(hour_period(base)))
    new = new.cache()  # read, deduplicated and checked once for the ids and every view
    folder = root / SEGMENTS / f"{plan.version:06d}-{uuid.uuid4().hex[:8]}"
    update = Update(replaced=set(periods))
    _split_write(new.select(PERIOD, "event_id"), folder / IDS, gather=False)  # as many ids as new events
    written = _listed(folder / IDS, root)
    update.counted = sum(pq.ParquetFile(root / f).metadata.num_rows for files in written.values() for f in files)
    for period in periods:
        update.ids[period] = base.ids.get(period, []) + written.get(period, [])
    new.createOrReplaceTempView("new_events")
    parts = []
    for view in VIEWS:
        partial = f"({view.aggregate_sql('new_events', by=(PERIOD,))})"
        bucket = f"date_format({BUCKET}, \"yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'\")"
        dimensions = [d.name for d in view.partial_dimensions]
        parts.append(
            _generic_sql(view.name, partial, bucket=bucket, dimensions=dimensions, measures=view.measure_columns)
        )
    results = spark.sql(" UNION ALL ".join(parts)).toArrow()  # every view's partial rows: few, in one job
    new.unpersist()
    log.info("run %s: writing version %d (%d new events)", plan.run_id, plan.version, update.counted)
    kinds = results.column(OUTPUT)
    for view in VIEWS:
        partial = _typed(view, results.filter(pc.equal(kinds, view.name)))
        old = [str(root / f) for p in periods for f in base.segments.get(view.name, {}).get(p, [])]
        written = _write_by_period(merge_rows(view, partial, old), folder / view.name, root)
        update.segments[view.name] = {period: written.get(period, []) for period in periods}
    _compact_ids(spark, root, folder / "ids-merged", update)
    return update


OUTPUT = "output"
WIDTH = max(len(v.partial_dimensions) for v in VIEWS), max(len(v.partial_measures) for v in VIEWS)
"""Dimension and measure columns of the one generic result every view's partial rows travel in."""


def _generic_sql(output: str, relation: str, *, bucket: str, dimensions: list[str], measures: tuple[str, ...]) -> str:
    """A SELECT of the generic result, as text: exact for decimals and counts, padded with nulls."""
    text = "CAST(NULL AS STRING)"
    padded_dims = [f"CAST({d} AS STRING)" for d in dimensions] + [text] * (WIDTH[0] - len(dimensions))
    padded_measures = [f"CAST({m} AS STRING)" for m in measures] + [text] * (WIDTH[1] - len(measures))
    columns = [f"'{output}' AS {OUTPUT}", PERIOD, f"{bucket} AS {BUCKET}"]
    columns += [f"{c} AS d{i}" for i, c in enumerate(padded_dims)]
    columns += [f"{c} AS m{j}" for j, c in enumerate(padded_measures)]
    return f"SELECT {', '.join(columns)} FROM {relation}"


def _typed(view: View, rows: pa.Table) -> pa.Table:
    """A view's partial rows back from the generic result, in the declared types."""
    arrays = [
        rows.column(PERIOD),
        pc.cast(rows.column(BUCKET), UTC_MICROS),
        *(rows.column(f"d{i}") for i in range(len(view.partial_dimensions))),
        *(pc.cast(rows.column(f"m{j}"), arrow_type(m.sql_type)) for j, m in enumerate(view.partial_measures)),
    ]
    return pa.table(arrays, names=[PERIOD, *view.key_columns, *view.measure_columns])


def merge_rows(view: View, partial: pa.Table, old_files: list[str]) -> pa.Table:
    """The new partial rows merged into the periods' previous rows with the view's own merge SQL."""
    connection = duck.connect()
    connection.register("partial_rows", partial)
    source = "SELECT * FROM partial_rows"
    if old_files:
        columns = ", ".join((PERIOD, *view.key_columns, *view.measure_columns))
        source = f"SELECT {columns} FROM read_parquet({old_files!r}) UNION ALL {source}"
    try:
        return connection.sql(view.merge_sql(f"({source}) AS parts", by=(PERIOD,))).to_arrow_table()
    finally:
        connection.close()


def touched_periods(files: list[str], ranges: dict[int, tuple[int, int]], base: Manifest) -> list[str]:
    """The periods the new records fall in: read from their event times alone (one column, on the driver)."""
    hours: set[str] = set()
    for file in files:
        partition = int(file.split("kafka_partition=")[1].split("/")[0])
        start, end = ranges[partition]
        times = pq.read_table(file, columns=["event_time", "kafka_offset"])
        offsets = times.column("kafka_offset")
        inside = pc.and_(pc.greater_equal(offsets, start), pc.less(offsets, end))
        stamps = pc.unique(pc.floor_temporal(times.column("event_time").filter(inside), unit="hour"))
        hours.update(pc.strftime(stamps, format="%Y-%m-%dT%H", locale="C").to_pylist())  # few: format after unique
    return sorted({base.period_of(hour) for hour in hours})


def _write_by_period(rows: pa.Table, target: Path, root: Path) -> dict[str, list[str]]:
    """One Parquet file per period under ``target/part=<period>/`` (the period stays a column)."""
    written: dict[str, list[str]] = {}
    if rows.num_rows == 0:
        return written
    column = rows.column(PERIOD)
    for period in pc.unique(column).to_pylist():
        folder = target / f"{PART}={period}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows.filter(pc.equal(column, period)), folder / "part-0.parquet")
        written[period] = [str((folder / "part-0.parquet").relative_to(root))]
    return written


def recompute(spark: SparkSession, settings: Settings, plan: Plan, base: Manifest) -> Update:
    """Rebuild the plan's event days from every lake record below the cutoffs."""
    lake = Lake(settings.lake_path, settings.events_topic)
    table = DeltaTable(str(settings.lake_path), version=plan.lake_version)
    files = lake.files_of_days(table, plan.days)
    replaced = {p for p in _all_periods(base) if p[:10] in plan.days}
    if not files:
        return _emptied(replaced)
    rows = read_lake(spark, settings, files).where(cutoff_condition(plan.cutoffs))
    fresh = Manifest(0, "", "", "", -1, {})  # a recompute writes hour periods; compaction may merge them again
    new = first_copies(rows, {p: (0, c) for p, c in plan.cutoffs.items()})
    new = new.withColumn(PERIOD, functions.expr(hour_period(fresh))).cache()
    periods = sorted(r[PERIOD] for r in new.select(PERIOD).distinct().collect())
    update = _write(spark, settings, plan, base, new, periods=periods, carry_forward=False)
    emptied = _emptied(replaced - update.replaced)  # periods that have no rows any more
    for view in VIEWS:
        update.segments[view.name].update(emptied.segments[view.name])
    update.ids.update(emptied.ids)
    update.replaced |= replaced
    return update


def _emptied(periods: set[str]) -> Update:
    return Update(
        segments={view.name: {p: [] for p in periods} for view in VIEWS},
        ids={p: [] for p in periods},
        replaced=set(periods),
    )


def _all_periods(manifest: Manifest) -> set[str]:
    return set(manifest.ids) | {p for periods in manifest.segments.values() for p in periods}


def _write(
    spark: SparkSession,
    settings: Settings,
    plan: Plan,
    base: Manifest,
    new: DataFrame,
    *,
    periods: list[str],
    carry_forward: bool,
) -> Update:
    """Write the ids and view rows of ``periods``; with ``carry_forward`` merged into the base's rows."""
    root = settings.batch_views_path
    attempt = f"{plan.version:06d}-{uuid.uuid4().hex[:8]}"
    folder = root / SEGMENTS / attempt
    update = Update(replaced=set(periods))
    new.createOrReplaceTempView("new_events")
    update.counted = new.count()
    _split_write(new.select(PERIOD, "event_id"), folder / IDS)
    written_ids = _listed(folder / IDS, root)
    for period in periods:
        runs = (base.ids.get(period, []) if carry_forward else []) + written_ids.get(period, [])
        update.ids[period] = runs
    _compact_ids(spark, root, folder / "ids-merged", update)
    for view in VIEWS:
        old = [f for p in periods for f in base.segments.get(view.name, {}).get(p, [])] if carry_forward else []
        rows = _view_rows(spark, view, [str(root / f) for f in old])
        _split_write(rows, folder / view.name)
        written = _listed(folder / view.name, root)
        update.segments[view.name] = {period: written.get(period, []) for period in periods}
    new.unpersist()
    return update


def _view_rows(spark: SparkSession, view: View, old_files: list[str]) -> DataFrame:
    """The view's rows of the new events, merged into ``old_files`` (the periods' previous rows) if any."""
    partial = spark.sql(view.aggregate_sql("new_events", by=(PERIOD,)))
    if not old_files:
        return partial
    columns = [PERIOD, *view.key_columns, *view.measure_columns]
    old = spark.read.parquet(*old_files).select(*columns)
    old.unionByName(partial).createOrReplaceTempView("view_parts")
    return spark.sql(view.merge_sql("view_parts", by=(PERIOD,)))


def _split_write(rows: DataFrame, target: Path, gather: bool = True) -> None:
    """A folder per period (``part=<period>``), the period kept as a column inside the files.

    ``gather`` shuffles each period's rows into one file; without it each task writes its share (one
    file per task and period), which spares a shuffle when the rows are already spread by key.
    """
    labelled = rows.withColumn(PART, functions.col(PERIOD))
    if gather:
        labelled = labelled.repartition(PART)
    labelled.write.mode("overwrite").partitionBy(PART).parquet(str(target))


def _listed(folder: Path, root: Path) -> dict[str, list[str]]:
    """Period -> the Parquet files a split write left in ``folder`` (relative to ``root``)."""
    found: dict[str, list[str]] = {}
    for file in sorted(folder.glob(f"{PART}=*/*.parquet")):
        found.setdefault(file.parent.name.split("=", 1)[1], []).append(str(file.relative_to(root)))
    return found


def _compact_ids(spark: SparkSession, root: Path, folder: Path, update: Update) -> None:
    """Merge the newest id runs of periods that have gathered too many, size-tiered: a run is merged
    again only when what came after it has grown to half its size, so the big old runs of a busy
    period stay as they are and each id is rewritten about log2(runs) times, not once per run."""
    crowded = {p: files for p, files in update.ids.items() if len(files) > MAX_ID_RUNS}
    if not crowded:
        return
    tails = {p: files[_tail_to_merge([_rows(root / f) for f in files]) :] for p, files in crowded.items()}
    ids = spark.read.parquet(*(str(root / f) for files in tails.values() for f in files)).select(PERIOD, "event_id")
    _split_write(ids.coalesce(1), folder)
    merged = _listed(folder, root)
    for period, files in crowded.items():
        update.ids[period] = files[: len(files) - len(tails[period])] + merged.get(period, [])


def _tail_to_merge(sizes: list[int]) -> int:
    """Where the runs to merge start (oldest first in ``sizes``): at least the two newest, and every
    older run no more than twice as large as all the runs after it."""
    start = len(sizes) - 2
    while start > 0 and sizes[start - 1] <= 2 * sum(sizes[start:]):
        start -= 1
    return start


def _rows(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)
