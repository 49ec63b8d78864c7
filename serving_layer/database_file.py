"""DuckDB database files of the merged views, for the stock DuckDB CLI and BI tools.

DuckDB opens a database file several times by path while connecting, and reads a Parquet file's
metadata and data in separate opens, so no path a reader may open is ever replaced. Instead,
``lambdactl serve`` looks every ``serving_refresh_seconds`` and, when a layer has published since,
writes a new immutable database file (``versions/lambda-<n>.duckdb``) whose views name the
immutable files of one resolved snapshot, then publishes its name in ``LATEST`` (written whole by
rename). ``lambda.duckdb`` is a symlink
to the newest file for convenience; opening it at the very instant it is renewed can fail, so
tools that reconnect often should open the path in ``LATEST``. A session keeps the snapshot it
opened; reconnect to see newer data. Files older than the speed layer's grace period may point
at pruned speed segments, so long sessions reconnect. Files are written in the storage format of
``serving_storage_version`` (DuckDB 1.5 by default), so the stock DuckDB CLI of that release or newer
opens them, not only the DuckDB library this platform runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb

from lambda_contracts.plumbing.files import write_atomically
from lambda_contracts.settings import Settings
from serving_layer.relations import relations, served_content
from serving_layer.snapshot import resolve

LATEST = "LATEST"
VERSIONS = "versions"
KEEP_FILES = 5


def latest_database(settings: Settings) -> Path:
    """The newest published database file (what ``LATEST`` names)."""
    root = settings.serving_database.parent
    return Path((root / LATEST).read_text().strip())


def publish_database_file(settings: Settings) -> Path:
    """Write a new database file over the current snapshot and make it the latest."""
    return _write(settings, relations(resolve(settings)))


class DatabaseFiles:
    """Renews the database file when a layer has published since the last one: a file costs ~40 ms of CPU
    (a DuckDB database written and checkpointed), which a serving process paid every second while
    nothing changed. Otherwise the latest file's modification time is set to now: it says when serve
    last confirmed that the file shows the current snapshot (the health probe reads it), and keeps the
    file from being pruned as old while it is current."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._latest: Path | None = None
        self._shows: tuple[object, ...] = ()
        """What the latest file shows: its relations but the status (whose resolve time differs at every
        resolve), the batch version and how far the merged views reflect each partition."""

    def renew(self) -> Path:
        """The latest database file: a new one if the current snapshot shows anything the latest does not."""
        snapshot = resolve(self.settings)
        statements = relations(snapshot)
        content = served_content(statements)
        shows = (content, snapshot.batch.version, snapshot.reflected_offsets())
        if self._latest is None or shows != self._shows or not self._latest.exists():
            self._latest, self._shows = _write(self.settings, statements), shows
        else:
            os.utime(self._latest)
        return self._latest


def _write(settings: Settings, statements: dict[str, str]) -> Path:
    root = settings.serving_database.parent.resolve()
    folder = root / VERSIONS
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"lambda-{time.time_ns()}.duckdb"
    temporary = target.with_name(f".{target.name}.tmp")
    # written in a storage format older DuckDB releases read too (the CLI on PyPI lags the library)
    connection = duckdb.connect(
        str(temporary), config={"storage_compatibility_version": settings.serving_storage_version}
    )
    try:
        for name, sql in statements.items():
            connection.execute(f"CREATE VIEW {name} AS {sql}")
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    temporary.replace(target)
    write_atomically(root / LATEST, f"{target}\n")
    link = root / settings.serving_database.name
    staging = root / f".{link.name}.{os.getpid()}.link"
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    staging.replace(link)
    _prune(folder, settings.speed_superseded_grace_seconds)  # older files may name replaced speed files
    return target


def _prune(folder: Path, grace_seconds: float) -> None:
    """Delete database files that are neither among the newest nor younger than the grace period."""
    files = sorted(folder.glob("lambda-*.duckdb"), key=lambda p: int(p.stem.split("-")[1]))
    cutoff = time.time() - grace_seconds
    for old in files[:-KEEP_FILES]:
        if old.stat().st_mtime < cutoff:
            old.unlink(missing_ok=True)
