"""Postgres SQL text as the serving database runs it: statements split, catalog names redirected.

Tools send Postgres dialect: ``pg_catalog.`` relations and functions, ``'pg_class'::regclass``
casts, ``OPERATOR(pg_catalog.~)``. The serving database keeps a Postgres-shaped catalog in its
``pgc`` schema (see ``catalog.py``), so the rewrite only touches code, never string literals,
quoted identifiers or comments.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

KNOWN_TEXTS = 1024
"""Statement texts whose rewrite and first words are remembered: clients send the same few again and again
(tokenizing them anew was a quarter of the serving process's Python time under a dashboard's load)."""

CATALOG_SCHEMA = "pgc"
# Catalog functions the ``pgc`` schema defines whose names do not start with ``pg_``; other
# ``pg_catalog.`` functions are DuckDB's own (array_to_string, lower, ...).
CATALOG_FUNCTIONS = frozenset(
    {
        "format_type",
        "obj_description",
        "col_description",
        "shobj_description",
        "has_schema_privilege",
        "has_database_privilege",
        "array_upper",
        "array_lower",
        "version",
        "current_schema",
        "current_database",
        "current_user",
        "session_user",
        "to_regclass",
        "to_regtype",
        "to_regproc",
        "to_regprocedure",
        "to_regnamespace",
        "to_regrole",
        "to_regoper",
        "current_setting",
    }
)

_TOKEN = re.compile(
    r"""(?P<literal>[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*')
      | (?P<identifier>"(?:[^"]|"")*")
      | (?P<comment>--[^\n]*|/\*.*?\*/)
      | (?P<code>[^'"\-/;]+|[\-/])
      | (?P<semicolon>;)""",
    re.VERBOSE | re.DOTALL,
)
_REG_TYPES = r"(regclass|regtype|regproc|regprocedure|regnamespace|regrole|regoper)"
_CAST_AFTER_LITERAL = re.compile(rf"^\s*::\s*(?:pg_catalog\s*\.\s*)?{_REG_TYPES}\b", re.IGNORECASE)
_PARAMETER_CAST = re.compile(rf"(\$\d+)\s*::\s*(?:pg_catalog\s*\.\s*)?{_REG_TYPES}\b", re.IGNORECASE)
_OTHER_CAST = re.compile(rf"::\s*(?:pg_catalog\s*\.\s*)?{_REG_TYPES}\b", re.IGNORECASE)
_CAST_AS_REG = re.compile(rf"\bAS\s+(?:pg_catalog\s*\.\s*)?{_REG_TYPES}\b", re.IGNORECASE)
_FUNCTION_ALIASES = re.compile(r"\bjsonb?_build_object\s*\(", re.IGNORECASE)  # variadic: no macro can stand in
_CAST = re.compile(r"\bCAST\s*\(", re.IGNORECASE)
_OPERATOR = re.compile(r"OPERATOR\s*\(\s*pg_catalog\s*\.\s*([^)\s]+)\s*\)", re.IGNORECASE)
_COLLATE = re.compile(r"COLLATE\s+(?:pg_catalog\s*\.\s*)?(?:\"default\"|default|\"C\")", re.IGNORECASE)
_TYPE_CAST = re.compile(r"::\s*pg_catalog\s*\.\s*", re.IGNORECASE)
_CATALOG = re.compile(r"\bpg_catalog\s*\.\s*(\w+)", re.IGNORECASE)


def _tokens(sql: str) -> Iterator[tuple[str, str]]:
    position = 0
    while position < len(sql):
        match = _TOKEN.match(sql, position)
        if match is None:  # an unterminated quote or comment: leave the rest to the parser's error
            yield "code", sql[position:]
            return
        kind = match.lastgroup
        assert kind is not None
        yield kind, match.group()
        position = match.end()


def split_statements(sql: str) -> list[str]:
    """The statements of a simple query, split at semicolons outside quotes and comments."""
    statements: list[str] = []
    current: list[str] = []
    for kind, text in _tokens(sql):
        if kind == "semicolon":
            statements.append("".join(current))
            current = []
        else:
            current.append(text)
    statements.append("".join(current))
    return [s for s in (s.strip() for s in statements) if s and not _only_comments(s)]


def _only_comments(statement: str) -> bool:
    return all(kind == "comment" or not text.strip() for kind, text in _tokens(statement))


def _rewrite_code(code: str) -> str:
    code = _OPERATOR.sub(r"\1", code)
    code = _COLLATE.sub("", code)
    code = _PARAMETER_CAST.sub(lambda m: f"{CATALOG_SCHEMA}.to_{m.group(2).lower()}({m.group(1)})", code)
    code = _FUNCTION_ALIASES.sub("json_object(", code)
    if _CAST_AS_REG.search(code):  # CAST(x AS REGCLASS): x's OID, NULL for a name (catalog queries only)
        code = _CAST.sub("TRY_CAST(", _CAST_AS_REG.sub("AS BIGINT", code))
    code = _OTHER_CAST.sub("", code)  # an OID column shown as a name elsewhere: here it stays the OID
    code = _TYPE_CAST.sub("::", code)  # types are DuckDB's own, unqualified
    return _CATALOG.sub(_catalog_name, code)


def _catalog_name(match: re.Match[str]) -> str:
    name = match.group(1)
    ours = name.lower().startswith("pg_") or name.lower() in CATALOG_FUNCTIONS
    return f"{CATALOG_SCHEMA}.{name}" if ours else name


@lru_cache(maxsize=KNOWN_TEXTS)
def rewrite(sql: str) -> str:
    """Postgres catalog references redirected to the serving database's Postgres-shaped catalog."""
    tokens = list(_tokens(sql))
    out: list[str] = []
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) and tokens[index + 1][0] == "code" else ""
        cast = _CAST_AFTER_LITERAL.match(following) if kind == "literal" else None
        if cast:
            out.append(f"{CATALOG_SCHEMA}.to_{cast.group(1).lower()}({text})")
            tokens[index + 1] = ("code", following[cast.end() :])
        elif kind == "code":
            out.append(_rewrite_code(text))
        else:
            out.append(text)
        index += 1
    return "".join(out)


def first_words(statement: str, count: int = 2) -> list[str]:
    """The statement's first keywords, upper-cased, comments skipped (to route SET, SHOW, BEGIN ...)."""
    return list(_first_words(statement, count))


@lru_cache(maxsize=KNOWN_TEXTS)
def _first_words(statement: str, count: int) -> tuple[str, ...]:
    code = " ".join(text for kind, text in _tokens(statement) if kind != "comment")
    return tuple(w.upper() for w in re.findall(r"[A-Za-z_]+", code)[:count])
