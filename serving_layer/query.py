"""Querying the merged views from Python: Arrow or pandas out, read-only by construction.

Each query resolves one snapshot of what the layers published and runs over it, so it never
mixes two versions. User SQL is confined three ways: only SELECT and EXPLAIN statements are
accepted (no CREATE, COPY, ATTACH, SET, ...); DuckDB's file access is limited to the platform's
published views (``allowed_directories`` with ``enable_external_access = false``), so no other
file can be read; and the configuration is locked, so a statement cannot lift either limit.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from lambda_contracts.plumbing import duck
from lambda_contracts.settings import Settings
from serving_layer.relations import relations
from serving_layer.snapshot import resolve

ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class RefusedQueryError(ValueError):
    """The SQL does something other than read the platform's views; the message says what."""


def serving_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB session with every serving relation over one resolved snapshot."""
    snapshot = resolve(settings)
    connection = duck.connect()
    for name, sql in relations(snapshot).items():
        connection.execute(f"CREATE TEMP VIEW {name} AS {sql}")
    views = sorted({str(root.parent.resolve()) for root in (snapshot.batch_root, snapshot.speed_root)})
    connection.execute(f"SET allowed_directories = [{', '.join(repr(v + '/') for v in views)}]")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def check_read_only(connection: duckdb.DuckDBPyConnection, sql: str) -> None:
    statements = connection.extract_statements(sql)
    if not statements:
        raise RefusedQueryError("no SQL statement given")
    for statement in statements:
        if statement.type not in ALLOWED_STATEMENTS:
            raise RefusedQueryError(
                f"only SELECT (and EXPLAIN) queries are served; refused a {statement.type.name} statement"
            )


def query(settings: Settings, sql: str) -> pa.Table:
    """Run a read-only SQL query over the merged views; returns Arrow."""
    connection = serving_connection(settings)
    try:
        check_read_only(connection, sql)
        return connection.sql(sql).to_arrow_table()
    finally:
        connection.close()


def query_df(settings: Settings, sql: str) -> Any:
    """The same, as a pandas DataFrame (needs pandas installed)."""
    return query(settings, sql).to_pandas()
