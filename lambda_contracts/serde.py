"""Turning events into record bytes and back, behind one interface: JSON, and Avro with versioned schemas.

``decode`` never raises on bad input: every byte string becomes either an event or a
``Rejection`` with a precise reason, which the consumer sends to the dead-letter topic.

Producers write one format (the setting ``serde``); consumers read every format on the same topic
with ``WIRE``, which tells them apart by the first byte: an Avro record in the Confluent wire format
starts with the magic byte 0, which no JSON text does. Whatever the format, the event contract
(``events.py``, pydantic) decides validity, so every format yields the same events, lake rows and views.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer
from pydantic import ValidationError

from lambda_contracts.events import EVENT_ADAPTER, EVENT_TYPES, Event
from lambda_contracts.schema_registry import Catalog, events_catalog

MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record is not a valid event."""

    reason: str


class Decoder(Protocol):
    """Record bytes to an event, or the reason they are not one."""

    def decode(self, data: bytes | None) -> Event | Rejection: ...


class Serde(Decoder, Protocol):
    """A wire format for events."""

    name: str

    def encode(self, event: Event) -> bytes: ...


class JsonSerde:
    """Compact UTF-8 JSON, one object per record: readable in any tool, and the default."""

    name = "json"

    def encode(self, event: Event) -> bytes:
        return EVENT_ADAPTER.dump_json(event)

    def decode(self, data: bytes | None) -> Event | Rejection:
        if not data:
            return Rejection("empty record: the value has no bytes")
        try:
            return EVENT_ADAPTER.validate_json(data)
        except ValidationError as error:
            return Rejection(describe_validation_error(error))


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each failing field, e.g. ``payload.amount: Input should be >= 0 (got -3)``."""
    parts = []
    for item in error.errors(include_url=False):
        location = [str(p) for p in item["loc"]]
        if location and location[0] in EVENT_TYPES:
            location = location[1:]  # the union tag pydantic puts first; the event_type says it
        field = ".".join(location) or "record"
        message = item["msg"].removeprefix("Value error, ")
        echo_input = item["type"] not in ("missing", "json_invalid", "union_tag_not_found")
        if item["type"] == "union_tag_invalid":
            field = "event_type"
            tag = item.get("ctx", {}).get("tag")
            message = f"must be one of {', '.join(EVENT_TYPES)} (got {_short(tag)})"
            echo_input = False
        elif item["type"] == "union_tag_not_found":
            message = "missing event_type"
        elif item["type"] == "json_invalid":
            field = "record"
            message = f"not valid JSON ({item.get('ctx', {}).get('error', message)})"
        elif field == "record" and item["type"] == "value_error":
            echo_input = False  # a cross-field rule: its message already names the values
        if echo_input:
            message += f" (got {_short(item.get('input'))})"
        parts.append(f"{field}: {message}")
    return "; ".join(parts)[:MAX_REASON_CHARS]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


AVRO_MAGIC = 0
"""First byte of the Confluent wire format: magic 0, a 4-byte big-endian schema id, the Avro binary body."""
_HEADER_BYTES = 5
_PAYLOAD_RECORDS = {
    "page_view": "lambda.events.PageViewPayload",
    "add_to_cart": "lambda.events.AddToCartPayload",
    "purchase": "lambda.events.PurchasePayload",
    "sensor_reading": "lambda.events.SensorReadingPayload",
}


class AvroSerde:
    """Avro binary in the Confluent wire format, written with one registered schema version.

    Decoding resolves the writer's schema (found by the record's schema id) into the reader schema, by
    default the contract's, so records of every registered version decode to the same event fields; a
    consumer that wants a later version's fields reads with that version (``reader_version``).
    """

    def __init__(self, version: int, catalog: Catalog | None = None, reader_version: int | None = None) -> None:
        self.catalog = catalog or events_catalog()
        self.schema = self.catalog.version(version)
        self.reader = self.catalog.version(reader_version or self.catalog.contract_version)
        self.name = f"avro-v{version}"
        self._header = bytes([AVRO_MAGIC]) + self.schema.schema_id.to_bytes(4, "big")

    def encode(self, event: Event) -> bytes:
        payload = event.payload
        record = {
            "event_id": event.event_id,
            "source": event.source,
            "event_time": event.event_time,
            "entity_key": event.entity_key,
            "event_type": event.event_type,
            "payload": (
                _PAYLOAD_RECORDS[event.event_type],
                {n: getattr(payload, n) for n in type(payload).model_fields},
            ),
        }
        return self.encode_record(record)

    def encode_record(self, record: dict[str, Any]) -> bytes:
        """Any record of this schema version (fields the contract lacks, such as version 2's, included)."""
        buffer = io.BytesIO()
        buffer.write(self._header)
        schemaless_writer(buffer, self.schema.parsed, record)
        return buffer.getvalue()

    def decode(self, data: bytes | None) -> Event | Rejection:
        record = self.decode_record(data)
        if isinstance(record, Rejection):
            return record
        record["schema_version"] = 1  # the envelope version of the event contract, which Avro records meet
        try:
            return EVENT_ADAPTER.validate_python(record)
        except ValidationError as error:
            return Rejection(describe_validation_error(error))

    def decode_record(self, data: bytes | None) -> dict[str, Any] | Rejection:
        """The record as this serde's reader schema sees it, or why it cannot be read."""
        if not data:
            return Rejection("empty record: the value has no bytes")
        if data[0] != AVRO_MAGIC or len(data) < _HEADER_BYTES:
            return Rejection(f"not an Avro record in the Confluent wire format ({len(data)} bytes, first {data[0]})")
        schema_id = int.from_bytes(data[1:_HEADER_BYTES], "big")
        writer = self.catalog.by_id(schema_id)
        if writer is None:
            known = ", ".join(str(s.schema_id) for s in self.catalog.versions)
            return Rejection(
                f"unknown Avro schema id {schema_id} (registered ids: {known}): the producer used a schema "
                "this catalog does not hold; register it in lambda_contracts/avro/ and redeploy the consumers"
            )
        buffer = io.BytesIO(data)
        buffer.seek(_HEADER_BYTES)
        try:
            reader = None if writer is self.reader else self.reader.parsed  # resolution only across versions
            record = schemaless_reader(buffer, writer.parsed, reader)
        except (EOFError, IndexError):  # how fastavro says the bytes ran out
            return Rejection(
                f"not valid Avro for schema id {schema_id}: the body ends before its schema's fields do "
                "(cut in transit, or not written with this schema)"
            )
        except Exception as error:  # fastavro raises many kinds on bad bytes; each is a reason, not a crash
            return Rejection(
                f"not valid Avro for schema id {schema_id}: {type(error).__name__}: {error}"[:MAX_REASON_CHARS]
            )
        if buffer.tell() != len(data):
            return Rejection(
                f"not valid Avro for schema id {schema_id}: {len(data) - buffer.tell()} bytes after the record"
            )
        if not isinstance(record, dict) or not isinstance(record.get("payload"), dict):
            return Rejection(f"not valid Avro for schema id {schema_id}: no record")
        return record


class WireDecoder:
    """Reads every format a producer may write, on one topic: Avro (magic byte 0) or JSON."""

    def __init__(self) -> None:
        self.json = JsonSerde()
        self.avro = AvroSerde(events_catalog().contract_version)

    def decode(self, data: bytes | None) -> Event | Rejection:
        if data and data[0] == AVRO_MAGIC:
            return self.avro.decode(data)
        return self.json.decode(data)


_SERDES: dict[str, Serde] = {"json": JsonSerde(), "avro-v1": AvroSerde(1), "avro-v2": AvroSerde(2)}
WIRE = WireDecoder()
"""The decoder every consumer uses."""


def get_serde(name: str) -> Serde:
    """The serde registered under ``name``; unknown names say which exist."""
    try:
        return _SERDES[name]
    except KeyError:
        raise ValueError(f"unknown serde {name!r}; known: {', '.join(sorted(_SERDES))}") from None
