"""Malformed records end in the dead-letter topic with their bytes and a reason; counts are visible."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from lambdactl.dead_letters import read_dead_letters
from lambdactl.monitor import MonitorTick, run_monitor
from sources.knobs import SimRecord
from sources.producer import BatchingProducer
from sources.run import build_simulators, run_simulation
from tests.flows import read_topic

pytestmark = pytest.mark.integration


def test_malformed_records_are_dead_lettered_with_reasons(kafka: Settings) -> None:
    sent: list[SimRecord] = []
    simulators = build_simulators(
        ["web", "app", "sensor"],
        rate=1000.0,
        serde=JsonSerde(),
        start=datetime(2026, 11, 24, tzinfo=UTC),
        seed=9,
        malformed_share=0.05,
        duplicate_share=0.02,
    )
    run_simulation(
        simulators, BatchingProducer(kafka, kafka.events_topic), count=3000, realtime=False, on_record=sent.append
    )
    malformed = [r for r in sent if r.kind == "malformed"]
    assert len(malformed) > 50

    stop = threading.Event()
    ticks: list[MonitorTick] = []

    def show(tick: MonitorTick) -> None:
        ticks.append(tick)
        if tick.totals.accepted + tick.totals.rejected >= len(sent) and tick.lag == 0:
            stop.set()

    watchdog = threading.Timer(60, stop.set)
    watchdog.start()
    try:
        totals = run_monitor(kafka, stop, show, group_id="test-monitor", every_s=0.2)
    finally:
        watchdog.cancel()
    assert totals.rejected == len(malformed)
    assert totals.accepted == len(sent) - len(malformed)
    assert sum(totals.by_source.values()) == totals.accepted

    letters = [DeadLetter.from_record(r.value, list(r.headers)) for r in read_topic(kafka, kafka.dead_letter_topic)]
    assert sorted((letter.original_value or b"") for letter in letters) == sorted(r.value for r in malformed)
    source_records = {(r.partition, r.offset): r.value for r in read_topic(kafka, kafka.events_topic)}
    for letter in letters:
        assert letter.reason, "every dead letter says why"
        assert letter.rejected_by == "test-monitor"
        assert letter.source_topic == kafka.events_topic
        assert source_records[(letter.source_partition, letter.source_offset)] == letter.original_value

    summary = read_dead_letters(kafka, last=5)
    assert summary.total == len(malformed)
    assert len(summary.recent) == 5
