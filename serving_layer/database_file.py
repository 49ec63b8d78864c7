"""A DuckDB database file of the serving relations, for the stock DuckDB CLI and BI tools.

The file holds only view definitions over the immutable files of one resolved snapshot. It is
written under a temporary name and renamed into place, so a reader that has it open keeps a
consistent snapshot; opening it again shows the newer one. ``lambdactl serve`` rewrites it every
``serving_refresh_seconds``.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from lambda_contracts.settings import Settings
from serving_layer.relations import relations
from serving_layer.snapshot import resolve


def write_database_file(settings: Settings) -> Path:
    target = settings.serving_database.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    connection = duckdb.connect(str(temporary))
    try:
        connection.execute("SET TimeZone = 'UTC'")
        for name, sql in relations(resolve(settings)).items():
            connection.execute(f"CREATE VIEW {name} AS {sql}")
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    temporary.replace(target)
    return target
