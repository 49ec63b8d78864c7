"""Speed workers killed at random points and rebalanced from one to two: the published state is exact."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from lambda_contracts.columns import events_to_arrow
from lambda_contracts.intake import split
from lambda_contracts.serde import JsonSerde, Rejection
from lambda_contracts.settings import Settings
from lambda_contracts.views import VIEWS
from serving_layer.query import query
from tests.flows import (
    crash_and_rebalance,
    lively_simulators,
    producing,
    read_topic,
    reaped,
    start_lambdactl,
    wait_for_line,
    wait_until_published,
)
from tests.oracle import first_copies, normalised_rows, speed_rows, view_rows

pytestmark = pytest.mark.integration


def test_killed_and_rebalanced_workers_publish_exact_state(kafka: Settings, tmp_path: Path) -> None:
    settings = kafka.model_copy(
        update={
            "data_dir": tmp_path,
            "speed_segment_seconds": 1.0,
            "speed_publish_ms": 200,
            "consumer_session_timeout_ms": 6000,
            "speed_group": f"speed-{kafka.events_topic}",
        }
    )
    env = settings.child_environment()
    with reaped([]) as children:
        with producing(settings, lively_simulators(seed=17, duplicate_share=0.05)):
            crash_and_rebalance(
                env,
                tmp_path,
                command="speed",
                ready="speed worker took partition",
                rounds=[1, 1, 1, 1],
                seed=5,
                children=children,
                uptime_s=(0.5, 2.5),
            )
            logs = [tmp_path / "first.log", tmp_path / "second.log"]
            first = start_lambdactl(env, logs[0], "speed")
            children.append(first)
            wait_for_line(logs[0], "speed worker took partition")
            second = start_lambdactl(env, logs[1], "speed")  # a rebalance from one worker to two
            children.append(second)
            wait_for_line(logs[1], "speed worker took partition")
        try:
            wait_until_published(settings)
        finally:
            for worker in (first, second):
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=60) == 0

    records = read_topic(settings, settings.events_topic)
    accepted, rejected = split(records, JsonSerde(), rejected_by="oracle")
    assert rejected and all(isinstance(JsonSerde().decode(r.original_value), Rejection) for r in rejected)
    events = first_copies(events_to_arrow(accepted).to_pylist())
    published = speed_rows(settings)
    for view in VIEWS:
        assert published[view.name] == view_rows(events, view), view.name
        merged = normalised_rows(query(settings, f"SELECT * FROM {view.name}"))
        assert merged == view_rows(events, view), f"merged {view.name} (no batch yet: all speed)"
    assert sum(1 for line in logs[0].read_text().splitlines() if "took partition" in line) >= 1
