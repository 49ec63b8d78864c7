"""Simulated sources: a web clickstream, a mobile app and IoT sensors.

Each simulator turns a seed into an endless, reproducible stream of records. Delivery times are
a Poisson process at the knob's rate; an event's time is its delivery time less a little network
jitter, or, for a ``late_share`` of events, up to ``max_lateness`` less (an app used offline).
"""

from __future__ import annotations

import heapq
import random
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from lambda_contracts.events import (
    AddToCart,
    AddToCartPayload,
    Event,
    Metric,
    PageView,
    PageViewPayload,
    Purchase,
    PurchasePayload,
    SensorReading,
    SensorReadingPayload,
    Source,
)
from lambda_contracts.serde import Serde
from sources.faults import malform
from sources.knobs import Knobs, SimRecord
from sources.skew import Zipf

NETWORK_JITTER_S = 2.0
DUPLICATE_WINDOW = 1000
"""A duplicate re-delivers one of this many most recent events."""


class Simulator(ABC):
    """Shared timing, lateness, duplicate and malformed-record logic; subclasses make events."""

    source: Source
    seed_offset: int

    def __init__(self, knobs: Knobs, serde: Serde, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self.knobs = knobs
        self.serde = serde
        self.start = start
        self.rng = random.Random(knobs.seed * 1000 + self.seed_offset)

    def records(self) -> Iterator[SimRecord]:
        knobs, rng = self.knobs, self.rng
        recent: deque[tuple[bytes, bytes, str]] = deque(maxlen=DUPLICATE_WINDOW)
        due = 0.0
        while True:
            due += rng.expovariate(knobs.rate)
            roll = rng.random()
            if roll < knobs.malformed_share:
                event = self.next_event(self._event_time(due), rng)
                yield SimRecord(
                    due, event.entity_key.encode(), malform(self.serde.encode(event), rng), "malformed", None
                )
            elif roll < knobs.malformed_share + knobs.duplicate_share and recent:
                key, value, event_id = recent[rng.randrange(len(recent))]
                if knobs.cross_partition_share and rng.random() < knobs.cross_partition_share:
                    key = key + b"/resent"  # another key: most likely another partition, same bytes
                yield SimRecord(due, key, value, "duplicate", event_id)
            else:
                event = self.next_event(self._event_time(due), rng)
                key, value, event_id = (
                    event.entity_key.encode(),
                    self.serde.encode(event),
                    str(event.event_id),
                )
                recent.append((key, value, event_id))
                yield SimRecord(due, key, value, "valid", event_id)

    def _event_time(self, due: float) -> datetime:
        rng = self.rng
        lag = rng.random() * NETWORK_JITTER_S
        if self.knobs.late_share and rng.random() < self.knobs.late_share:
            lag = rng.random() * self.knobs.max_lateness.total_seconds()
        return self.start + timedelta(seconds=due - lag)

    @abstractmethod
    def next_event(self, event_time: datetime, rng: random.Random) -> Event:
        """A new valid event at ``event_time``.

        Built with ``model_construct``: the simulators make valid values by construction, so
        validating each one again would only cost time (``tests/sources`` decode every kind back).
        """

    def _event_id(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)


class _Commerce(Simulator):
    """Shoppers browsing, adding to cart and buying; web and app share this domain."""

    USERS = 20_000
    PAGES = 400
    PRODUCTS = 250

    def __init__(self, knobs: Knobs, serde: Serde, start: datetime) -> None:
        super().__init__(knobs, serde, start)
        catalog = random.Random(knobs.seed)  # same catalog for web and app
        self.users = Zipf([f"u-{i:06d}" for i in range(self.USERS)], exponent=0.9)
        self.pages = Zipf(["/", "/search", "/cart"] + [f"/products/p-{i:04d}" for i in range(self.PAGES)], exponent=1.2)
        self.products = Zipf([f"p-{i:04d}" for i in range(self.PRODUCTS)], exponent=1.1)
        self.prices = {product: Decimal(catalog.randrange(199, 49_999)) / 100 for product in self.products.items}

    def next_event(self, event_time: datetime, rng: random.Random) -> Event:
        user = self.users.pick(rng)
        session = f"s-{user}-{int(event_time.timestamp()) // 1800}"
        roll = rng.random()
        common: dict[str, Any] = {
            "event_id": self._event_id(),
            "source": self.source,
            "event_time": event_time,
            "entity_key": user,
            "schema_version": 1,
        }
        if roll < 0.80:
            return PageView.model_construct(
                **common,
                event_type="page_view",
                payload=PageViewPayload.model_construct(
                    page=self.pages.pick(rng),
                    session_id=session,
                    referrer=self.pages.pick(rng) if rng.random() < 0.7 else None,
                    duration_ms=int(rng.expovariate(1 / 20_000)),
                ),
            )
        product = self.products.pick(rng)
        quantity = 1 + int(rng.expovariate(1.5))
        if roll < 0.95:
            return AddToCart.model_construct(
                **common,
                event_type="add_to_cart",
                payload=AddToCartPayload.model_construct(
                    session_id=session, product_id=product, quantity=quantity, unit_price=self.prices[product]
                ),
            )
        return Purchase.model_construct(
            **common,
            event_type="purchase",
            payload=PurchasePayload.model_construct(
                session_id=session,
                order_id=f"o-{rng.getrandbits(48):012x}",
                product_id=product,
                quantity=quantity,
                amount=self.prices[product] * quantity,
                currency="EUR",
            ),
        )


class WebClickstream(_Commerce):
    source = "web"
    seed_offset = 1


class MobileApp(_Commerce):
    """The same shop from the app; set ``late_share`` for events held back while offline."""

    source = "app"
    seed_offset = 2


class IotSensors(Simulator):
    """Devices reporting one metric each, as a bounded random walk; a few devices are chatty."""

    source = "sensor"
    seed_offset = 3
    DEVICES = 2_000
    METRICS: ClassVar[dict[Metric, tuple[float, float, float, float]]] = {
        "temperature_c": (21.0, 0.2, -40.0, 85.0),
        "humidity_pct": (45.0, 0.5, 0.0, 100.0),
        "pressure_hpa": (1013.0, 0.3, 870.0, 1085.0),
        "vibration_mm_s": (2.0, 0.1, 0.0, 50.0),
    }

    def __init__(self, knobs: Knobs, serde: Serde, start: datetime) -> None:
        super().__init__(knobs, serde, start)
        metrics: list[Metric] = list(self.METRICS)
        self.devices = Zipf([f"dev-{i:05d}" for i in range(self.DEVICES)], exponent=1.0)
        self.metric_of = {d: metrics[i % len(metrics)] for i, d in enumerate(self.devices.items)}
        self.firmware_of = {d: f"fw-{1 + i % 3}.0" for i, d in enumerate(self.devices.items)}
        self.level = {d: self.METRICS[self.metric_of[d]][0] for d in self.devices.items}

    def next_event(self, event_time: datetime, rng: random.Random) -> Event:
        device = self.devices.pick(rng)
        metric = self.metric_of[device]
        _, step, low, high = self.METRICS[metric]
        level = min(high, max(low, self.level[device] + rng.gauss(0.0, step)))
        self.level[device] = level
        return SensorReading.model_construct(
            event_id=self._event_id(),
            source="sensor",
            event_time=event_time,
            entity_key=device,
            schema_version=1,
            event_type="sensor_reading",
            payload=SensorReadingPayload.model_construct(
                metric=metric, value=Decimal(f"{level:.3f}"), firmware=self.firmware_of[device]
            ),
        )


SIMULATORS: dict[Source, type[Simulator]] = {"web": WebClickstream, "app": MobileApp, "sensor": IotSensors}


def merged_records(simulators: Sequence[Simulator]) -> Iterator[SimRecord]:
    """Several sources as one stream, in delivery order."""
    return heapq.merge(*(s.records() for s in simulators), key=lambda record: record.due)
