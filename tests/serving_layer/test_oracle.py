"""The exact merge: merged views equal a from-scratch recompute of every valid event they reflect.

Real broker, real Delta lake, real Spark, real DuckDB. Events flow with late (2 h), duplicate and
malformed records while the lake sink and a speed worker run and the batch job publishes version
after version; the merged views are compared with an independent Python recompute again and again.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from batch_layer.batch_job import run_batch
from batch_layer.lake_sink import LakeSink
from lambda_contracts.settings import Settings
from speed_layer.worker import SpeedWorker
from tests.flows import (
    lively_simulators,
    producing,
    read_topic,
    wait_until_speed_reconciled,
    whole_platform_settings,
)
from tests.oracle import compare

pytestmark = pytest.mark.integration


def test_merged_views_equal_a_recompute_while_everything_runs(
    kafka: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    # a grace period long enough that a comparison right after the reconcile falls inside it on a busy machine
    settings = whole_platform_settings(kafka, tmp_path).model_copy(update={"speed_prune_grace_seconds": 10.0})
    stop = threading.Event()
    services = [
        threading.Thread(target=LakeSink(settings).run, args=(stop,)),
        threading.Thread(target=SpeedWorker(settings).run, args=(stop,)),
    ]
    for service in services:
        service.start()
    comparisons, reflected, in_grace = 0, [], 0
    try:
        with producing(settings, lively_simulators(seed=31, rate=100.0)):
            for batch_run in range(4):
                time.sleep(2.0)  # let events flow between batch publishes
                published = run_batch(settings, f"oracle-{batch_run}", lambda: spark)
                # once reconciled, the speed layer keeps the rows below the new cutoff listed for its
                # grace period: the first comparison falls inside it, where serving must leave them out
                wait_until_speed_reconciled(settings, published.version)
                for _ in range(2):
                    records, grace = compare(settings)
                    comparisons, in_grace = comparisons + 1, in_grace + grace
                    reflected.append(records)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the speed layer catches up with the end of the topic
            records, _ = compare(settings)
            comparisons += 1
            if records == len(read_topic(settings, settings.events_topic)):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        for service in services:
            service.join()
    assert comparisons >= 9
    assert max(reflected) > 3000
    assert in_grace >= 1, "a comparison fell between a batch publish and the speed layer's prune"
    assert records == len(read_topic(settings, settings.events_topic)), "in the end the merged views reflect all"
