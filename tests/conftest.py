"""Session fixtures: real services are started once per session, and isolated per test.

Set ``LAMBDA_TEST_BOOTSTRAP_SERVERS=host:port`` to run the integration tests against a broker you
already have; otherwise the session starts the project's own local broker on free ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from infra.jars import install_all
from infra.local_broker import LocalBroker
from infra.ports import PortInUseError, ensure_port_free
from infra.topics import ensure_topics
from lambda_contracts.kafka_clients import admin_client
from lambda_contracts.settings import NODE_PORT_STEP, Settings
from lambda_contracts.topics import platform_topics

EXTERNAL_BROKER_ENV = "LAMBDA_TEST_BOOTSTRAP_SERVERS"
REPO = Path(__file__).resolve().parent.parent

# Airflow reads its configuration when first imported: point it at a throwaway home first.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-tests-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(AIRFLOW_HOME / "logs"),
    }
)


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment() -> Iterator[None]:
    """Keep a developer's own LAMBDA_* settings out of the tests."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("LAMBDA_") and k != EXTERNAL_BROKER_ENV}
    for key in saved:
        del os.environ[key]
    yield
    os.environ.update(saved)


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


def local_broker_settings(data_dir: Path, **overrides: object) -> Settings:
    port, controller_port = free_ports(2)
    values: dict[str, object] = {"broker_port": port, "broker_controller_port": controller_port, "broker_heap_mb": 384}
    return Settings(data_dir=data_dir, **{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def broker_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a running broker for the whole session."""
    external = os.environ.get(EXTERNAL_BROKER_ENV)
    if external:
        yield Settings(data_dir=tmp_path_factory.mktemp("data"), kafka_bootstrap_servers=external)
        return
    install_all(progress=lambda _: None)
    settings = local_broker_settings(tmp_path_factory.mktemp("session-broker"))
    broker = LocalBroker(settings)
    broker.start()
    try:
        yield settings
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """An initialised Airflow metadata database (SQLite) in the session's throwaway home."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    yield AIRFLOW_HOME
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """One local Spark session for the whole test session (its JVM takes seconds to start)."""
    from batch_layer.spark import spark_session

    install_all(progress=lambda _: None)
    settings = Settings(data_dir=tmp_path_factory.mktemp("spark"), spark_master="local[2]", spark_shuffle_partitions=2)
    session = spark_session(settings, app_name="tests")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def kafka(broker_settings: Settings) -> Settings:
    """Settings with this test's own events and dead-letter topics, already created."""
    suffix = uuid.uuid4().hex[:10]
    settings = broker_settings.model_copy(
        update={"events_topic": f"events-{suffix}", "dead_letter_topic": f"events-{suffix}.dlq"}
    )
    with admin_client(settings) as admin:
        ensure_topics(admin, platform_topics(settings))
    return settings


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


def local_cluster_settings(data_dir: Path, **overrides: object) -> Settings:
    """A three-node local cluster on free ports (node n on the ports + 100 * (n - 1))."""
    for _ in range(100):
        port, controller_port = free_ports(2)
        step = NODE_PORT_STEP
        wanted = [p + step * n for n in range(3) for p in (port, controller_port)]
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
