"""A Postgres-shaped catalog of the served relations, for the tools that browse one.

psql, JDBC's ``DatabaseMetaData``, SQLAlchemy's reflection and BI tools learn tables and columns
from ``pg_namespace``, ``pg_class``, ``pg_attribute`` and ``pg_type`` joined by Postgres's type
OIDs. DuckDB's own ``pg_catalog`` uses its internal type ids, so those joins would come out wrong;
this catalog (schema ``pgc``, which ``sql_text.rewrite`` sends ``pg_catalog.`` references to) holds
the same tables with Postgres's OIDs and the functions tools call. It is rebuilt, in the same
transaction as the relations, whenever their columns change.
"""

from __future__ import annotations

import re

import duckdb

from serving_layer.pgwire import types
from serving_layer.pgwire.sql_text import CATALOG_FUNCTIONS
from serving_layer.pgwire.sql_text import CATALOG_SCHEMA as PGC

SERVED_SCHEMA = "public"
PUBLIC_OID, CATALOG_OID, INFORMATION_SCHEMA_OID = 2200, 11, 13_000
FIRST_RELATION_OID = 16_384
OWNER = "lambda"
UNTYPED = '"NULL"'
SERVER_VERSION = "16.0"

# Tables DuckDB's pg_catalog lacks that tools query; (name, columns as DuckDB DDL).
_EXTRA_TABLES = {
    "pg_inherits": "inhrelid BIGINT, inhparent BIGINT, inhseqno INTEGER, inhdetachpending BOOLEAN",
    "pg_roles": "oid BIGINT, rolname VARCHAR, rolsuper BOOLEAN, rolcanlogin BOOLEAN, rolconnlimit INTEGER",
    "pg_user": "usesysid BIGINT, usename VARCHAR, usesuper BOOLEAN",
    "pg_matviews": "schemaname VARCHAR, matviewname VARCHAR, matviewowner VARCHAR, definition VARCHAR",
    "pg_extension": "oid BIGINT, extname VARCHAR, extowner BIGINT, extnamespace BIGINT, extversion VARCHAR",
    "pg_range": "rngtypid BIGINT, rngsubtype BIGINT",
    "pg_trigger": "oid BIGINT, tgrelid BIGINT, tgname VARCHAR, tgisinternal BOOLEAN",
    "pg_rewrite": "oid BIGINT, rulename VARCHAR, ev_class BIGINT",
    "pg_policy": (
        "oid BIGINT, polname VARCHAR, polrelid BIGINT, polpermissive BOOLEAN, polroles BIGINT[], "
        "polcmd VARCHAR, polqual VARCHAR, polwithcheck VARCHAR"
    ),
    "pg_partitioned_table": "partrelid BIGINT, partstrat VARCHAR",
    "pg_foreign_table": "ftrelid BIGINT, ftserver BIGINT",
    "pg_statistic_ext": (
        "oid BIGINT, stxrelid BIGINT, stxname VARCHAR, stxnamespace BIGINT, stxowner BIGINT, stxkeys INTEGER[], "
        "stxkind VARCHAR[], stxstattarget INTEGER, stxexprs VARCHAR"
    ),
    "pg_publication": "oid BIGINT, pubname VARCHAR, puballtables BOOLEAN, pubviaroot BOOLEAN",
    "pg_publication_rel": "oid BIGINT, prpubid BIGINT, prrelid BIGINT, prqual VARCHAR, prattrs INTEGER[]",
    "pg_publication_namespace": "oid BIGINT, pnpubid BIGINT, pnnspid BIGINT",
    "pg_subscription": "oid BIGINT, subname VARCHAR",
    "pg_opclass": "oid BIGINT, opcname VARCHAR, opcdefault BOOLEAN, opcmethod BIGINT, opcnamespace BIGINT",
    "pg_stat_activity": "datid BIGINT, datname VARCHAR, pid INTEGER, usename VARCHAR, state VARCHAR, query VARCHAR",
}


