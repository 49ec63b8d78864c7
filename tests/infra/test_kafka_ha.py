"""High availability without Docker: a three-node KRaft cluster loses a broker, and gains and loses one
more by scale-out and scale-in, while the platform runs.

Topics have replication factor 3 and min.insync.replicas 2, producers use acks=all: with one
node SIGKILLed mid-stream, producing, the lake sink and the speed layer go on, every
acknowledged record is in the topic exactly once, and the merged views equal the recompute.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from batch_layer.batch_job import run_batch
from batch_layer.lake_sink import LakeSink
from infra.local_broker import LocalBroker
from infra.scaling import drain, drain_refusal, placement, rebalance
from infra.topics import ensure_topics
from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.settings import Settings
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


@dataclass
class RunningPlatform:
    """A three-node cluster with producers, lake sink and speed worker running on it."""

    cluster: LocalBroker
    cluster_settings: Settings
    settings: Settings
    report: list[RunReport] = field(default_factory=list)


@contextmanager
def platform_on_a_cluster(tmp_path: Path, seed: int) -> Iterator[RunningPlatform]:
    """Start the cluster and the platform; on exit stop producing, check every acknowledged record is in
    the topic exactly once, and stop everything."""
    cluster_settings = local_cluster_settings(tmp_path / "cluster")
    cluster = LocalBroker(cluster_settings)
    stop, producing, services = threading.Event(), threading.Event(), []
    cluster.start()
    try:
        with admin_client(cluster_settings) as admin:
            ensure_topics(admin, platform_topics(cluster_settings))
        running = RunningPlatform(cluster, cluster_settings, whole_platform_settings(cluster_settings, tmp_path / "p"))
        settings = running.settings
        producer = threading.Thread(
            target=lambda: running.report.append(
                run_simulation(
                    lively_simulators(seed=seed, rate=150.0),
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
            yield running
        finally:
            producing.set()
            producer.join()
        assert running.report, "the producer thread finished (a delivery failure would have raised there)"
        sent = running.report[0].records
        assert len(read_topic(settings, settings.events_topic)) == sent, "each acknowledged record, exactly once"
        wait_for(lambda: compare(settings)[0] == sent, 120, "the merged views reflecting every record")
    finally:
        stop.set()
        for thread in services:
            thread.join()
        cluster.stop()


def test_a_broker_dies_while_the_platform_runs_and_nothing_acknowledged_is_lost(
    spark: SparkSession, tmp_path: Path
) -> None:
    with platform_on_a_cluster(tmp_path, seed=43) as running:
        settings = running.settings
        with admin_client(settings) as admin:
            described = admin.describe_topics([settings.events_topic])[0]
        assert all(len(p["isr_nodes"]) == 3 for p in described["partitions"]), "three in-sync replicas each"
        leaders = [p["leader_id"] for p in described["partitions"]]
        victim = max(set(leaders), key=leaders.count)  # the node leading the most partitions
        wait_for(lambda: speed_reflected(settings) > 1500, 90, "the speed layer reflecting 1,500 records")
        assert running.cluster.node(victim).kill(), f"node {victim} was running"
        at_kill = speed_reflected(settings)
        wait_for(lambda: speed_reflected(settings) > at_kill + 1500, 120, "views advancing with a broker down")
        run_batch(settings, "after-failover", lambda: spark)


def test_a_broker_added_then_drained_and_removed_while_the_platform_runs(tmp_path: Path) -> None:
    with platform_on_a_cluster(tmp_path, seed=53) as running:
        settings = running.settings
        shown: list[str] = []
        wait_for(lambda: speed_reflected(settings) > 1000, 90, "the speed layer reflecting 1,000 records")
        with admin_client(settings) as admin:
            before = placement(admin, [settings.events_topic, settings.dead_letter_topic])
        assert before.brokers == [1, 2, 3] and set(before.per_broker()) == {1, 2, 3}

        node = running.cluster.add_node()  # scale-out, while producing and consuming
        after = rebalance(settings, show=shown.append)
        assert node.node_id == 4 and after.brokers == [1, 2, 3, 4]
        held = {b: count for b, (count, _) in after.per_broker().items()}
        assert held[4] >= 8 and max(held.values()) - min(held.values()) <= 1, held  # 36 replicas over 4
        assert all(set(after.in_sync[tp]) == set(rs) for tp, rs in after.replicas.items()), "all in sync"
        assert any("partitions moved and in sync" in line for line in shown) and shown[0].startswith("before:")
        compare(settings)  # exact while the cluster changes

        with admin_client(settings) as admin:
            refusal = drain_refusal(placement(admin), 2)
        assert refusal and "voter of the KRaft controller quorum (1, 2, 3)" in refusal
        at_drain = speed_reflected(settings)
        drain(settings, 4, show=shown.append)  # scale-in
        running.cluster.remove_node(4)
        with admin_client(settings) as admin:
            final = placement(admin)
        assert final.brokers == [1, 2, 3] and all(4 not in rs for rs in final.replicas.values())
        refusal = drain_refusal(final, 3)
        assert refusal and "would leave 2 brokers" in refusal and "replication factor 3" in refusal
        wait_for(lambda: speed_reflected(settings) > at_drain + 1000, 90, "views advancing after the removal")
        compare(settings)
