"""The monitor validates and counts; it leaves dead letters to the lake sink, so each is kept once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from lambda_contracts.events import SOURCES
from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from lambdactl.monitor import MonitorTick, run_monitor
from sources.knobs import SimRecord
from sources.producer import BatchingProducer
from sources.run import build_simulators, run_simulation
from tests.flows import read_topic

pytestmark = pytest.mark.integration


def test_the_monitor_counts_valid_and_rejected_records(kafka: Settings) -> None:
    sent: list[SimRecord] = []
    simulators = build_simulators(
        SOURCES,
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

    assert read_topic(kafka, kafka.dead_letter_topic) == [], "the monitor counts rejects but does not keep them"
