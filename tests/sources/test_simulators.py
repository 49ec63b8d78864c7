"""Simulators: deterministic under a seed, with the shares, lateness and skew the knobs ask for."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from lambda_contracts.events import SOURCES, Event
from lambda_contracts.serde import JsonSerde, Rejection
from sources.knobs import DEFAULTS, Knobs, SimRecord
from sources.run import build_simulators
from sources.simulators import IotSensors, MobileApp, WebClickstream, merged_records

pytestmark = pytest.mark.unit
serde = JsonSerde()
START = datetime(2026, 11, 24, 12, tzinfo=UTC)


def take(simulator: WebClickstream | MobileApp | IotSensors, count: int) -> list[SimRecord]:
    return list(itertools.islice(simulator.records(), count))


def test_same_seed_same_bytes_and_another_seed_differs() -> None:
    knobs = Knobs(duplicate_share=0.05, malformed_share=0.05, late_share=0.2, seed=11)
    first = take(MobileApp(knobs, serde, START), 2000)
    again = take(MobileApp(knobs, serde, START), 2000)
    other = take(MobileApp(Knobs(seed=12), serde, START), 2000)
    assert first == again
    assert [r.value for r in first] != [r.value for r in other]


def test_shares_of_duplicates_and_malformed_records() -> None:
    records = take(WebClickstream(Knobs(duplicate_share=0.05, malformed_share=0.02), serde, START), 20_000)
    kinds = Counter(r.kind for r in records)
    assert kinds["duplicate"] / len(records) == pytest.approx(0.05, abs=0.01)
    assert kinds["malformed"] / len(records) == pytest.approx(0.02, abs=0.006)


def test_every_record_validates_as_its_kind_says() -> None:
    knobs = Knobs(duplicate_share=0.03, malformed_share=0.1, late_share=0.3)
    for simulator in (
        WebClickstream(knobs, serde, START),
        MobileApp(knobs, serde, START),
        IotSensors(knobs, serde, START),
    ):
        for record in take(simulator, 3000):
            decoded = serde.decode(record.value)
            if record.kind == "malformed":
                assert isinstance(decoded, Rejection), record.value
            else:
                assert not isinstance(decoded, Rejection), decoded
                assert str(decoded.event_id) == record.event_id
                assert decoded.entity_key.encode() == record.key, "the Kafka key is the entity"


def test_duplicates_redeliver_an_earlier_event_byte_for_byte() -> None:
    records = take(IotSensors(Knobs(duplicate_share=0.1), serde, START), 5000)
    seen: dict[str | None, bytes] = {}
    for record in records:
        if record.kind == "duplicate":
            assert seen[record.event_id] == record.value
        elif record.kind == "valid":
            assert record.event_id not in seen, "new events have new ids"
            seen[record.event_id] = record.value


def event_lags(records: list[SimRecord]) -> list[timedelta]:
    lags = []
    for record in records:
        event = serde.decode(record.value)
        assert not isinstance(event, Rejection)
        lags.append(START + timedelta(seconds=record.due) - event.event_time)
    return lags


def test_late_app_events_stay_within_max_lateness() -> None:
    knobs = Knobs(late_share=0.25, max_lateness=timedelta(hours=2))
    lags = event_lags(take(MobileApp(knobs, serde, START), 8000))
    late = [lag for lag in lags if lag > timedelta(seconds=2)]
    assert len(late) / len(lags) == pytest.approx(0.25 * (1 - 2 / 7200), abs=0.03)
    assert max(lags) <= timedelta(hours=2)
    assert max(lags) > timedelta(hours=1, minutes=45), "lateness spreads up to the maximum"
    assert min(lags) >= timedelta(0), "no event is from the future"


def test_without_late_share_events_lag_only_by_network_jitter() -> None:
    lags = event_lags(take(WebClickstream(Knobs(), serde, START), 3000))
    assert max(lags) <= timedelta(seconds=2)


def test_traffic_is_skewed_towards_a_few_hot_items() -> None:
    events: list[Event] = [serde.decode(r.value) for r in take(WebClickstream(Knobs(), serde, START), 20_000)]  # type: ignore[misc]
    pages = Counter(e.payload.page for e in events if e.event_type == "page_view")
    top_share = sum(count for _, count in pages.most_common(len(pages) // 100 or 1)) / sum(pages.values())
    assert top_share > 0.15, f"top 1% of pages got only {top_share:.0%} of views"
    kinds = Counter(e.event_type for e in events)
    assert kinds["page_view"] > kinds["add_to_cart"] > kinds["purchase"] > 0


def test_purchase_amount_is_price_times_quantity() -> None:
    simulator = WebClickstream(Knobs(), serde, START)
    for record in take(simulator, 5000):
        event = json.loads(record.value)
        if event["event_type"] == "purchase":
            payload = event["payload"]
            price = simulator.prices[payload["product_id"]]
            assert price * payload["quantity"] == Decimal(str(payload["amount"]))


def test_merged_sources_come_in_delivery_order() -> None:
    simulators = [
        WebClickstream(Knobs(rate=300), serde, START),
        MobileApp(Knobs(rate=100), serde, START),
        IotSensors(Knobs(rate=600), serde, START),
    ]
    records = list(itertools.islice(merged_records(simulators), 5000))
    dues = [r.due for r in records]
    assert dues == sorted(dues)
    sources = Counter(json.loads(r.value)["source"] for r in records)
    assert sources["sensor"] > sources["web"] > sources["app"]


def test_knobs_refuse_impossible_values() -> None:
    with pytest.raises(ValueError, match="late_share"):
        Knobs(late_share=1.5)
    with pytest.raises(ValueError, match="rate"):
        Knobs(rate=0)
    with pytest.raises(ValueError, match="cannot exceed 1"):
        Knobs(duplicate_share=0.6, malformed_share=0.6)


def test_the_platform_defaults_live_in_one_place() -> None:
    """``lambdactl simulate``, ``build_simulators`` and the demo all start from ``DEFAULTS``."""
    import inspect

    from lambdactl.main import demo, simulate

    built = build_simulators(serde=serde, start=START)
    assert [s.source for s in built] == list(SOURCES)
    app = next(s for s in built if s.source == "app")
    assert app.knobs == DEFAULTS, "the app is the source with late events"
    assert all(s.knobs == replace(DEFAULTS, late_share=0.0) for s in built if s.source != "app")
    options = inspect.signature(simulate).parameters
    assert options["rate"].default == DEFAULTS.rate
    assert options["late_share"].default == DEFAULTS.late_share
    assert options["max_lateness_minutes"].default == DEFAULTS.max_lateness.total_seconds() / 60
    assert options["duplicate_share"].default == DEFAULTS.duplicate_share
    assert options["cross_partition_share"].default == DEFAULTS.cross_partition_share
    assert options["malformed_share"].default == DEFAULTS.malformed_share
    assert options["source"].default == list(SOURCES)
    assert inspect.signature(demo).parameters["rate"].default == DEFAULTS.rate


def test_cross_partition_redeliveries_carry_the_same_bytes_under_another_key() -> None:
    knobs = Knobs(duplicate_share=0.2, cross_partition_share=0.5, seed=4)
    records = take(WebClickstream(knobs, serde, START), 5000)
    originals = {r.event_id: (r.key, r.value) for r in records if r.kind == "valid"}
    resent = [r for r in records if r.kind == "duplicate" and r.key != originals[r.event_id][0]]
    same = [r for r in records if r.kind == "duplicate" and r.key == originals[r.event_id][0]]
    assert resent and same, "both kinds of redelivery"
    assert all(r.value == originals[r.event_id][1] for r in resent), "byte for byte the same event"
