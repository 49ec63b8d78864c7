"""The docker-compose deployment, checked without a Docker engine.

compose-go (the loader inside Docker Compose) parses, interpolates and validates the file
against the Compose schema; the tests then hold the resolved project to the deployment's rules:
pinned images, a healthcheck or a stated reason for each service, readiness conditions, no
secret literals, replicated Kafka, more than one speed worker and Spark worker.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra" / "compose" / "compose.yaml"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
CHECKER = REPO / "infra" / "compose" / "check"
REQUIRED = [
    "KAFKA_CLUSTER_ID",
    "LAMBDA_AIRFLOW_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "POSTGRES_PASSWORD",
]
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$")
PINNED_IMAGE = re.compile(r"^[a-z0-9./-]+:(?!latest)[0-9][A-Za-z0-9._-]*$")


@pytest.fixture(scope="module")
def compose_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    assert go, "Go is needed to build the Compose checker (compose-go); it comes with this machine kind"
    binary = tmp_path_factory.mktemp("compose-check") / "check"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=CHECKER, check=True, timeout=600)
    return binary


def load(checker: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run([checker, COMPOSE], env=environment, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def project(compose_check: Path) -> dict[str, Any]:
    result = load(compose_check, {name: f"test-{name.lower()}" for name in REQUIRED})
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_required_variables_fail_fast_and_say_which(compose_check: Path) -> None:
    result = load(compose_check, {})
    assert result.returncode == 1
    for name in REQUIRED:
        assert f"required variable {name} is missing" in result.stderr, name


def test_the_platform_is_all_there(project: dict[str, Any]) -> None:
    services = project["services"]
    assert {"kafka-1", "kafka-2", "kafka-3", "spark-master", "spark-worker", "postgres"} <= set(services)
    assert {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"} <= set(services)
    assert {"simulators", "lake-sink", "speed", "serving", "topics"} <= set(services)
    assert services["speed"]["deploy"]["replicas"] > 1
    assert services["spark-worker"]["deploy"]["replicas"] > 1
    for name in ("lake-sink", "speed", "serving", "spark-worker", "airflow-scheduler"):
        assert any(v["target"] == "/data" and v["source"] == "lake" for v in services[name]["volumes"]), name


def test_every_image_is_pinned(project: dict[str, Any]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name, service in project["services"].items():
        image = service["image"]
        assert PINNED_IMAGE.match(image), f"{name}: {image} is not pinned to a version"
        if "build" in service:
            assert image == f"exact-lambda:{version}", f"{name}: the project image carries the project version"


def test_every_service_has_a_healthcheck_or_a_reason(project: dict[str, Any], raw: dict[str, Any]) -> None:
    for name, service in project["services"].items():
        check = service.get("healthcheck")
        if check and not check.get("disable"):
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
            continue
        reason = raw["services"][name].get("x-healthcheck-reason", "")
        assert len(reason) > 20, f"{name} has neither a healthcheck nor x-healthcheck-reason"


def test_dependencies_wait_for_health_or_completion(project: dict[str, Any]) -> None:
    for name, service in project["services"].items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert rule["condition"] in ("service_healthy", "service_completed_successfully"), (name, dependency)
            target = project["services"][dependency]
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}'s health, which has no check"
            else:
                assert target.get("restart", "no") == "no", f"{dependency} is awaited to complete: it must not restart"


def test_no_secret_is_written_in_the_file(raw: dict[str, Any]) -> None:
    def environments(node: Any) -> list[dict[str, Any]]:
        found = []
        if isinstance(node, dict):
            if isinstance(node.get("environment"), dict):
                found.append(node["environment"])
            for value in node.values():
                found.extend(environments(value))
        return found

    seen = 0
    for environment in environments(raw):
        for name, value in environment.items():
            if name.endswith("_FILE"):
                continue  # a path to a secret, not one
            if SECRET_NAME.search(name) or "PASSWORD" in str(value).upper():
                seen += 1
                assert re.search(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name} must come from a required variable"
    assert seen >= 5, "the secrets are where the test looks"


def test_kafka_is_replicated_three_ways(project: dict[str, Any]) -> None:
    brokers = {name: s["environment"] for name, s in project["services"].items() if name.startswith("kafka-")}
    voters = {f"{e['KAFKA_NODE_ID']}@{name}:9093" for name, e in brokers.items()}
    for environment in brokers.values():
        assert set(environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert environment["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert environment["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    platform = project["services"]["lake-sink"]["environment"]
    assert platform["LAMBDA_TOPIC_REPLICATION_FACTOR"] == "3" and platform["LAMBDA_TOPIC_MIN_INSYNC_REPLICAS"] == "2"
    assert platform["LAMBDA_PRODUCER_ACKS"] == "all"


def test_the_dockerfile_builds_from_pinned_bases_and_the_lock() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(stages) >= 2
    for image, _ in stages:
        assert PINNED_IMAGE.match(image), f"base image {image} is not pinned"
    assert "uv sync --frozen" in text and re.search(r"uv==\d+\.\d+\.\d+", text)
    python = next(image for image, _ in stages if image.startswith("python:"))
    assert python.startswith("python:3.11."), "the image's Python is the one pyproject.toml requires"
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", text, re.MULTILINE):
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
    named = {name for _, name in stages if name}
    for stage in re.findall(r"^COPY --from=(\S+)", text, re.MULTILINE):
        assert stage in named, f"COPY --from={stage}: no such stage"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "data", "infra/spark/jars"} <= set(ignored), "local state stays out of the build context"
