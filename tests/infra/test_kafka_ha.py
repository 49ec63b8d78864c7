"""High availability without Docker: a three-node KRaft cluster loses a broker while the platform runs.

Topics have replication factor 3 and min.insync.replicas 2, producers use acks=all: with one
node SIGKILLed mid-stream, producing, the lake sink and the speed layer go on, every
acknowledged record is in the topic exactly once, and the merged views equal the recompute.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from batch_layer.batch_job import run_batch
from batch_layer.lake_sink import LakeSink
from infra.local_broker import LocalBroker
from infra.topics import ensure_topics
from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.topics import platform_topics
from sources.producer import BatchingProducer
from sources.run import RunReport, run_simulation
from speed_layer.worker import SpeedWorker
from tests.flows import (
    lively_simulators,
    local_cluster_settings,
    read_topic,
    speed_reflected,
    wait_for,
    whole_platform_settings,
)
from tests.oracle import compare

pytestmark = pytest.mark.e2e


def test_a_broker_dies_while_the_platform_runs_and_nothing_acknowledged_is_lost(
    spark: SparkSession, tmp_path: Path
) -> None:
    cluster_settings = local_cluster_settings(tmp_path / "cluster")
    cluster = LocalBroker(cluster_settings)
    stop, services = threading.Event(), []
    cluster.start()
    try:
        with admin_client(cluster_settings) as admin:
            ensure_topics(admin, platform_topics(cluster_settings))
            described = admin.describe_topics([cluster_settings.events_topic])[0]
        assert all(len(p["isr_nodes"]) == 3 for p in described["partitions"]), "three in-sync replicas each"
        settings = whole_platform_settings(cluster_settings, tmp_path / "platform")
        leaders = [p["leader_id"] for p in described["partitions"]]
        victim = max(set(leaders), key=leaders.count)  # the node leading the most partitions

        producing = threading.Event()
        report: list[RunReport] = []
        producer = threading.Thread(
            target=lambda: report.append(
                run_simulation(
                    lively_simulators(seed=43, rate=150.0),
                    BatchingProducer(settings, settings.events_topic),
                    stop=producing,
                    realtime=True,
                )
            )
        )
        services = [
            threading.Thread(target=LakeSink(settings).run, args=(stop,)),
            threading.Thread(target=SpeedWorker(settings).run, args=(stop,)),
        ]
        for thread in [producer, *services]:
            thread.start()
        try:
            wait_for(lambda: speed_reflected(settings) > 1500, 90, "the speed layer reflecting 1,500 records")
            assert cluster.node(victim).kill(), f"node {victim} was running"
            at_kill = speed_reflected(settings)
            wait_for(lambda: speed_reflected(settings) > at_kill + 1500, 120, "views advancing with a broker down")
            run_batch(settings, "after-failover", lambda: spark)
        finally:
            producing.set()
            producer.join()
        assert report, "the producer thread finished (a delivery failure would have raised there)"
        sent = report[0].records
        assert len(read_topic(settings, settings.events_topic)) == sent, "each acknowledged record, exactly once"
        wait_for(lambda: compare(settings)[0] == sent, 120, "the merged views reflecting every record")
    finally:
        stop.set()
        for thread in services:
            thread.join()
        cluster.stop()
