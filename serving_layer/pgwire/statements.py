"""Running one client statement on the served views: routed, read-only, bounded in time.

Session statements tools send on their own (SET, SHOW, BEGIN, DISCARD ...) are answered here
and never reach DuckDB; everything else must be a SELECT or EXPLAIN over the served views, runs
with the statement timeout, and streams its rows.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb

from serving_layer.pgwire import types
from serving_layer.pgwire.results import ResultCache, refresh_of
from serving_layer.pgwire.sql_text import first_words, rewrite

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
FETCH_ROWS = 1000
_PARAMETER = re.compile(r"\$(\d+)")


class StatementError(Exception):
    """A statement the endpoint refuses or that failed; ``code`` is its SQLSTATE."""

    def __init__(self, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_size: int
    type_modifier: int = -1


@dataclass
class Outcome:
    """What a statement returns: columns (None: it returns no rows), rows, and its command tag."""

    tag: str
    columns: list[Column] | None = None
    rows: Iterator[tuple[object, ...]] = field(default_factory=lambda: iter(()))


_SESSION_DEFAULTS = {
    "transaction isolation level": "read committed",
    "transaction_isolation": "read committed",
    "standard_conforming_strings": "on",
    "server_version": "16.0",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "datestyle": "ISO, MDY",
    "timezone": "UTC",
    "integer_datetimes": "on",
    "default_transaction_read_only": "on",
    "transaction_read_only": "on",
    "search_path": "public",
    "max_identifier_length": "63",
    "lc_collate": "C",
    "intervalstyle": "postgres",
}
_TAGS = {
    "DISCARD": "DISCARD ALL",
    "DEALLOCATE": "DEALLOCATE",
    "LISTEN": "LISTEN",
    "UNLISTEN": "UNLISTEN",
    "CLOSE": "CLOSE CURSOR",
}
_ERRORS: list[tuple[type[duckdb.Error], str]] = [
    (duckdb.InterruptException, "57014"),
    (duckdb.OutOfMemoryException, "53200"),
    (duckdb.ParserException, "42601"),
    (duckdb.CatalogException, "42P01"),
    (duckdb.BinderException, "42703"),
    (duckdb.PermissionException, "42501"),
    (duckdb.ConversionException, "22P02"),
    (duckdb.InvalidInputException, "22023"),
]


def sqlstate(error: duckdb.Error) -> str:
    return next((code for kind, code in _ERRORS if isinstance(error, kind)), "XX000")


def parameter_count(sql: str) -> int:
    return max((int(n) for n in _PARAMETER.findall(sql)), default=0)


class Watchdog:
    """Interrupts statements that outlive the timeout: one thread for all sessions, not one per query."""

    def __init__(self, timeout_s: float, every_s: float = 0.05) -> None:
        self.timeout_s = timeout_s
        self._running: dict[int, tuple[float, duckdb.DuckDBPyConnection]] = {}
        self._lock = threading.Lock()
        self._tokens = itertools.count()
        threading.Thread(target=self._watch, args=(every_s,), name="statement-timeout", daemon=True).start()

    def start(self, connection: duckdb.DuckDBPyConnection) -> int:
        token = next(self._tokens)
        with self._lock:
            self._running[token] = (time.monotonic() + self.timeout_s, connection)
        return token

    def done(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)

    def _watch(self, every_s: float) -> None:
        while True:
            time.sleep(every_s)
            now = time.monotonic()
            with self._lock:
                late = [token for token, (deadline, _) in self._running.items() if deadline <= now]
                connections = [self._running.pop(token)[1] for token in late]
            for connection in connections:
                connection.interrupt()


class StatementRunner:
    """One client's statements on its own DuckDB connection, with the session's parameters."""

    def __init__(
        self, connection: duckdb.DuckDBPyConnection, watchdog: Watchdog, results: ResultCache | None = None
    ) -> None:
        self.connection = connection
        self.watchdog = watchdog
        self.results = results
        self.timeout_s = watchdog.timeout_s
        self.parameters = dict(_SESSION_DEFAULTS)
        self.in_transaction = False
        self.failed_transaction = False
        self._snapshot_refresh: int | None = None
        """The refresh the open transaction reads, once a statement needed it."""

    def interrupt(self) -> None:
        self.connection.interrupt()

    def run(self, sql: str, parameters: list[object] | None = None) -> Outcome:
        words = first_words(sql, 4)
        verb = words[0] if words else ""
        if self.failed_transaction and verb not in {"ROLLBACK", "ABORT", "COMMIT", "END"}:
            raise StatementError(
                "25P02", "current transaction is aborted, commands ignored until end of transaction block"
            )
        routed = self._session_statement(verb, words, sql)
        if routed is not None:
            return routed
        return self._query(sql, parameters or [])

    def _session_statement(self, verb: str, words: list[str], sql: str) -> Outcome | None:
        if verb in {"BEGIN", "START"}:
            if not self.in_transaction:
                self.connection.execute("BEGIN TRANSACTION")  # one snapshot for the whole block
                self.in_transaction = True
                self._snapshot_refresh = None
            return Outcome("BEGIN")
        if verb in {"SAVEPOINT", "RELEASE"} or words[:2] == ["ROLLBACK", "TO"]:
            self.failed_transaction = False  # nothing was written: the block goes on with its snapshot
            return Outcome("ROLLBACK" if verb == "ROLLBACK" else verb)
        if verb in {"COMMIT", "END", "ROLLBACK", "ABORT"}:
            if self.in_transaction:
                self.connection.execute("ROLLBACK")  # nothing was written: ending the snapshot is all
            tag = "ROLLBACK" if verb in {"ROLLBACK", "ABORT"} or self.failed_transaction else "COMMIT"
            self.in_transaction = self.failed_transaction = False
            return Outcome(tag)
        if verb in {"SET", "RESET"}:
            self._set(words, sql)
            return Outcome(verb)
        if verb == "SHOW":
            name = " ".join(w.lower() for w in words[1:]) if words[1:2] == ["TRANSACTION"] else words[1].lower()
            if name == "all":
                rows = sorted(self.parameters.items())
                return Outcome("SHOW", [_text_column("name"), _text_column("setting")], iter(rows))
            if name not in self.parameters:
                raise StatementError("42704", f'unrecognized configuration parameter "{name}"')
            return Outcome("SHOW", [_text_column(name)], iter([(self.parameters[name],)]))
        if verb in _TAGS:
            return Outcome(_TAGS[verb])
        return None

    def _set(self, words: list[str], sql: str) -> None:
        """Remember a session parameter (shown by SHOW); the served data does not depend on any."""
        match = re.match(r"\s*(?:SET|RESET)\s+(?:SESSION\s+|LOCAL\s+)?([\w.]+)\s*(?:=|TO)?\s*(.*)", sql, re.I | re.S)
        if match and words[1:2] not in (["TRANSACTION"], ["CHARACTERISTICS"]):
            value = (
                match.group(2).strip().strip("'\"")
                if words[0] == "SET"
                else _SESSION_DEFAULTS.get(match.group(1).lower(), "")
            )
            self.parameters[match.group(1).lower()] = value

    def _query(self, sql: str, parameters: list[object]) -> Outcome:
        query = rewrite(sql)
        cache = self.results
        statement = cache.statement(query, parameters) if cache is not None else None
        if statement is None:
            cache = None  # its result is never kept: the statement runs as without a cache
        if cache is not None and statement is not None:
            kept = cache.get(self._transaction_refresh() if self.in_transaction else cache.announced(), statement)
            if kept is not None:  # only a checked SELECT is ever kept
                return Outcome("SELECT", kept.columns, iter(kept.rows))
        try:
            statements = self.connection.extract_statements(query)
        except duckdb.Error as error:
            raise StatementError(sqlstate(error), str(error)) from None
        for parsed in statements:
            if parsed.type not in ALLOWED:
                raise StatementError(
                    "25006",
                    f"the serving endpoint is read-only: refused a {parsed.type.name} statement",
                    "only SELECT (and EXPLAIN) queries over the served views are accepted",
                )
        if len(statements) != 1:
            raise StatementError("42601", "cannot insert multiple commands into a prepared statement")
        before = cache.committed() if cache is not None else None
        timer = self.watchdog.start(self.connection)
        try:
            self.connection.execute(query, parameters)
        except duckdb.Error as error:
            self.watchdog.done(timer)
            self._failed()
            raise self._error(error) from None
        description = self.connection.description or []
        columns = [_column(d[0], str(d[1])) for d in description]
        rows = self._rows(timer)
        if cache is not None and statement is not None:
            if self.in_transaction:
                read_from = self._transaction_refresh()
            else:  # the statement's snapshot was taken between the two reads: if they agree, it is theirs
                read_from = before if before == cache.committed() else None
            rows = cache.keep(read_from, statement, columns, rows)
        return Outcome("SELECT", columns, rows)

    def _transaction_refresh(self) -> int | None:
        """The refresh this transaction's snapshot holds (read once per transaction)."""
        if self._snapshot_refresh is None:
            self._snapshot_refresh = refresh_of(self.connection)
        return self._snapshot_refresh

    def _rows(self, timer: int) -> Iterator[tuple[object, ...]]:
        try:
            while True:
                try:
                    chunk = self.connection.fetchmany(FETCH_ROWS)
                except duckdb.Error as error:
                    self._failed()
                    raise self._error(error) from None
                if not chunk:
                    return
                yield from chunk
        finally:
            self.watchdog.done(timer)

    def _failed(self) -> None:
        if self.in_transaction:
            self.failed_transaction = True

    def _error(self, error: duckdb.Error) -> StatementError:
        code = sqlstate(error)
        if code == "57014":
            return StatementError(
                code,
                f"canceling statement due to statement timeout ({self.timeout_s:g} s) or a cancel request",
                "narrow the query, or raise LAMBDA_SERVING_STATEMENT_TIMEOUT_SECONDS",
            )
        if code == "53200":
            return StatementError(code, str(error), "the query needs more than LAMBDA_SERVING_MEMORY_LIMIT_MB allows")
        return StatementError(code, str(error))

    def describe(self, sql: str) -> list[Column] | None:
        """The columns a statement would return, without running it (None: no rows, or not known)."""
        words = first_words(sql, 1)
        if words and words[0] in {"SHOW"}:
            return [_text_column(first_words(sql, 2)[-1].lower())]
        if not words or words[0] not in {"SELECT", "WITH", "VALUES", "TABLE", "FROM", "EXPLAIN", "("}:
            return None
        try:
            rows = self.connection.execute(f"DESCRIBE {rewrite(sql)}", [None] * parameter_count(sql)).fetchall()
        except duckdb.Error:
            return None
        return [_column(row[0], row[1]) for row in rows]


def _text_column(name: str) -> Column:
    return Column(name, types.TEXT, -1)


def _column(name: str, duckdb_type: str) -> Column:
    oid = types.pg_oid(duckdb_type)
    return Column(name, oid, types.PG_TYPES[oid].size, types.type_modifier(duckdb_type))
