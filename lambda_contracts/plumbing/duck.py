"""DuckDB connections for platform code: always in UTC, so time buckets mean the same everywhere."""

from __future__ import annotations

from pathlib import Path

import duckdb


def connect(database: str | Path = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose session time zone is UTC (date_trunc on TIMESTAMPTZ depends on it)."""
    connection = duckdb.connect(str(database), read_only=read_only)
    connection.execute("SET TimeZone = 'UTC'")
    return connection
