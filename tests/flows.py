"""Every helper the tests share, in one place: ports, settings, traffic, processes, bounded waits.

Test modules import from here (and from ``oracle`` and ``fakes``), never from each other or from
``conftest``.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from batch_layer.lake import Lake
from batch_layer.lake_sink import LakeSink
from infra.ports import PortInUseError, ensure_port_free
from lambda_contracts.events import SOURCES
from lambda_contracts.plumbing.kafka import events_end_offsets, new_consumer
from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import NODE_PORT_STEP, Settings
from lambda_contracts.speed_snapshot import PartitionSnapshot, read_snapshot
from sources.producer import BatchingProducer
from sources.run import build_simulators, run_simulation
from sources.simulators import Simulator

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
EXTERNAL_BROKER_ENV = "LAMBDA_TEST_BOOTSTRAP_SERVERS"

# -- ports and settings -------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now (the kernel picks them)."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for probe in sockets:
            probe.close()


def all_free(ports: list[int]) -> bool:
    """Whether nothing listens on any of ``ports`` right now."""
    try:
        for port in ports:
            ensure_port_free("127.0.0.1", port, "test")
    except PortInUseError:
        return False
    return True


def free_port_run(length: int) -> int:
    """The first of ``length`` consecutive free ports (Airflow takes its port and the next two)."""
    for _ in range(100):
        first = free_ports(1)[0]
        if first + length <= 65535 and all_free(list(range(first, first + length))):
            return first
    raise RuntimeError(f"no {length} consecutive free ports found")


def local_broker_settings(data_dir: Path, **overrides: object) -> Settings:
    port, controller_port = free_ports(2)
    values: dict[str, object] = {"broker_port": port, "broker_controller_port": controller_port, "broker_heap_mb": 384}
    return Settings(data_dir=data_dir, **{**values, **overrides})  # type: ignore[arg-type]


def local_cluster_settings(data_dir: Path, **overrides: object) -> Settings:
    """A three-node local cluster on free ports (node n on the ports + 100 * (n - 1))."""
    for _ in range(100):
        port, controller_port = free_ports(2)
        wanted = [p + NODE_PORT_STEP * n for n in range(3) for p in (port, controller_port)]
        if max(wanted) > 65535 or not all_free(wanted):
            continue
        return local_broker_settings(
            data_dir,
            broker_port=port,
            broker_controller_port=controller_port,
            broker_nodes=3,
            topic_replication_factor=3,
            topic_min_insync_replicas=2,
            **overrides,
        )
    raise RuntimeError("no free ports for a three-node cluster")


def whole_platform_settings(kafka: Settings, data_dir: Path) -> Settings:
    """Settings for a test that runs sink, speed worker and batch together, with quick cadences."""
    return kafka.model_copy(
        update={
            "data_dir": data_dir,
            "lake_flush_seconds": 0.3,
            "lake_sink_group": f"sink-{kafka.events_topic}",
            "speed_group": f"speed-{kafka.events_topic}",
            "speed_segment_seconds": 1.0,
            "speed_publish_ms": 200,
            "speed_prune_grace_seconds": 4.0,
        }
    )


# -- traffic ------------------------------------------------------------------------------------


def lively_simulators(
    seed: int,
    *,
    start: datetime | None = None,
    rate: float = 300.0,
    duplicate_share: float = 0.03,
    malformed_share: float = 0.02,
    cross_partition_share: float = 0.0,
) -> list[Simulator]:
    """Web, app and sensors with late (up to 2 h), duplicate and malformed records."""
    return build_simulators(
        SOURCES,
        rate=rate,
        serde=JsonSerde(),
        start=start or datetime.now(UTC),
        seed=seed,
        late_share=0.2,
        max_lateness=timedelta(hours=2),
        duplicate_share=duplicate_share,
        cross_partition_share=cross_partition_share,
        malformed_share=malformed_share,
    )


@contextmanager
def producing(settings: Settings, simulators: list[Simulator]) -> Iterator[None]:
    """Produce in real time while the block runs; every record sent is acknowledged on exit."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_simulation,
        args=(simulators, BatchingProducer(settings, settings.events_topic)),
        kwargs={"stop": stop, "realtime": True},
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def produce(settings: Settings, seed: int, start: datetime, count: int) -> None:
    """``count`` records as fast as the producer goes: late, duplicate and malformed ones included."""
    simulators = build_simulators(
        SOURCES,
        rate=200.0,
        serde=JsonSerde(),
        start=start,
        seed=seed,
        late_share=0.3,
        max_lateness=timedelta(hours=2),
        duplicate_share=0.04,
        malformed_share=0.02,
    )
    run_simulation(simulators, BatchingProducer(settings, settings.events_topic), count=count, realtime=False)


# -- reading Kafka and the lake -----------------------------------------------------------------


