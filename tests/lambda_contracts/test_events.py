"""The envelope: what is valid, and the precise reason when it is not."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from lambda_contracts.events import Purchase, SensorReading
from lambda_contracts.serde import JsonSerde, Rejection

pytestmark = pytest.mark.unit
serde = JsonSerde()


def purchase(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "3f0c1a52-8a8e-4a55-9bb1-3c2a1e0f0c11",
        "event_type": "purchase",
        "source": "app",
        "event_time": "2026-11-24T18:40:19.123456+02:00",
        "entity_key": "u-000123",
        "schema_version": 1,
        "payload": {
            "session_id": "s-1",
            "order_id": "o-1",
            "product_id": "p-0001",
            "quantity": 3,
            "amount": 59.97,
            "currency": "EUR",
        },
    }
    event.update(changes)
    return event


def sensor(**payload_changes: Any) -> dict[str, Any]:
    payload = {"metric": "temperature_c", "value": 21.125, "firmware": "fw-1.0"}
    payload.update(payload_changes)
    return {
        "event_id": "9b2e6c1d-0000-4000-8000-000000000001",
        "event_type": "sensor_reading",
        "source": "sensor",
        "event_time": "2026-11-24T16:00:00Z",
        "entity_key": "dev-00001",
        "schema_version": 1,
        "payload": payload,
    }


def decode(obj: dict[str, Any]) -> Any:
    return serde.decode(json.dumps(obj).encode())


def test_valid_purchase_is_normalised_to_utc_with_exact_amount() -> None:
    event = decode(purchase())
    assert isinstance(event, Purchase)
    assert event.event_time == datetime(2026, 11, 24, 16, 40, 19, 123456, tzinfo=UTC)
    assert event.event_time.utcoffset() is not None and event.event_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert event.payload.amount == Decimal("59.97")


def test_encoding_round_trips_byte_for_byte() -> None:
    event = decode(purchase())
    encoded = serde.encode(event)
    assert serde.decode(encoded) == event
    assert serde.encode(serde.decode(encoded)) == encoded  # type: ignore[arg-type]
    assert b'"event_time":"2026-11-24T16:40:19.123456Z"' in encoded
    assert b'"amount":59.97' in encoded, "money travels as a JSON number"


def test_sensor_value_keeps_three_decimals_exactly() -> None:
    event = decode(sensor(value=-12.375))
    assert isinstance(event, SensorReading)
    assert event.payload.value == Decimal("-12.375")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (
            purchase(payload={**purchase()["payload"], "amount": -1}),
            "payload.amount: Input should be greater than or equal to 0",
        ),
        (
            purchase(payload={**purchase()["payload"], "amount": 1.234}),
            "payload.amount: Decimal input should have no more than 2 decimal places",
        ),
        (
            purchase(payload={**purchase()["payload"], "quantity": 0}),
            "payload.quantity: Input should be greater than or equal to 1",
        ),
        (
            purchase(payload={**purchase()["payload"], "currency": "euro"}),
            "payload.currency: String should match pattern",
        ),
        (
            purchase(event_type="refund"),
            "event_type: must be one of page_view, add_to_cart, purchase, sensor_reading (got 'refund')",
        ),
        (purchase(source="sensor"), "record: source must be web or app for commerce events, got 'sensor'"),
        (purchase(source="tv"), "source: Input should be 'web', 'app' or 'sensor'"),
        (purchase(event_time="2026-11-24T16:40:19"), "event_time: Input should have timezone info"),
        (
            purchase(event_time="1999-12-31T23:59:59Z"),
            "event_time: must be within [2000, 2100), got 1999-12-31T23:59:59+00:00",
        ),
        (purchase(schema_version=2), "schema_version: Input should be 1"),
        (purchase(event_id="not-a-uuid"), "event_id: Input should be a valid UUID"),
        (purchase(entity_key=""), "entity_key: String should have at least 1 character"),
        (purchase(extra_field=1), "extra_field: Extra inputs are not permitted"),
        (sensor(value="NaN"), "payload.value"),
        (sensor(metric="smoke"), "payload.metric: Input should be"),
        ({k: v for k, v in purchase().items() if k != "event_type"}, "record: missing event_type"),
    ],
)
def test_invalid_records_are_rejected_with_a_precise_reason(record: dict[str, Any], reason: str) -> None:
    result = decode(record)
    assert isinstance(result, Rejection)
    assert reason in result.reason


def test_missing_fields_are_each_named() -> None:
    record = purchase()
    del record["entity_key"], record["event_time"]
    result = decode(record)
    assert isinstance(result, Rejection)
    assert "entity_key: Field required" in result.reason
    assert "event_time: Field required" in result.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty record"),
        (None, "empty record"),
        (b"\xff\xfe\x00binary", "record: not valid JSON"),
        (b'{"event_type": "purchase"', "record: not valid JSON"),
        (b"[1, 2]", "record: Input should be an object"),
    ],
)
def test_undecodable_bytes_are_rejected(raw: bytes | None, reason: str) -> None:
    result = serde.decode(raw)
    assert isinstance(result, Rejection)
    assert result.reason.startswith(reason)
