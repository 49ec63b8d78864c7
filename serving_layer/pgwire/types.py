"""DuckDB types as Postgres types: the OIDs clients see, and values in text and binary formats.

Clients pick their parsers by type OID (RowDescription), so each DuckDB result type maps to the
Postgres type with the same meaning; anything without one (structs, maps, unions) is sent as text.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

BOOL, BYTEA, INT8, INT2, INT4, TEXT, OID, JSON = 16, 17, 20, 21, 23, 25, 26, 114
FLOAT4, FLOAT8, VARCHAR, DATE, TIME = 700, 701, 1043, 1082, 1083
TIMESTAMP, TIMESTAMPTZ, INTERVAL, NUMERIC, UUID = 1114, 1184, 1186, 1700, 2950

_EPOCH = datetime(2000, 1, 1)
_EPOCH_DATE = date(2000, 1, 1)


@dataclass(frozen=True)
class PgType:
    oid: int
    name: str
    size: int  # typlen: bytes, or -1 for variable length


PG_TYPES = {
    t.oid: t
    for t in (
        PgType(BOOL, "bool", 1),
        PgType(BYTEA, "bytea", -1),
        PgType(INT8, "int8", 8),
        PgType(INT2, "int2", 2),
        PgType(INT4, "int4", 4),
        PgType(TEXT, "text", -1),
        PgType(OID, "oid", 4),
        PgType(JSON, "json", -1),
        PgType(FLOAT4, "float4", 4),
        PgType(FLOAT8, "float8", 8),
        PgType(VARCHAR, "varchar", -1),
        PgType(DATE, "date", 4),
        PgType(TIME, "time", 8),
        PgType(TIMESTAMP, "timestamp", 8),
        PgType(TIMESTAMPTZ, "timestamptz", 8),
        PgType(INTERVAL, "interval", 16),
        PgType(NUMERIC, "numeric", -1),
        PgType(UUID, "uuid", 16),
    )
}

_BY_DUCKDB_NAME = {
    "BOOLEAN": BOOL,
    "BLOB": BYTEA,
    "TINYINT": INT2,
    "SMALLINT": INT2,
    "UTINYINT": INT2,
    "INTEGER": INT4,
    "USMALLINT": INT4,
    "BIGINT": INT8,
    "UINTEGER": INT8,
    "UBIGINT": NUMERIC,
    "HUGEINT": NUMERIC,
    "UHUGEINT": NUMERIC,
    "FLOAT": FLOAT4,
    "DOUBLE": FLOAT8,
    "VARCHAR": VARCHAR,
    "DATE": DATE,
    "TIME": TIME,
    "TIMESTAMP": TIMESTAMP,
    "TIMESTAMP_S": TIMESTAMP,
    "TIMESTAMP_MS": TIMESTAMP,
    "TIMESTAMP_NS": TIMESTAMP,
    "TIMESTAMP WITH TIME ZONE": TIMESTAMPTZ,
    "INTERVAL": INTERVAL,
    "UUID": UUID,
    "JSON": JSON,
}


def pg_oid(duckdb_type: str) -> int:
    """The Postgres type OID a DuckDB type name is sent as."""
    name = duckdb_type.upper()
    if name.startswith("DECIMAL"):
        return NUMERIC
    return _BY_DUCKDB_NAME.get(name, TEXT)


def type_modifier(duckdb_type: str) -> int:
    """Postgres's atttypmod: numeric(p, s) is ((p << 16) | s) + 4; -1 when the type has none."""
    name = duckdb_type.upper()
    if name.startswith("DECIMAL(") and name.endswith(")"):
        precision, scale = (int(part) for part in name[len("DECIMAL(") : -1].split(","))
        return ((precision << 16) | scale) + 4
    return -1


def format_type(oid: int, modifier: int) -> str:
    """What Postgres's format_type() prints, for the types served here."""
    if oid == NUMERIC and modifier >= 4:
        return f"numeric({(modifier - 4) >> 16},{(modifier - 4) & 0xFFFF})"
    names = {
        INT2: "smallint",
        INT4: "integer",
        INT8: "bigint",
        FLOAT4: "real",
        FLOAT8: "double precision",
        VARCHAR: "character varying",
        BOOL: "boolean",
        TIMESTAMP: "timestamp without time zone",
        TIMESTAMPTZ: "timestamp with time zone",
        TIME: "time without time zone",
    }
    return names.get(oid) or (PG_TYPES[oid].name if oid in PG_TYPES else "text")


