"""The partial rows of the snapshot's files, each file read once by the long-running serving process.

A speed publish replaces one open segment per partition and leaves every sealed segment and every
batch file as it was, so re-reading all of a view's files at each refresh (twice for the speed rows:
merged and alone) cost ten times what changed. Here each (view, layer) keeps the rows of the files
it has read in a temporary table of the serving process's admin connection, tagged with their file;
a refresh deletes the rows of files the snapshot no longer names and reads only the files it names
for the first time. This is exact because every file a snapshot names is immutable: a path read
once holds the same rows for as long as it is named. The changes are statements the caller runs
inside the refresh's transaction (with the rest of the refresh, in one call: each call hands
Python's lock back and forth, which under load cost more than the statements), so a rolled-back
refresh leaves the tables as the last committed one did; what was read is remembered only once
the caller commits.
"""

from __future__ import annotations

from lambda_contracts.views import View
from serving_layer.relations import SOURCE_FILE, empty_partials, quoted


class LoadedRows:
    """Temporary tables of partial rows per (view, layer), kept in step with a snapshot's file lists."""

    def __init__(self) -> None:
        self._committed: dict[str, frozenset[str]] = {}
        """Table -> the files whose rows it holds, as of the last committed refresh."""
        self._pending: dict[str, frozenset[str]] = {}
        self._statements: list[str] = []

    def rows(self, view: View, layer: str, files: list[str]) -> str:
        """The SELECT of ``view``'s ``layer`` rows of exactly ``files``, once the statements ``changes`` hands
        over have run (inside the caller's transaction)."""
        table = f"{view.name}_{layer}_rows"
        columns = ", ".join((*view.key_columns, *view.measure_columns))
        held = self._pending.get(table, self._committed.get(table))
        if held is None:
            self._statements.append(
                f"CREATE OR REPLACE TEMP TABLE {table} AS "
                f"SELECT *, CAST(NULL AS VARCHAR) AS {SOURCE_FILE} FROM ({empty_partials(view)})"
            )
            held = frozenset()
        wanted = frozenset(files)
        if gone := held - wanted:
            listing = ", ".join(quoted(f) for f in sorted(gone))
            self._statements.append(f"DELETE FROM {table} WHERE {SOURCE_FILE} IN ({listing})")
        if new := [f for f in files if f not in held]:
            listing = ", ".join(quoted(f) for f in new)
            self._statements.append(
                f"INSERT INTO {table} SELECT {columns}, filename FROM "
                f"read_parquet([{listing}], hive_partitioning = false, filename = true)"
            )
        self._pending[table] = wanted
        return f"SELECT {columns} FROM temp.{table}"

    def changes(self) -> list[str]:
        """The statements, in order, that bring the tables to what the ``rows`` calls since the last
        ``changes`` asked for; the caller runs them inside its transaction."""
        statements, self._statements = self._statements, []
        return statements

    def committed(self) -> None:
        """The caller's transaction committed: the tables now hold what the last calls asked for."""
        self._committed.update(self._pending)
        self._pending.clear()
        self._statements.clear()

    def rolled_back(self) -> None:
        """The caller's transaction rolled back: the tables hold what they held before it (one created in it
        is gone and was never committed here, so it is created again when next asked for)."""
        self._pending.clear()
        self._statements.clear()
