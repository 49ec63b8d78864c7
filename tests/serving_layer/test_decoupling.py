"""Layers are decoupled: the speed layer stops for a while, producers keep their rate, nothing breaks.

While the speed worker is down the lake sink keeps writing and a batch run publishes; the
merged views stay exact (they fall back on what is published). After the restart the speed
layer catches up from its snapshots and the batch cutoff, and the merged views equal the
recompute of every record.
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
from tests.flows import lively_simulators, producing, read_topic, speed_reflected, wait_for, whole_platform_settings
from tests.oracle import compare

pytestmark = pytest.mark.integration

OUTAGE_S = 8.0


def start_speed(settings: Settings) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=SpeedWorker(settings).run, args=(stop,))
    thread.start()
    return stop, thread


def test_speed_layer_down_for_a_while_then_catches_up_exactly(
    kafka: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    settings = whole_platform_settings(kafka, tmp_path)
    sink_stop = threading.Event()
    sink = threading.Thread(target=LakeSink(settings).run, args=(sink_stop,))
    sink.start()
    speed_stop, speed = start_speed(settings)
    try:
        with producing(settings, lively_simulators(seed=47, rate=150.0)):
            wait_for(lambda: speed_reflected(settings) > 1000, 60, "the speed layer reflecting 1,000 records")
            speed_stop.set()
            speed.join()
            stopped_at = speed_reflected(settings)
            time.sleep(OUTAGE_S / 2)  # producers keep their rate while the speed layer is down
            run_batch(settings, "during-speed-outage", lambda: spark)
            reflected, _ = compare(settings)  # exact while speed is down: batch + what speed published
            assert speed_reflected(settings) == stopped_at, "nothing published the speed state meanwhile"
            time.sleep(OUTAGE_S / 2)
            behind = len(read_topic(settings, settings.events_topic)) - stopped_at
            assert behind > 1000, "the outage left the speed layer well behind"
            speed_stop, speed = start_speed(settings)
        total = len(read_topic(settings, settings.events_topic))
        wait_for(lambda: compare(settings)[0] == total, 120, "the merged views catching up with every record")
        assert reflected < total
    finally:
        speed_stop.set()
        sink_stop.set()
        speed.join()
        sink.join()
