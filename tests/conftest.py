"""Session fixtures: real services are started once per session, and isolated per test.

Set ``LAMBDA_TEST_BOOTSTRAP_SERVERS=host:port`` to run the integration tests against a broker you
already have; otherwise the session starts the project's own local broker on free ports.
"""

from __future__ import annotations

import os
import shutil
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
from infra.topics import ensure_topics
from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.settings import Settings
from lambda_contracts.topics import platform_topics
from tests.flows import EXTERNAL_BROKER_ENV, REPO, compose_environment, local_broker_settings, wait_for

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


def docker_answers() -> bool:
    result = subprocess.run(["docker", "info"], capture_output=True, env=compose_environment(), check=False)
    return result.returncode == 0


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A running Docker engine: the one already running, or ``dockerd`` started here (and stopped after).

    Never skipped: without an engine the compose tests fail and say what is missing.
    """
    if docker_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        pytest.fail(
            "no Docker engine answers and none can be started here: install Debian's docker.io "
            "(`./dev test` does, as root) or start your engine, then run the compose tests again"
        )
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log.open("wb") as out:
        engine = subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(docker_answers, 90, f"dockerd answering (its log: {log})", every_s=0.5)
        yield
    finally:
        engine.terminate()
        try:
            engine.wait(timeout=60)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
