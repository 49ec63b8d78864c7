"""Query results kept until the next refresh: dashboards ask the same few queries again and again.

The served tables change only when a refresh commits, so a deterministic query asked again before
the next refresh has the same result. Eight dashboard clients ran the same query hundreds of times
per refresh; each run cost the serving process a DuckDB execution and Python's lock, which the
speed layer needed on a 2-core machine.

A result is filed under the refresh it was read from, known exactly: every refresh writes its
number in its own transaction (``REFRESH_TABLE``), so a transaction's snapshot holds it, and a
statement outside a transaction read refresh N if N was the newest committed both before it started
and after. A hit shows one committed refresh, never a mix: outside a transaction the newest refresh
announced (committed, so running the statement would read it or a newer one), in a transaction the
refresh of its snapshot, as its other statements see. Results of older refreshes are dropped as soon
as a newer one is seen.

Only results that cannot depend on anything but the served tables are kept: the statement is a
SELECT of served relations (and its own CTEs) whose every function is deterministic for DuckDB
(stability ``CONSISTENT``: no ``random()``, ``now()``, ``current_setting()``, table functions or
macros) and that does not sample; and it returns at most ``MAX_ROWS_PER_RESULT`` rows, within a
bound on all rows kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb

from serving_layer.pgwire.sql_text import CATALOG_SCHEMA

MAX_ROWS_PER_RESULT = 10_000
KNOWN_STATEMENTS = 4_096  # statements whose cacheability is remembered; forgotten all at once beyond


@dataclass(frozen=True)
class KeptResult:
    columns: list[Any]  # statements.Column, kept opaque here
    rows: list[tuple[object, ...]]


Statement = tuple[str, tuple[Hashable, ...]]
"""A statement's text and parameter values."""
Key = tuple[int, str, tuple[Hashable, ...]]
"""The refresh a result was read from, and its statement."""
REFRESH_TABLE = f"{CATALOG_SCHEMA}.serving_refresh"
"""One row: the number of the refresh the served tables are from, written in the refresh's transaction."""


def refresh_of(connection: duckdb.DuckDBPyConnection) -> int | None:
    """The refresh ``connection`` reads now (in a transaction: the one of its snapshot)."""
    rows = connection.execute(f"SELECT max(number) FROM {REFRESH_TABLE}").fetchall()
    return None if not rows or rows[0][0] is None else int(rows[0][0])