# Columns Postgres has that DuckDB's pg_catalog tables lack, which tools select.
_EXTRA_COLUMNS = {
    "pg_class": "relforcerowsecurity BOOLEAN, relhasoids BOOLEAN",
    "pg_index": "indnullsnotdistinct BOOLEAN",
    "pg_collation": "collnamespace BIGINT, collprovider VARCHAR, collcollate VARCHAR, collctype VARCHAR",
    "pg_database": (
        "datdba BIGINT, encoding INTEGER, datcollate VARCHAR, datctype VARCHAR, datlocprovider VARCHAR, "
        "daticulocale VARCHAR, daticurules VARCHAR, datacl VARCHAR[], dattablespace BIGINT, datconnlimit INTEGER"
    ),
}


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _format_type_sql() -> str:
    cases = " ".join(f"WHEN {oid} THEN {_quoted(types.format_type(oid, -1))}" for oid in types.PG_TYPES)
    return (
        "CASE WHEN t = 1700 AND m >= 4 THEN 'numeric(' || ((m - 4) >> 16) || ',' || ((m - 4) & 65535) || ')' "
        f"ELSE CASE t {cases} ELSE NULL END END"
    )


def _functions() -> dict[str, str]:
    """Name(arguments) -> body of the macros that stand in for Postgres's catalog functions."""
    version = f"PostgreSQL {SERVER_VERSION} (lambda-platform serving layer on DuckDB {duckdb.__version__})"
    return {
        "format_type(t, m)": _format_type_sql(),
        "pg_get_userbyid(id)": _quoted(OWNER),
        "pg_get_expr(e, r, p := false)": "CAST(NULL AS VARCHAR)",
        "pg_get_indexdef(i, c := 0, p := false)": "CAST(NULL AS VARCHAR)",
        "pg_get_constraintdef(c, p := false)": "CAST(NULL AS VARCHAR)",
        "pg_get_viewdef(v, p := false)": "CAST(NULL AS VARCHAR)",
        "pg_get_partkeydef(r)": "CAST(NULL AS VARCHAR)",
        "pg_get_statisticsobjdef_columns(o)": "CAST(NULL AS VARCHAR)",
        "pg_encoding_to_char(e)": "'UTF8'",
        "pg_get_serial_sequence(t, c)": "CAST(NULL AS VARCHAR)",
        "pg_collation_is_visible(c)": "true",
        "current_setting(n, missing_ok := false)": (
            f"(SELECT setting FROM {PGC}.pg_settings WHERE lower(name) = lower(n))"
        ),
        "pg_table_is_visible(r)": "true",
        "pg_type_is_visible(r)": "true",
        "pg_relation_is_publishable(r)": "false",
        "obj_description(o, c := '')": "CAST(NULL AS VARCHAR)",
        "col_description(o, c)": "CAST(NULL AS VARCHAR)",
        "shobj_description(o, c)": "CAST(NULL AS VARCHAR)",
        "has_schema_privilege(a, b, c := '')": "true",
        "has_database_privilege(a, b, c := '')": "true",
        "array_upper(a, d)": "len(a)",
        "array_lower(a, d)": "CASE WHEN len(a) > 0 THEN 1 END",
        "version()": _quoted(version),
        "current_schema()": _quoted(SERVED_SCHEMA),
        "current_database()": "'lambda'",
        "current_user()": _quoted(OWNER),
        "session_user()": _quoted(OWNER),
        "to_regclass(n)": (
            f"(SELECT oid FROM {PGC}.pg_class WHERE relname = regexp_replace(n, '^.*\\.', '') "
            f"ORDER BY relnamespace = {PUBLIC_OID} DESC LIMIT 1)"
        ),
        "to_regtype(n)": f"(SELECT oid FROM {PGC}.pg_type WHERE typname = regexp_replace(lower(n), '^.*\\.', ''))",
        "to_regproc(n)": "regexp_replace(n, '^pg_catalog\\.', '')",
        "to_regprocedure(n)": "regexp_replace(n, '^pg_catalog\\.', '')",
        "to_regnamespace(n)": f"(SELECT oid FROM {PGC}.pg_namespace WHERE nspname = n)",
        "to_regrole(n)": "10",
        "to_regoper(n)": "n",
    }