def _interval_text(value: timedelta) -> str:
    seconds = value.seconds + value.microseconds / 1_000_000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{int(hours):02d}:{int(minutes):02d}:{seconds:09.6f}".rstrip("0").rstrip(".")
    return f"{value.days} days {clock}" if value.days else clock


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def text_value(value: object) -> str:
    """A value in Postgres's text format."""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (date, time, uuid.UUID)):
        return str(value)
    if isinstance(value, timedelta):
        return _interval_text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _numeric_binary(value: Decimal) -> bytes:
    """Postgres's binary numeric: base-10000 digits, weight, sign and display scale."""
    if value.is_nan():
        return struct.pack("!hhHH", 0, 0, 0xC000, 0)
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    scale = max(0, -exponent)
    text = "".join(map(str, digits))
    if exponent >= 0:
        integer, fraction = text + "0" * exponent, ""
    else:
        text = text.rjust(scale + 1, "0")
        integer, fraction = text[:-scale], text[-scale:]
    integer = integer.lstrip("0")
    integer = integer.rjust((len(integer) + 3) // 4 * 4, "0")
    fraction = fraction.ljust((len(fraction) + 3) // 4 * 4, "0")
    groups = [int(integer[i : i + 4]) for i in range(0, len(integer), 4)]
    weight = len(groups) - 1
    groups += [int(fraction[i : i + 4]) for i in range(0, len(fraction), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    header = struct.pack("!hhHH", len(groups), weight, 0x4000 if sign else 0, scale)
    return header + struct.pack(f"!{len(groups)}h", *groups)


def _timestamp_binary(value: object) -> bytes:
    assert isinstance(value, datetime)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    delta = value - _EPOCH
    return struct.pack("!q", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


_BINARY: dict[int, Callable[[object], bytes]] = {
    BOOL: lambda v: b"\x01" if v else b"\x00",
    INT2: lambda v: struct.pack("!h", v),
    INT4: lambda v: struct.pack("!i", v),
    INT8: lambda v: struct.pack("!q", v),
    OID: lambda v: struct.pack("!I", v),
    FLOAT4: lambda v: struct.pack("!f", v),
    FLOAT8: lambda v: struct.pack("!d", v),
    TEXT: lambda v: str(v).encode(),
    VARCHAR: lambda v: str(v).encode(),
    JSON: lambda v: str(v).encode(),
    BYTEA: lambda v: bytes(v),  # type: ignore[call-overload]  # noqa: PLW0108 - bytes(object) does not type-check
    DATE: lambda v: struct.pack("!i", (v - _EPOCH_DATE).days),  # type: ignore[operator]
    TIMESTAMP: _timestamp_binary,
    TIMESTAMPTZ: _timestamp_binary,
    NUMERIC: lambda v: _numeric_binary(Decimal(v)),  # type: ignore[arg-type]
    UUID: lambda v: v.bytes,  # type: ignore[attr-defined]
}


class UnsupportedFormatError(ValueError):
    """A client asked for a binary format this endpoint does not write or read."""


def encode(value: object, oid: int, binary: bool) -> bytes:
    if not binary:
        return text_value(value).encode()
    try:
        return _BINARY[oid](value)
    except KeyError:
        raise UnsupportedFormatError(
            f"binary format is not supported for type {PG_TYPES.get(oid, PG_TYPES[TEXT]).name}; ask for text"
        ) from None


def _binary_timestamp(data: bytes) -> datetime:
    return _EPOCH + timedelta(microseconds=struct.unpack("!q", data)[0])


_FROM_BINARY: dict[int, Callable[[bytes], object]] = {
    BOOL: lambda d: d != b"\x00",
    INT2: lambda d: struct.unpack("!h", d)[0],
    INT4: lambda d: struct.unpack("!i", d)[0],
    INT8: lambda d: struct.unpack("!q", d)[0],
    OID: lambda d: struct.unpack("!I", d)[0],
    FLOAT4: lambda d: struct.unpack("!f", d)[0],
    FLOAT8: lambda d: struct.unpack("!d", d)[0],
    TEXT: lambda d: d.decode(),
    VARCHAR: lambda d: d.decode(),
    BYTEA: bytes,
    DATE: lambda d: _EPOCH_DATE + timedelta(days=struct.unpack("!i", d)[0]),
    TIMESTAMP: _binary_timestamp,
    TIMESTAMPTZ: lambda d: _binary_timestamp(d).replace(tzinfo=UTC),
    UUID: lambda d: uuid.UUID(bytes=d),
}

_FROM_TEXT: dict[int, Callable[[str], object]] = {
    BOOL: lambda s: s.lower() in {"t", "true", "1", "on", "yes", "y"},
    INT2: int,
    INT4: int,
    INT8: int,
    OID: int,
    FLOAT4: float,
    FLOAT8: float,
    NUMERIC: Decimal,
    DATE: date.fromisoformat,
    TIMESTAMP: datetime.fromisoformat,
    TIMESTAMPTZ: datetime.fromisoformat,
    UUID: uuid.UUID,
    BYTEA: lambda s: bytes.fromhex(s[2:]) if s.startswith("\\x") else s.encode(),
}


def decode_parameter(data: bytes | None, oid: int, binary: bool) -> object:
    """A bound parameter as the Python value DuckDB binds (unknown types stay text for DuckDB to cast)."""
    if data is None:
        return None
    if binary:
        if oid not in _FROM_BINARY:
            raise UnsupportedFormatError(f"binary parameters of type OID {oid} are not supported; send them as text")
        return _FROM_BINARY[oid](data)
    text = data.decode()
    convert = _FROM_TEXT.get(oid)
    return convert(text) if convert else text
