"""Decoding a micro-batch of Kafka records into Arrow columns without per-event Python objects.

The event contract (``events.py``, checked by pydantic) stays the only authority on validity.
This module adds a vectorized fast path for records in the *canonical* encoding, the exact bytes
``JsonSerde.encode`` writes: fixed key order, no whitespace, ASCII, ``...ffffffZ`` times, plain
decimals. One RE2 pattern (Arrow compute, C++) recognises them and extracts every field; the
checks a pattern cannot express (integer ranges, real calendar dates) run on whole columns.
Everything else, valid or not (other key orders, escapes, non-ASCII, exponent numbers, time
offsets, bad input) goes through pydantic record by record, so its rejection reasons are the
usual ones. The fast path only accepts records pydantic accepts, with the same column values:
``tests/lambda_contracts/test_micro_batch.py`` checks that against pydantic on mutated bytes.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from lambda_contracts.columns import EVENT_SCHEMA, PAYLOAD_COLUMNS, UTC_MICROS, events_to_arrow
from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.intake import KafkaRecord, split
from lambda_contracts.serde import Decoder, JsonSerde, WireDecoder

_TEXT = r'"[ !#-\[\]-~]{1,128}"'
"""An identifier of 1 to 128 printable ASCII characters written without escapes."""
_MONEY = r"(?:0|[1-9][0-9]{0,9})(?:\.[0-9]{1,2})?"
_QUANTITY = r"(?:[1-9][0-9]{0,3}|10000)"


def _object(*fields: tuple[str, str]) -> str:
    return r"\{" + ",".join(f'"{name}":{pattern}' for name, pattern in fields) + r"\}"


_UUID = r'"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"'
_TIME = r'"20[0-9]{2}-[01][0-9]-[0-3][0-9]T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z"'
_PAYLOADS = {
    "page_view": _object(
        ("page", _TEXT),
        ("session_id", _TEXT),
        ("referrer", f"(?:null|{_TEXT})"),
        ("duration_ms", "(?:0|[1-9][0-9]{0,7})"),
    ),
    "add_to_cart": _object(
        ("session_id", _TEXT), ("product_id", _TEXT), ("quantity", _QUANTITY), ("unit_price", _MONEY)
    ),
    "purchase": _object(
        ("session_id", _TEXT),
        ("order_id", _TEXT),
        ("product_id", _TEXT),
        ("quantity", _QUANTITY),
        ("amount", _MONEY),
        ("currency", '"[A-Z]{3}"'),
    ),
    "sensor_reading": _object(
        ("metric", '"(?:temperature_c|humidity_pct|pressure_hpa|vibration_mm_s)"'),
        ("value", r"-?(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,3})?"),
        ("firmware", _TEXT),
    ),
}


def _envelope(sources: str, kinds: list[str]) -> str:
    """The whole record for events of ``kinds``, whose source must be one of ``sources``."""
    payloads = "|".join(f'"{kind}","payload":{_PAYLOADS[kind]}' for kind in kinds)
    return (
        f'"source":"(?:{sources})","event_time":{_TIME},"entity_key":{_TEXT},"schema_version":1,'
        f'"event_type":(?:{payloads})'
    )


_CANONICAL = (
    rf'^\{{"event_id":{_UUID},(?:'
    + _envelope("web|app", ["page_view", "add_to_cart", "purchase"])
    + "|"
    + _envelope("sensor", ["sensor_reading"])
    + r")\}$"
)
"""The canonical encoding of every valid event, save two rules checked on columns (below)."""

_JSON_SCHEMA = pa.schema(
    [
        *(EVENT_SCHEMA.field(name) for name in ("event_id", "source")),
        pa.field("event_time", pa.string()),
        *(EVENT_SCHEMA.field(name) for name in ("entity_key", "schema_version", "event_type")),
        pa.field("payload", pa.struct([EVENT_SCHEMA.field(name) for name, _ in PAYLOAD_COLUMNS])),
    ]
)
_PARSE = pj.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="error")
MAX_DURATION_MS = 86_400_000
_PARTITION = operator.attrgetter("partition")
_OFFSET = operator.attrgetter("offset")


def decode_micro_batch(
    records: Sequence[KafkaRecord], serde: Decoder, rejected_by: str
) -> tuple[pa.Table, list[DeadLetter]]:
    """Valid records as rows in ``EVENT_SCHEMA`` by (partition, offset); invalid ones as dead letters."""
    if not records:
        return EVENT_SCHEMA.empty_table(), []
    if not isinstance(serde, JsonSerde | WireDecoder):  # the others never write canonical JSON
        accepted, rejected = split(records, serde, rejected_by)
        return events_to_arrow(accepted), rejected
    rows, taken = _canonical_rows(records)
    rest = [record for record, done in zip(records, taken, strict=True) if not done]
    if not rest:
        return rows, []
    accepted, rejected = split(rest, serde, rejected_by)
    both = pa.concat_tables([rows, events_to_arrow(accepted)])
    order = pc.sort_indices(both, [("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    return both.take(order), rejected


def _canonical_rows(records: Sequence[KafkaRecord]) -> tuple[pa.Table, list[bool]]:
    """Rows for the records in canonical encoding, and which records those were."""
    values = pa.array([r.value for r in records], pa.binary())
    matched = pc.fill_null(pc.match_substring_regex(values, pattern=_CANONICAL), False)
    picked = values.filter(matched)
    if len(picked) == 0:
        return EVENT_SCHEMA.empty_table(), [False] * len(records)
    lines = pc.binary_join_element_wise(picked, b"", b"\n")  # newline-delimited JSON in one buffer
    ndjson = lines.buffers()[2][: pc.sum(pc.binary_length(lines)).as_py()]
    parsed = pj.read_json(pa.BufferReader(ndjson), parse_options=_PARSE)
    payload = parsed.column("payload").combine_chunks()
    event_time = _timestamps(parsed.column("event_time").combine_chunks())
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        name: parsed.column(name) for name in ("event_id", "event_type", "source", "entity_key", "schema_version")
    }
    columns["event_time"] = event_time
    columns["event_date"] = pc.cast(event_time, pa.date32())
    columns.update({name: payload.field(name) for name, _ in PAYLOAD_COLUMNS})
    columns["kafka_partition"] = pa.array(map(_PARTITION, records), pa.int32(), size=len(records)).filter(matched)
    columns["kafka_offset"] = pa.array(map(_OFFSET, records), pa.int64(), size=len(records)).filter(matched)
    rows = pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)
    duration_ok = pc.fill_null(pc.less_equal(rows.column("duration_ms"), MAX_DURATION_MS), True)
    ok = pc.and_(pc.is_valid(event_time), duration_ok.combine_chunks())
    if pc.all(ok).as_py():
        return rows, matched.to_pylist()
    # rare: leave these to pydantic, which says what is wrong
    matched = pc.replace_with_mask(matched, matched, ok)
    return rows.filter(ok), matched.to_pylist()


def _timestamps(text: pa.Array) -> pa.Array:
    """UTC timestamps, null where the calendar date does not exist (e.g. 2026-02-30)."""
    try:
        return text.cast(UTC_MICROS)  # Arrow's ISO 8601 parser refuses days a month does not have
    except pa.ArrowInvalid:
        pass  # rare: find the rows that are not real dates
    seconds = pc.utf8_slice_codeunits(text, 0, 19)
    parsed = pc.strptime(seconds, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=True)
    minutes = pc.strftime(parsed, format="%Y-%m-%dT%H:%M")  # strptime rolls 02-30 over to 03-02
    real = pc.fill_null(pc.equal(minutes, pc.utf8_slice_codeunits(text, 0, 16)), False)
    micros = pc.cast(pc.utf8_slice_codeunits(text, 20, 26), pa.int64())
    stamp = pc.add(pc.cast(parsed, pa.int64()), micros).cast(pa.timestamp("us")).cast(UTC_MICROS)
    return pc.if_else(real, stamp, pa.scalar(None, UTC_MICROS))
