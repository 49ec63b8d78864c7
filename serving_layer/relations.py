"""The SQL of the serving relations, for one resolved snapshot.

For each declared view ``v``: ``v`` (merged: batch rows below the cutoff plus speed rows from
it, re-aggregated with the measures' merge rules; distinct counts count the union of their
members), ``v_batch`` and ``v_speed`` (each layer's rows alone, in the served shape) for inspection.
``serving_status`` shows, per partition, the batch version and cutoff, how far the speed layer
is, whether its rows are used (and if not, why), and up to which offset the merged views reflect the
events.
"""

from __future__ import annotations

from collections.abc import Callable

from lambda_contracts.views import BUCKET, VIEWS, Dimension, Measure, View
from serving_layer.snapshot import ServingSnapshot

STATUS = "serving_status"
SOURCE_FILE = "source_file"
"""The column that tags loaded partial rows with the file they came from (never served)."""

Rows = Callable[[View, str, list[str]], str]
"""(view, layer, files) -> a SELECT of the partial rows of those files (layer: batch or speed)."""


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


SUFFIXES = ("", "_batch", "_speed")
"""Each view's relations: merged, the batch layer's rows alone, the speed layer's alone."""


def _nulls(dimensions: tuple[Dimension, ...], measures: tuple[Measure, ...]) -> str:
    """Typed NULL columns: bucket, dimensions, measures (the shape of a relation with no rows)."""
    columns = [f"CAST(NULL AS TIMESTAMPTZ) AS {BUCKET}"]
    columns += [f"CAST(NULL AS VARCHAR) AS {d.name}" for d in dimensions]
    columns += [f"CAST(NULL AS {m.sql_type}) AS {m.name}" for m in measures]
    return ", ".join(columns)


def empty_partials(view: View) -> str:
    """No partial rows of ``view``, in their shape and types."""
    return f"SELECT {_nulls(view.partial_dimensions, view.partial_measures)} WHERE false"


def read_files(view: View, layer: str, files: list[str]) -> str:
    """The partial rows of ``files``, read from them by the query (``layer`` does not matter here)."""
    if not files:
        return empty_partials(view)
    columns = ", ".join((*view.key_columns, *view.measure_columns))
    listing = ", ".join(quoted(f) for f in files)
    return f"SELECT {columns} FROM read_parquet([{listing}], hive_partitioning = false)"


def _not_ready(view: View, reason: str) -> str:
    """A relation that fails, when queried, with the reason: never rows that might be incomplete."""
    message = quoted(f"view {view.name} is not ready: {reason}")
    return f"SELECT {_nulls(view.dimensions, view.measures)} WHERE error({message}) IS NULL"


def unready(snapshot: ServingSnapshot) -> set[str]:
    """The relations of views this snapshot cannot serve yet (they raise their reason when queried)."""
    names = [view.name for view in VIEWS if snapshot.not_ready(view.name)]
    return {f"{name}{suffix}" for name in names for suffix in SUFFIXES}


def relations(snapshot: ServingSnapshot, rows: Rows = read_files) -> dict[str, str]:
    """Relation name -> SELECT statement, all over the same snapshot: the batch rows of its version below the
    cutoffs and the speed rows from them on, as ``rows`` gives them (read from the files by default)."""
    out: dict[str, str] = {}
    for view in VIEWS:
        reason = snapshot.not_ready(view.name)
        if reason is not None:
            for suffix in SUFFIXES:
                out[f"{view.name}{suffix}"] = _not_ready(view, reason)
            continue
        batch = rows(view, "batch", snapshot.batch_files(view.name))
        speed = rows(view, "speed", snapshot.speed_files(view.name))
        out[view.name] = view.final_sql(f"({batch} UNION ALL {speed}) AS partials")
        out[f"{view.name}_batch"] = view.final_sql(f"({batch}) AS partials")
        out[f"{view.name}_speed"] = view.final_sql(f"({speed}) AS partials")
    out[STATUS] = status_sql(snapshot)
    return out


def served_content(statements: dict[str, str]) -> dict[str, str]:
    """The relations but the status: what changes only when a layer publishes (the status differs at every
    resolve, by its resolve time)."""
    return {name: sql for name, sql in statements.items() if name != STATUS}


def status_sql(snapshot: ServingSnapshot) -> str:
    reflected = snapshot.reflected_offsets()
    rows = []
    for partition, speed in sorted(snapshot.speed.items()):
        published = quoted(speed.published_at) if speed else "NULL"
        rows.append(
            f"({partition}, {snapshot.batch.version}, {snapshot.cutoff(partition)}, "
            f"{speed.next_offset if speed else 'NULL'}, {str(snapshot.speed_used(partition)).lower()}, "
            f"CAST({published} AS TIMESTAMPTZ), {reflected[partition]}, "
            f"CAST({quoted(snapshot.batch.created_at) if snapshot.batch.created_at else 'NULL'} AS TIMESTAMPTZ), "
            f"CAST({quoted(snapshot.resolved_at.isoformat())} AS TIMESTAMPTZ), "
            f"CAST({quoted(why) if (why := snapshot.speed_unused_because(partition)) else 'NULL'} AS VARCHAR))"
        )
    columns = (
        "kafka_partition, batch_version, batch_cutoff, speed_next_offset, speed_used, "
        "speed_published_at, reflected_offset, batch_published_at, resolved_at, speed_unused_because"
    )
    return f"SELECT * FROM (VALUES {', '.join(rows)}) AS status({columns})"
