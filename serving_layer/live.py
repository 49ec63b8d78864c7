"""The merged views held live in memory by the long-running serving process.

Resolving a snapshot and merging batch and speed rows for every query costs tens of
milliseconds. Here it is done once per publish: a poll (every ``serving_poll_seconds``) resolves
the snapshot, and when any layer published since, the merged relations are computed from the
snapshot's immutable files and replace the served tables in one DuckDB transaction. DuckDB's MVCC
gives every query (or explicit transaction) the tables of one committed refresh, so a query
never mixes two versions, and costs what the same query on a pre-merged table costs.

The served database reads files only under the platform's published views (the Lambda views
and the Kappa sets: ``allowed_directories`` with ``enable_external_access = false``), and its
configuration is locked after start, so no query can lift a limit. The refresh runs inside DuckDB
from those files (no Python objects are scanned: a scan that holds Python's lock while it waits
for DuckDB's threads would deadlock with a client query that needs that lock to check signals).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

import duckdb

from lambda_contracts.settings import Settings
from serving_layer.loaded_rows import LoadedRows
from serving_layer.pgwire import catalog
from serving_layer.pgwire.results import REFRESH_TABLE
from serving_layer.pgwire.sql_text import CATALOG_SCHEMA
from serving_layer.relations import relations, served_content, unready
from serving_layer.snapshot import ServingSnapshot, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refresh:
    """What the newest committed refresh serves."""

    number: int
    batch_version: int
    reflected_offsets: dict[int, int]
    seconds: float


class LiveViews:
    """An in-memory DuckDB database whose tables are the merged views of the newest snapshot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = duckdb.connect(
            config={
                "memory_limit": f"{settings.serving_memory_limit_mb}MB",
                "threads": settings.serving_threads,
                "temp_directory": "",
            }
        )
        self._admin = self.database.cursor()
        roots = [settings.data_dir / "views", settings.data_dir / "kappa"]
        allowed = ", ".join(repr(str(root.resolve()) + "/") for root in roots)
        self._admin.execute(f"SET allowed_directories = [{allowed}]")
        self._admin.execute("SET enable_external_access = false")
        catalog.install(self._admin)
        self._admin.execute(f"CREATE TABLE {REFRESH_TABLE} (number BIGINT)")
        self._admin.execute("SET GLOBAL TimeZone = 'UTC'")
        self._loaded = LoadedRows()
        self._served: dict[str, str] = {}
        self._kinds: dict[str, str] = {}
        """Relation -> TABLE or VIEW, as last created (replacing one by the other needs a DROP first)."""
        self._columns: list[tuple[str, list[tuple[str, str]]]] = []
        self.latest: Refresh | None = None
        self._changed = threading.Condition()
        self._stranded: tuple[int, ...] = ()

    def lock(self) -> None:
        """No configuration changes from now on (call once the first refresh is in)."""
        self._admin.execute("SET lock_configuration = true")

    def session(self) -> duckdb.DuckDBPyConnection:
        """A connection for one client: reads whatever refresh was committed when each query starts."""
        connection = self.database.cursor()
        # served relations first, then the Postgres-shaped catalog (a session setting, allowed when locked)
        connection.execute(f"SET search_path = '{catalog.SERVED_SCHEMA},{CATALOG_SCHEMA}'")
        return connection

    def refresh(self) -> bool:
        """Serve the newest snapshot if a layer published since the last refresh; True if it did."""
        started = time.perf_counter()
        snapshot = resolve(self.settings)
        self._tell_stranded(snapshot)
        statements = relations(snapshot)  # over the files: what changed since the last refresh
        content = served_content(statements)
        if content == self._served:
            return False
        changed = {name for name, sql in statements.items() if self._served.get(name) != sql}
        number = self.latest.number + 1 if self.latest else 1
        self._replace(snapshot, changed, number)  # a relation whose files did not change stays
        self._served = content
        with self._changed:
            self.latest = Refresh(
                number, snapshot.batch.version, snapshot.reflected_offsets(), time.perf_counter() - started
            )
            self._changed.notify_all()
        return True

    def _tell_stranded(self, snapshot: ServingSnapshot) -> None:
        """Log when the merged views fall back to the batch alone because of stranded speed rows, and when
        they are fresh again: an operator sees why freshness dropped for a while."""
        if snapshot.stranded == self._stranded:
            return
        if snapshot.stranded:
            log.warning(
                "speed rows of partition(s) %s cannot be merged with batch version %d yet (a rebuild for a newer "
                "version, or a worker not reconciled): every partition is served from the batch alone until they "
                "can be, so events counted there are not missing elsewhere",
                list(snapshot.stranded),
                snapshot.batch.version,
            )
        else:
            log.info("speed rows are merged again (batch version %d)", snapshot.batch.version)
        self._stranded = snapshot.stranded

    def _replace(self, snapshot: ServingSnapshot, names: set[str], number: int) -> None:
        """Replace the named relations in one transaction: tables of rows computed from the partial rows
        loaded for the snapshot, or views (of views not ready, which raise their reason when queried and
        cannot be materialized); the refresh's ``number`` with them, so a reader can tell exactly which
        refresh it reads."""
        admin = self._admin
        kinds = dict(self._kinds)
        views = unready(snapshot)
        try:
            statements = relations(snapshot, self._loaded.rows)
            script = ["BEGIN", *self._loaded.changes()]
            for name in sorted(names):
                kind = "VIEW" if name in views else "TABLE"
                served = f"{catalog.SERVED_SCHEMA}.{name}"
                if kinds.get(name, kind) != kind:
                    script.append(f"DROP {kinds[name]} {served}")
                script.append(f"CREATE OR REPLACE {kind} {served} AS {statements[name]}")
                kinds[name] = kind
            script += [f"DELETE FROM {REFRESH_TABLE}", f"INSERT INTO {REFRESH_TABLE} VALUES ({number})"]
            # one call for all but the catalog: each call takes Python's lock back from the client threads,
            # which under load cost more than most statements (BEGIN alone took 7 ms; a refresh made ~25)
            admin.execute(";\n".join(script))
            columns = catalog.relation_columns(admin)
            if columns != self._columns:
                catalog.describe_relations(admin, columns)
            admin.execute("COMMIT")
        except BaseException:
            self._loaded.rolled_back()
            with contextlib.suppress(duckdb.TransactionException):  # none if it failed before BEGIN ran
                admin.execute("ROLLBACK")
            raise
        self._loaded.committed()
        self._columns = columns
        self._kinds = kinds

    def wait_for_refresh(self, after: int, timeout_s: float) -> Refresh | None:
        """The first refresh numbered above ``after`` (None if none came within the timeout)."""
        with self._changed:
            self._changed.wait_for(lambda: self.latest is not None and self.latest.number > after, timeout_s)
            return self.latest if self.latest is not None and self.latest.number > after else None

    def run(self, stop: threading.Event) -> None:
        """Refresh until ``stop`` is set; a failed refresh is logged and retried at the next poll."""
        while not stop.wait(self.settings.serving_poll_seconds):
            try:
                self.refresh()
            except (duckdb.Error, OSError, ValueError) as error:
                log.warning("serving refresh failed (the previous snapshot stays served): %s", error)

    def close(self) -> None:
        self._admin.close()
        self.database.close()
