"""Pieces of the Postgres endpoint on their own: statement splitting and catalog rewriting, SCRAM
against the RFC's client computation, and values in Postgres's text and binary formats."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from decimal import Decimal

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving_layer.pgwire import catalog, types
from serving_layer.pgwire.scram import AuthenticationFailedError, ScramExchange, Verifier
from serving_layer.pgwire.sql_text import rewrite, split_statements

pytestmark = pytest.mark.unit


def test_statements_split_outside_quotes_and_comments() -> None:
    sql = "SELECT ';' AS a; -- a comment; still a comment\nSELECT \"x;y\" FROM t; /* ; */ ;  "
    assert split_statements(sql) == ["SELECT ';' AS a", '-- a comment; still a comment\nSELECT "x;y" FROM t']
    assert split_statements("  ; -- nothing\n") == []


def test_catalog_references_are_redirected_but_literals_are_not() -> None:
    sql = (
        "SELECT n.nspname FROM pg_catalog.pg_namespace n "
        "WHERE n.nspname <> 'pg_catalog.pg_class' AND c.oid = 'pg_class'::regclass"
    )
    out = rewrite(sql)
    assert "FROM pgc.pg_namespace" in out
    assert "'pg_catalog.pg_class'" in out  # a string literal is left alone
    assert "pgc.to_regclass('pg_class')" in out
    assert rewrite("SELECT pg_catalog.lower('A'), x::pg_catalog.text, a OPERATOR(pg_catalog.~) b") == (
        "SELECT lower('A'), x::text, a ~ b"
    )
    assert rewrite("SELECT t.oid::regtype::text WHERE t.oid = $1::regtype") == (
        "SELECT t.oid::text WHERE t.oid = pgc.to_regtype($1)"
    )


def _client_proof(password: str, server_first: str, client_first_bare: str, header: str) -> tuple[str, bytes]:
    """The client side of RFC 5802, computed independently of the server code."""
    attributes = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attributes["s"]), int(attributes["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    without_proof = f"c={base64.b64encode(header.encode()).decode()},r={attributes['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    expected = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    return f"{without_proof},p={base64.b64encode(proof).decode()}", expected


@pytest.mark.parametrize(("password", "attempt", "accepted"), [("right", "right", True), ("right", "wrong", False)])
def test_scram_accepts_the_password_and_only_it(password: str, attempt: str, accepted: bool) -> None:
    exchange = ScramExchange(Verifier.from_password(password, iterations=256))
    bare = "n=,r=clientnonce123"
    server_first = exchange.first(f"n,,{bare}")
    assert server_first.startswith("r=clientnonce123")
    client_final, expected_signature = _client_proof(attempt, server_first, bare, "n,,")
    if accepted:
        assert exchange.final(client_final) == "v=" + base64.b64encode(expected_signature).decode()
    else:
        with pytest.raises(AuthenticationFailedError):
            exchange.final(client_final)


def _decode_numeric(data: bytes) -> Decimal:
    count, weight, sign, scale = struct.unpack("!hhHH", data[:8])
    digits = struct.unpack(f"!{count}h", data[8:])
    value = sum((Decimal(d) * Decimal(10_000) ** (weight - i) for i, d in enumerate(digits)), Decimal(0))
    return (-value if sign == 0x4000 else value).quantize(Decimal(1).scaleb(-scale))


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12))
def test_binary_numeric_round_trips(value: Decimal) -> None:
    assert _decode_numeric(types.encode(value, types.NUMERIC, binary=True)) == value.quantize(Decimal("0.0001"))


def test_text_values_are_postgres_text() -> None:
    assert types.encode(True, types.BOOL, binary=False) == b"t"
    assert types.encode(float("inf"), types.FLOAT8, binary=False) == b"Infinity"
    assert types.encode(Decimal("1E+2"), types.NUMERIC, binary=False) == b"100"
    assert types.encode(b"\x01\xff", types.BYTEA, binary=False) == b"\\x01ff"
    assert types.pg_oid("DECIMAL(38,2)") == types.NUMERIC and types.type_modifier("DECIMAL(38,2)") == (38 << 16 | 2) + 4


def test_catalog_lists_relations_with_postgres_types() -> None:
    connection = duckdb.connect()
    catalog.install(connection)
    connection.execute("CREATE TABLE public.v (minute TIMESTAMPTZ, page VARCHAR, views BIGINT, revenue DECIMAL(18,2))")
    catalog.describe_relations(connection, catalog.relation_columns(connection))
    connection.execute("SET search_path = 'public,pgc'")
    rows = connection.execute(
        rewrite(
            "SELECT a.attname, t.typname, pg_catalog.format_type(a.atttypid, a.atttypmod) "
            "FROM pg_catalog.pg_attribute a "
            "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
            "WHERE c.relname = 'v' ORDER BY a.attnum"
        )
    ).fetchall()
    assert rows == [
        ("minute", "timestamptz", "timestamp with time zone"),
        ("page", "varchar", "character varying"),
        ("views", "int8", "bigint"),
        ("revenue", "numeric", "numeric(18,2)"),
    ]
