"""The serving layer's read-only guard: user SQL reads the published views and nothing else."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from lambda_contracts.settings import Settings
from serving_layer.query import RefusedQueryError, check_read_only, query, serving_connection

pytestmark = pytest.mark.unit

REFUSED = [
    "CREATE TABLE t AS SELECT 1",
    "INSERT INTO page_views_per_minute VALUES (now(), 'p', 'web', 1, 1, 1)",
    "COPY (SELECT 1) TO '/tmp/out.csv'",
    "ATTACH '/tmp/other.duckdb' AS other",
    "SET enable_external_access = true",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA enable_profiling",
    "SELECT 1; DROP VIEW page_views_per_minute",
    "EXPORT DATABASE '/tmp/dump'",
    "",
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.mark.parametrize("sql", REFUSED)
def test_statements_other_than_select_are_refused(settings: Settings, sql: str) -> None:
    connection = serving_connection(settings)
    try:
        with pytest.raises(RefusedQueryError):
            check_read_only(connection, sql)
    finally:
        connection.close()


def test_select_and_explain_are_served_even_before_anything_is_published(settings: Settings) -> None:
    assert query(settings, "SELECT count(*) AS n FROM page_views_per_minute").to_pylist() == [{"n": 0}]
    assert query(settings, "EXPLAIN SELECT * FROM sensor_stats_per_minute").num_rows >= 1
    rows = query(settings, "SELECT kafka_partition FROM serving_status ORDER BY 1").to_pylist()
    assert [r["kafka_partition"] for r in rows] == list(range(settings.topic_partitions))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/*')",
    ],
)
def test_files_outside_the_published_views_cannot_be_read(settings: Settings, sql: str) -> None:
    connection = serving_connection(settings)
    try:
        check_read_only(connection, sql)  # a SELECT: it passes the statement check ...
        with pytest.raises(duckdb.Error, match=r"(?i)permission|disabled|not allowed"):
            connection.sql(sql).fetchall()  # ... and DuckDB's own file confinement stops it
    finally:
        connection.close()


def test_the_lockdown_cannot_be_lifted_from_a_statement(settings: Settings) -> None:
    connection = serving_connection(settings)
    try:
        with pytest.raises(duckdb.Error, match=r"(?i)locked"):
            connection.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error, match=r"(?i)locked"):
            connection.execute("RESET allowed_directories")
    finally:
        connection.close()