class ResultCache:
    """Results per (refresh, statement, parameters), filed and looked up as the module says; ``max_rows``
    bounds the rows kept (0: keep none)."""

    def __init__(
        self,
        database: duckdb.DuckDBPyConnection,
        refresh_number: Callable[[], int | None],
        max_rows: int,
        served_schema: str,
        observe: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._refresh_number = refresh_number
        self.max_rows = max_rows
        self._observe = observe
        self._lock = threading.Lock()
        self._parsing = threading.Lock()  # the parser's connection, apart: a hit never waits for a parse
        self._parser = database.cursor()
        self._rules = _Rules.of(self._parser, served_schema)
        self._cacheable: dict[str, bool] = {}
        self._refresh = -1
        self._kept: dict[Key, KeptResult] = {}
        self._rows = 0

    def statement(self, sql: str, parameters: list[object]) -> Statement | None:
        """The statement as the cache knows it, or None if its result must never be kept."""
        values = tuple(parameters)
        if self.max_rows <= 0 or not self.cacheable(sql) or not _hashable(values):
            self._observe("bypass")
            return None
        return sql, values

    def announced(self) -> int | None:
        """The newest refresh announced: committed, so a statement starting now reads it or a newer one."""
        return self._refresh_number()

    def committed(self) -> int | None:
        """The newest refresh committed, read from the served database itself."""
        with self._parsing:
            return refresh_of(self._parser)

    def get(self, refresh: int | None, statement: Statement) -> KeptResult | None:
        kept = None
        if refresh is not None:
            with self._lock:
                self._forget_older_than(refresh)
                kept = self._kept.get((refresh, *statement))
        self._observe("hit" if kept is not None else "miss")
        return kept

    def keep(
        self, refresh: int | None, statement: Statement, columns: list[Any], rows: Iterator[tuple[object, ...]]
    ) -> Iterator[tuple[object, ...]]:
        """``rows`` passed through; filed under the ``refresh`` they were read from (exactly: None files
        nothing) once all were read, if there were few enough."""
        if refresh is None:
            yield from rows
            return
        held: list[tuple[object, ...]] | None = []
        for row in rows:
            if held is not None:
                held.append(row)
                if len(held) > min(MAX_ROWS_PER_RESULT, self.max_rows):
                    held = None  # too many to keep: stream the rest
            yield row
        if held is not None:
            self._file((refresh, *statement), KeptResult(columns, held))

    def cacheable(self, sql: str) -> bool:
        known = self._cacheable.get(sql)
        if known is None:
            with self._parsing:
                serialized = self._parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
                known = self._rules.allow(json.loads(serialized), self._rules.served_relations(self._parser))
                if len(self._cacheable) >= KNOWN_STATEMENTS:
                    self._cacheable.clear()
                self._cacheable[sql] = known
        return known

    def _file(self, key: Key, kept: KeptResult) -> None:
        with self._lock:
            self._forget_older_than(key[0])
            if key[0] < self._refresh or key in self._kept:
                return  # a newer refresh is served already, or another client filed it first
            while self._kept and self._rows + len(kept.rows) > self.max_rows:
                oldest = next(iter(self._kept))
                self._rows -= len(self._kept.pop(oldest).rows)
            self._kept[key] = kept
            self._rows += len(kept.rows)

    def _forget_older_than(self, refresh: int) -> None:
        if refresh > self._refresh:
            self._kept.clear()
            self._rows = 0
            self._refresh = refresh


# SQL's special values DuckDB parses as column names and binds to functions of the moment or session
_SPECIAL_VALUES = frozenset(
    {
        "current_date",
        "current_time",
        "current_timestamp",
        "localtime",
        "localtimestamp",
        "current_user",
        "session_user",
        "user",
        "current_role",
        "current_catalog",
        "current_schema",
    }
)


@dataclass(frozen=True)
class _Rules:
    """What a kept answer may depend on: deterministic built-ins and the served relations only."""

    deterministic: frozenset[str]  # functions whose every overload DuckDB calls CONSISTENT
    other_names: frozenset[str]  # every other function name, and SQL's special values
    served_schema: str

    @classmethod
    def of(cls, connection: duckdb.DuckDBPyConnection, served_schema: str) -> _Rules:
        stabilities = connection.execute(
            "SELECT lower(function_name), bool_and(coalesce(stability, '') = 'CONSISTENT') "
            "FROM duckdb_functions() GROUP BY 1"
        ).fetchall()
        return cls(
            frozenset(name for name, consistent in stabilities if consistent),
            frozenset(name for name, consistent in stabilities if not consistent) | _SPECIAL_VALUES,
            served_schema,
        )

    def served_relations(self, connection: duckdb.DuckDBPyConnection) -> frozenset[str]:
        rows = connection.execute(
            "SELECT lower(view_name) FROM duckdb_views() WHERE schema_name = $1 "
            "UNION SELECT lower(table_name) FROM duckdb_tables() WHERE schema_name = $1",
            [self.served_schema],
        ).fetchall()
        return frozenset(row[0] for row in rows)

    def allow(self, statement: Any, served: frozenset[str]) -> bool:
        """True if the serialized statement is a SELECT of ``served`` relations that calls only deterministic
        functions and does not sample (DuckDB serializes SELECT statements only: others are an error)."""
        if not isinstance(statement, dict) or statement.get("error") is not False:
            return False
        return self._allow(statement, served | frozenset(_cte_names(statement)))

    def _allow(self, tree: Any, relations: frozenset[str]) -> bool:
        """``relations``: the served ones and the statement's CTEs (a CTE cannot hide a served name:
        both are allowed, and a CTE is as deterministic as its own body, which is checked too)."""
        if isinstance(tree, list):
            return all(self._allow(value, relations) for value in tree)
        if not isinstance(tree, dict):
            return True
        if tree.get("sample") is not None:
            return False
        name = tree.get("function_name")
        if isinstance(name, str) and name.lower() not in self.deterministic:
            return False
        columns = tree.get("column_names") if tree.get("class") == "COLUMN_REF" else None
        if isinstance(columns, list) and len(columns) == 1 and str(columns[0]).lower() in self.other_names:
            return False
        if tree.get("type") == "BASE_TABLE" and not self._served(tree, relations):
            return False
        return all(self._allow(value, relations) for value in tree.values())

    def _served(self, table: dict[str, Any], relations: frozenset[str]) -> bool:
        schema = str(table.get("schema_name") or "").lower()
        name = str(table.get("table_name", "")).lower()
        return not table.get("catalog_name") and schema in ("", self.served_schema) and name in relations


def _hashable(values: tuple[object, ...]) -> bool:
    try:
        hash(values)
    except TypeError:
        return False
    return True


def _cte_names(tree: Any) -> Iterator[str]:
    if isinstance(tree, list):
        for value in tree:
            yield from _cte_names(value)
    elif isinstance(tree, dict):
        for entry in (tree.get("cte_map") or {}).get("map", []):
            yield str(entry.get("key", "")).lower()
        for value in tree.values():
            yield from _cte_names(value)
