"""Kappa beside Lambda on the same events: a replay of the log through the speed layer's code equals
the Lambda merged views and a recompute from the lake, also when the replay is SIGKILLed and resumed."""

from __future__ import annotations

import random
import re
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from batch_layer.batch_job import run_batch
from batch_layer.lake_sink import LakeSink
from lambda_contracts.events import SOURCES
from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from lambda_contracts.view_sets import LAMBDA, served_set
from lambdactl.kappa import (
    KappaError,
    kappa_settings,
    plan_replay,
    replay,
    replayed_to,
    report_lines,
    retire,
    served_fingerprints,
    switch,
    verify,
)
from lambdactl.services import RunProcess, run_processes
from sources.run import build_simulators
from speed_layer.worker import SpeedWorker
from tests.flows import (
    lively_simulators,
    producing,
    speed_reflected,
    start_lambdactl,
    wait_for,
    wait_for_line,
    whole_platform_settings,
)
from tests.oracle import compare

pytestmark = pytest.mark.integration


def test_a_replay_killed_and_resumed_equals_the_lambda_views_and_a_recompute(
    kafka: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    settings = whole_platform_settings(kafka, tmp_path)
    simulators = lively_simulators(seed=71, duplicate_share=0.05, malformed_share=0.02, cross_partition_share=0.5)
    stop = threading.Event()
    threads = [
        threading.Thread(target=LakeSink(settings).run, args=(stop,)),
        threading.Thread(target=SpeedWorker(settings).run, args=(stop,)),
    ]
    for thread in threads:
        thread.start()
    try:
        with producing(settings, simulators):
            wait_for(lambda: speed_reflected(settings) > 2000, 60, "the speed layer reflecting 2,000 records")
            run_batch(settings, "before-the-replay", lambda: spark)  # the Lambda answer: batch below C, speed above
            wait_for(lambda: speed_reflected(settings) > 4000, 60, "the speed layer reflecting 4,000 records")
        wait_for(lambda: served_fingerprints(settings)[1] == 1, 60, "serving on batch version 1 (speed reconciled)")
        plan = plan_replay(settings, "first")
        assert plan.lambda_batch_version == 1 and sum(plan.target.values()) > 4000

        log = tmp_path / "replay.log"
        args = ("kappa", "replay", "--name", "first", "--workers", "2")
        killed = start_lambdactl(settings.child_environment(), log, *args)
        wait_for_line(log, "2 processes, partitions")  # the helper is connected and told to go
        helpers = _replay_helpers(settings, killed.pid)
        assert len(helpers) == 1, helpers
        threading.Event().wait(random.Random(5).uniform(0.0, 0.5))  # a random instant of the replay
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        wait_for(
            lambda: not _replay_helpers(settings, killed.pid), 60, "the replay's helper stopping with its killed parent"
        )
        before = replayed_to(settings, "first", plan.target)

        progress = replay(settings, "first", workers=2, show=print)
        print(f"killed with {before:,} of {progress.total:,} offsets published; resumed to the end")
        assert progress.done == progress.total == sum(plan.target.values())
        assert progress.published_s is not None and 0 < progress.published_s < progress.seconds, (
            "both processes said when they last published, before they closed"
        )
        comparisons = verify(settings, "first")
        lines = report_lines(comparisons)
        print("\n".join(lines))
        assert lines[-1] == "identical=true"
        assert all(c.kappa.rows > 0 for c in comparisons), "every view has rows to compare"
        _switch_to_the_live_set_and_back(settings, "first")
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def _replay_helpers(settings: Settings, parent: int) -> list[RunProcess]:
    """The replay's helpers: ``lambdactl kappa`` processes of this data dir other than the replay itself."""
    return [p for p in run_processes(settings.data_dir) if p.service == "kappa" and p.pid != parent]


def _switch_to_the_live_set_and_back(settings: Settings, name: str) -> None:
    """Blue/green: with the set kept live and traffic flowing, serving switches to it and back while readers
    compare every snapshot with a recompute of exactly what it reflects; the set is then retired."""
    live_stop, reading = threading.Event(), threading.Event()
    live = threading.Thread(target=SpeedWorker(kappa_settings(settings, name)).run, args=(live_stop,))
    samples: list[str] = []
    failures: list[BaseException] = []

    def read() -> None:
        while not reading.is_set():
            before = served_set(settings).name
            try:
                compare(settings)  # exact for whichever set the snapshot came from
            except BaseException as error:
                failures.append(error)
                return
            if served_set(settings).name == before:
                samples.append(before)

    reader = threading.Thread(target=read)
    live.start()
    reader.start()
    try:
        with producing(settings, lively_simulators(seed=72, rate=150.0, cross_partition_share=0.5)):
            wait_for(lambda: samples.count(LAMBDA) >= 2 or bool(failures), 60, "readers on the Lambda views")
            switch(settings, name, show=print)
            wait_for(lambda: samples.count(name) >= 2 or bool(failures), 60, f"readers on Kappa set {name}")
            with pytest.raises(KappaError, match="is served now"):
                retire(settings, name, grace_s=0)
            switch(settings, LAMBDA, show=print)
            back = len(samples)
            wait_for(lambda: samples[back:].count(LAMBDA) >= 2 or bool(failures), 60, "readers back on Lambda")
    finally:
        reading.set()
        reader.join()
        live_stop.set()
        live.join()
    assert not failures, failures
    assert {LAMBDA, name} <= set(samples)
    with pytest.raises(KappaError, match="readers may still read it"):
        retire(settings, name, grace_s=3600)
    retire(settings, name, grace_s=0)
    assert not kappa_settings(settings, name).data_dir.exists()


def test_a_replay_refuses_when_retention_deleted_the_first_records(kafka: Settings, tmp_path: Path) -> None:
    from kafka import TopicPartition

    settings = whole_platform_settings(kafka, tmp_path)
    with producing(settings, build_simulators(SOURCES, rate=200.0, serde=JsonSerde(), start=datetime.now(UTC))):
        wait_for(lambda: _ends(settings) > 300, 30, "300 records in the topic")
    with admin_client(settings) as admin:
        admin.delete_records({TopicPartition(settings.events_topic, 0): 5})  # what retention does to old segments
    with pytest.raises(KappaError, match="partition 0 starts at 5"):
        plan_replay(settings, "late")
    assert not (tmp_path / "kappa" / "late").exists(), "a refused replay leaves nothing behind"


def _ends(settings: Settings) -> int:
    from lambda_contracts.plumbing.kafka import events_end_offsets

    return sum(events_end_offsets(settings).values())


def test_bench_replay_ends_with_its_figures_and_identical_views(kafka: Settings) -> None:
    from benchmarks.replay import report, run_replay_benchmark

    shown: list[str] = []
    lines = report(run_replay_benchmark(kafka, events=6000, show=shown.append))
    assert any("offsets replayed" in line for line in shown)
    assert re.fullmatch(r"replay_events_per_s=\d+ ratio_to_bare=\d+\.\d\d identical=true", lines[-1]), lines
