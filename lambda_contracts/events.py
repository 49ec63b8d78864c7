"""The event envelope shared by every source: web clickstream, mobile app and IoT sensors.

Validation is a pure function of the record's bytes (no clock, no lookups), so the lake sink
and the speed layer always agree on which records are valid; that agreement is part of the
exact merge. Money and sensor values are decimals with a fixed scale so that sums are exact in
Spark and in DuckDB alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal, TypeAlias, get_args
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

SCHEMA_VERSION = 1

Source = Literal["web", "app", "sensor"]
SOURCES: tuple[Source, ...] = get_args(Source)
"""Every source, in the order commands and reports list them."""
COMMERCE_SOURCES: tuple[Source, ...] = ("web", "app")

EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    if not EARLIEST_EVENT_TIME <= value < LATEST_EVENT_TIME:
        raise ValueError(f"must be within [2000, 2100), got {value.isoformat()}")
    return value.astimezone(UTC)


def _format_utc(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


UtcTime = Annotated[AwareDatetime, AfterValidator(_to_utc), PlainSerializer(_format_utc, return_type=str)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=12, decimal_places=2),
    PlainSerializer(float, return_type=float),
]
Reading = Annotated[
    Decimal,
    Field(max_digits=15, decimal_places=3, allow_inf_nan=False),
    PlainSerializer(float, return_type=float),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PageViewPayload(_Strict):
    page: Identifier
    session_id: Identifier
    referrer: Identifier | None = None
    duration_ms: int = Field(ge=0, le=86_400_000)


class AddToCartPayload(_Strict):
    session_id: Identifier
    product_id: Identifier
    quantity: int = Field(ge=1, le=10_000)
    unit_price: Money


class PurchasePayload(_Strict):
    session_id: Identifier
    order_id: Identifier
    product_id: Identifier
    quantity: int = Field(ge=1, le=10_000)
    amount: Money
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


Metric = Literal["temperature_c", "humidity_pct", "pressure_hpa", "vibration_mm_s"]


class SensorReadingPayload(_Strict):
    metric: Metric
    value: Reading
    firmware: Identifier


class _Envelope(_Strict):
    """Fields every event carries, whatever its source."""

    event_id: UUID
    source: Source
    event_time: UtcTime
    entity_key: Identifier = Field(description="User id or device id; also the Kafka key.")
    schema_version: Literal[1]


class _CommerceEvent(_Envelope):
    @model_validator(mode="after")
    def _commerce_source(self) -> _CommerceEvent:
        if self.source not in COMMERCE_SOURCES:
            raise ValueError(f"source must be web or app for commerce events, got {self.source!r}")
        return self


class PageView(_CommerceEvent):
    event_type: Literal["page_view"]
    payload: PageViewPayload


class AddToCart(_CommerceEvent):
    event_type: Literal["add_to_cart"]
    payload: AddToCartPayload


class Purchase(_CommerceEvent):
    event_type: Literal["purchase"]
    payload: PurchasePayload


class SensorReading(_Envelope):
    event_type: Literal["sensor_reading"]
    payload: SensorReadingPayload

    @model_validator(mode="after")
    def _sensor_source(self) -> SensorReading:
        if self.source != "sensor":
            raise ValueError(f"source must be sensor for sensor_reading, got {self.source!r}")
        return self


Event: TypeAlias = Annotated[PageView | AddToCart | Purchase | SensorReading, Field(discriminator="event_type")]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: tuple[str, ...] = ("page_view", "add_to_cart", "purchase", "sensor_reading")
