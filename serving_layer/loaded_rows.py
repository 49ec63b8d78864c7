"""The partial rows of the snapshot's files, each file read once by the long-running serving process.

A speed publish replaces one open segment per partition and leaves every sealed segment and every
batch file as it was, so re-reading all of a view's files at each refresh (twice for the speed rows:
merged and alone) cost ten times what changed. Here each (view, layer) keeps the rows of the files
it has read in a temporary table of the serving process's admin connection, tagged with their file;
a refresh deletes the rows of files the snapshot no longer names and reads only the files it names
for the first time. This is exact because every file a snapshot names is immutable: a path read
once holds the same rows for as long as it is named. The changes run inside the refresh's
transaction, so a rolled-back refresh leaves the tables as the last committed one did; what was
read is remembered only once the caller commits.
"""

from __future__ import annotations

import duckdb

from lambda_contracts.views import View
from serving_layer.relations import SOURCE_FILE, empty_partials, quoted


class LoadedRows:
    """Temporary tables of partial rows per (view, layer), kept in step with a snapshot's file lists."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._connection = connection
        self._committed: dict[str, frozenset[str]] = {}
        """Table -> the files whose rows it holds, as of the last committed refresh."""
        self._pending: dict[str, frozenset[str]] = {}

    def rows(self, view: View, layer: str, files: list[str]) -> str:
        """Bring the table of ``view``'s ``layer`` rows to exactly ``files`` (inside the caller's transaction);
        the SELECT of those partial rows."""
        table = f"{view.name}_{layer}_rows"
        columns = ", ".join((*view.key_columns, *view.measure_columns))
        held = self._pending.get(table, self._committed.get(table))
        if held is None:
            self._connection.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS "
                f"SELECT *, CAST(NULL AS VARCHAR) AS {SOURCE_FILE} FROM ({empty_partials(view)})"
            )
            held = frozenset()
        wanted = frozenset(files)
        if gone := held - wanted:
            listing = ", ".join(quoted(f) for f in sorted(gone))
            self._connection.execute(f"DELETE FROM {table} WHERE {SOURCE_FILE} IN ({listing})")
        if new := [f for f in files if f not in held]:
            listing = ", ".join(quoted(f) for f in new)
            self._connection.execute(
                f"INSERT INTO {table} SELECT {columns}, filename FROM "
                f"read_parquet([{listing}], hive_partitioning = false, filename = true)"
            )
        self._pending[table] = wanted
        return f"SELECT {columns} FROM temp.{table}"

    def committed(self) -> None:
        """The caller's transaction committed: the tables now hold what the last calls asked for."""
        self._committed.update(self._pending)
        self._pending.clear()

    def rolled_back(self) -> None:
        """The caller's transaction rolled back: the tables hold what they held before it (one created in it
        is gone and was never committed here, so it is created again when next asked for)."""
        self._pending.clear()