def read_topic(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record now in ``topic``, per partition in offset order."""
    consumer = new_consumer(settings, group_id=None)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {ends} in {timeout_s}s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close(autocommit=False)


end_offsets = events_end_offsets
"""Partition -> end offset of the events topic (every partition the settings declare)."""


def wait_until_lake_complete(settings: Settings, timeout_s: float = 90) -> None:
    """Poll the lake's committed offsets (the real signal) until they reach the topic's end."""
    lake, ends = Lake(settings.lake_path, settings.events_topic), end_offsets(settings)
    wait_for(lambda: lake.committed_offsets(ends) == ends, timeout_s, f"the lake reaching offsets {ends}")


def sink_everything(settings: Settings, timeout_s: float = 60) -> None:
    """Run the lake sink in this process until the lake holds every record of the topic."""
    stop = threading.Event()
    sink = threading.Thread(target=LakeSink(settings).run, args=(stop,))
    sink.start()
    try:
        wait_until_lake_complete(settings, timeout_s)
    finally:
        stop.set()
        sink.join()


def speed_snapshots(settings: Settings) -> list[PartitionSnapshot | None]:
    """Every partition's current speed snapshot (None: not published yet)."""
    return [read_snapshot(settings.speed_views_path, p) for p in range(settings.topic_partitions)]


def speed_reflected(settings: Settings) -> int:
    """Records the speed layer's published snapshots reflect, over all partitions."""
    return sum(s.next_offset for s in speed_snapshots(settings) if s)


def wait_until_speed_reconciled(settings: Settings, version: int, timeout_s: float = 60) -> None:
    """Poll the speed snapshots until every partition's reconciled batch ``version`` (or a later one)."""
    wait_for(
        lambda: all(s and s.reconciled >= version for s in speed_snapshots(settings)),
        timeout_s,
        f"the speed layer reconciling batch version {version}",
    )


# -- processes and waiting ----------------------------------------------------------------------


@contextmanager
def reaped(processes: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Kill every process added to the list when the block ends, even if the test failed."""
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2) -> None:
    """Poll a real signal until it holds, within a bounded time; ``what`` names it in the failure."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f}s")
        time.sleep(every_s)


def wait_for_line(log: Path, text: str, count: int = 1, timeout_s: float = 60) -> None:
    """Poll a service's own log for a line it writes when it reaches a state (a real signal)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(text) >= count:
            return
        time.sleep(0.05)
    tail = log.read_text()[-2000:] if log.exists() else "(no log)"
    raise TimeoutError(f"{log.name} never said {text!r} {count} times:\n{tail}")


def start_lambdactl(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A ``lambdactl`` subcommand as its own process, output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "lambdactl", *args], env=env, stdout=out, stderr=out)


def crash_and_rebalance(
    env: dict[str, str],
    folder: Path,
    *,
    command: str,
    ready: str,
    rounds: list[int],
    seed: int,
    children: list[subprocess.Popen[bytes]],
    uptime_s: tuple[float, float] = (0.2, 1.5),
) -> list[Path]:
    """Start ``rounds[i]`` members of a consumer group per round and SIGKILL each at a random instant.

    Each member runs ``lambdactl <command>`` and says ``ready`` in its log when it owns partitions;
    in a round of several, every survivor takes over the partitions of the member killed before it
    (it says ``ready`` a second time) before it is killed in turn. Returns the killed members' logs.
    """
    rng = random.Random(seed)
    killed: list[Path] = []
    for round_number, members in enumerate(rounds):
        logs = [folder / f"{command}-{round_number}-{i}.log" for i in range(members)]
        processes = [start_lambdactl(env, log, command) for log in logs]
        children.extend(processes)
        for log in logs:
            wait_for_line(log, ready)
        for index, (process, log) in enumerate(zip(processes, logs, strict=True)):
            if index:  # the survivor of a rebalance takes over the dead member's partitions
                wait_for_line(log, ready, count=2)
            time.sleep(rng.uniform(*uptime_s))  # a random instant to crash at, not a wait for readiness
            process.kill()
            process.wait()
            killed.append(log)
    return killed


# -- docker -------------------------------------------------------------------------------------

PINNED_COMPOSE = REPO / ".tools" / "docker"
"""Where ``./dev`` keeps the pinned Docker Compose plugin (``cli-plugins/docker-compose``)."""


def compose_environment(**extra: str) -> dict[str, str]:
    """The environment for ``docker`` commands: the pinned Compose, and no LAMBDA_* or secret leaking in.

    Compose lets shell variables override the env file; a developer's own settings must not.
    """
    leaking = ("LAMBDA_", "KAFKA_CLUSTER_ID", "AIRFLOW_", "POSTGRES_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaking)}
    if (PINNED_COMPOSE / "cli-plugins" / "docker-compose").exists():
        env["DOCKER_CONFIG"] = str(PINNED_COMPOSE)
    return env | extra


def wait_until_published(settings: Settings, timeout_s: float = 90) -> None:
    """Poll the published snapshots (the real signal) until they reach the end of every partition."""
    ends = end_offsets(settings)

    def published_to_the_end() -> bool:
        snapshots = {p: read_snapshot(settings.speed_views_path, p) for p in ends}
        return all(s is not None and s.next_offset == ends[p] for p, s in snapshots.items())

    wait_for(published_to_the_end, timeout_s, "the speed layer publishing up to the end of the topic")