_INTEGER_COLUMN = re.compile(r"(oid|relid|elem|array|basetype|collation|ndims|typmod|nargs|typid|num|seqno|len)$")
_BOOLEAN_COLUMN = re.compile(r"^[a-z]{2,4}(is|has|notnull|byval)")


def _typed(column: str) -> str:
    """A type for the columns DuckDB's pg_catalog leaves untyped (always NULL there)."""
    if _BOOLEAN_COLUMN.search(column):
        return "BOOLEAN"
    return "BIGINT" if _INTEGER_COLUMN.search(column) else "VARCHAR"


def _check_names() -> None:
    for signature in _functions():
        name = signature.split("(")[0]
        assert name.startswith("pg_") or name in CATALOG_FUNCTIONS, f"add {name} to sql_text.CATALOG_FUNCTIONS"


def install(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the catalog schema and its functions (once, before any relation is served)."""
    _check_names()
    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {SERVED_SCHEMA}")
    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {PGC}")
    views = connection.execute(
        "SELECT view_name FROM duckdb_views() WHERE schema_name = 'pg_catalog' AND internal"
    ).fetchall()
    for (name,) in views:  # the same columns, empty; untyped (NULL) ones become text
        described = connection.execute(f"DESCRIBE SELECT * FROM pg_catalog.{name}").fetchall()
        ddl = ", ".join(f'"{c}" {_typed(c) if kind == UNTYPED else kind}' for c, kind, *_ in described)
        connection.execute(f"CREATE TABLE {PGC}.{name} ({ddl})")
    for name, columns in _EXTRA_COLUMNS.items():
        for column in columns.split(", "):
            connection.execute(f"ALTER TABLE {PGC}.{name} ADD COLUMN IF NOT EXISTS {column}")
    for name, columns in _EXTRA_TABLES.items():
        connection.execute(f"CREATE TABLE {PGC}.{name} ({columns})")
    for signature, body in _functions().items():
        connection.execute(f"CREATE MACRO {PGC}.{signature} AS {body}")
    connection.execute(f"INSERT INTO {PGC}.pg_roles VALUES (10, '{OWNER}', false, true, -1)")
    connection.execute(f"INSERT INTO {PGC}.pg_user VALUES (10, '{OWNER}', false)")
    _fill_fixed(connection)


def _fill_fixed(connection: duckdb.DuckDBPyConnection) -> None:
    for name in ("pg_namespace", "pg_type", "pg_database", "pg_settings"):
        connection.execute(f"DELETE FROM {PGC}.{name}")
    connection.execute(
        f"INSERT INTO {PGC}.pg_namespace BY NAME SELECT * FROM (VALUES "
        f"({CATALOG_OID}, 'pg_catalog', 10), ({PUBLIC_OID}, '{SERVED_SCHEMA}', 10), "
        f"({INFORMATION_SCHEMA_OID}, 'information_schema', 10)) AS n(oid, nspname, nspowner)"
    )
    rows = ", ".join(
        f"({t.oid}, '{t.name}', {CATALOG_OID}, 10, {t.size}, 'b', 'U', true, ',', 0, 0, 0, "
        f"'{t.name}in', 'p', false, 0, -1, 0, 0)"
        for t in types.PG_TYPES.values()
    )
    connection.execute(
        f"INSERT INTO {PGC}.pg_type BY NAME SELECT * FROM (VALUES {rows}) AS t(oid, typname, typnamespace, "
        "typowner, typlen, typtype, typcategory, typisdefined, typdelim, typrelid, typelem, typarray, "
        "typinput, typalign, typnotnull, typbasetype, typtypmod, typndims, typcollation)"
    )
    connection.execute(
        f"INSERT INTO {PGC}.pg_database BY NAME SELECT 1 AS oid, 'lambda' AS datname, true AS datallowconn, "
        "false AS datistemplate, 10 AS datdba, 6 AS encoding, 'C' AS datcollate, 'C' AS datctype, 'c' AS datlocprovider"
    )
    connection.execute(
        f"INSERT INTO {PGC}.pg_settings BY NAME SELECT * FROM (VALUES "
        f"('server_version', '{SERVER_VERSION}', 'string'), ('standard_conforming_strings', 'on', 'bool'), "
        "('TimeZone', 'UTC', 'string'), ('client_encoding', 'UTF8', 'string'), "
        "('default_transaction_read_only', 'on', 'bool'), ('default_table_access_method', 'heap', 'string'), "
        "('max_identifier_length', '63', 'integer'), ('search_path', 'public', 'string')) AS s(name, setting, vartype)"
    )


def relation_columns(connection: duckdb.DuckDBPyConnection) -> list[tuple[str, list[tuple[str, str]]]]:
    """The served relations and their columns (name, DuckDB type), as the catalog lists them."""
    rows = connection.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE schema_name = ? AND database_name = current_database() ORDER BY table_name, column_index",
        [SERVED_SCHEMA],
    ).fetchall()
    relations: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        relations.setdefault(table, []).append((column, data_type))
    return sorted(relations.items())


def describe_relations(
    connection: duckdb.DuckDBPyConnection, relations: list[tuple[str, list[tuple[str, str]]]]
) -> None:
    """Replace the catalog's rows for the served relations (inside the caller's transaction)."""
    for name in ("pg_class", "pg_attribute", "pg_tables"):
        connection.execute(f"DELETE FROM {PGC}.{name}")
    classes, attributes, tables = [], [], []
    for number, (table, columns) in enumerate(relations):
        oid = FIRST_RELATION_OID + number
        classes.append(f"({oid}, {_quoted(table)}, {PUBLIC_OID}, 10, 'r', 'p', {len(columns)})")
        tables.append(f"('{SERVED_SCHEMA}', {_quoted(table)}, '{OWNER}')")
        for position, (column, data_type) in enumerate(columns, start=1):
            oid_of_type = types.pg_oid(data_type)
            size = types.PG_TYPES[oid_of_type].size
            attributes.append(
                f"({oid}, {_quoted(column)}, {oid_of_type}, {size}, {position}, 0, "
                f"{types.type_modifier(data_type)}, false, false, '', '', false, true, 0, 0)"
            )
    if not classes:
        return
    connection.execute(
        f"INSERT INTO {PGC}.pg_class BY NAME SELECT *, 0 AS reltype, 0 AS relam, 0 AS reltablespace, "
        "false AS relhasindex, false AS relisshared, 0 AS relchecks, false AS relhasrules, "
        "false AS relhastriggers, false AS relhassubclass, false AS relrowsecurity, true AS relispopulated, "
        "'d' AS relreplident, false AS relispartition, -1 AS reltuples "
        f"FROM (VALUES {', '.join(classes)}) "
        "AS c(oid, relname, relnamespace, relowner, relkind, relpersistence, relnatts)"
    )
    connection.execute(
        f"INSERT INTO {PGC}.pg_attribute BY NAME SELECT * FROM (VALUES {', '.join(attributes)}) AS a(attrelid, "
        "attname, atttypid, attlen, attnum, attndims, atttypmod, attnotnull, atthasdef, attidentity, attgenerated, "
        "attisdropped, attislocal, attinhcount, attcollation)"
    )
    connection.execute(
        f"INSERT INTO {PGC}.pg_tables BY NAME SELECT *, false AS hasindexes, false AS hasrules, false AS hastriggers "
        f"FROM (VALUES {', '.join(tables)}) AS t(schemaname, tablename, tableowner)"
    )


__all__ = ["SERVED_SCHEMA", "describe_relations", "install", "relation_columns"]
