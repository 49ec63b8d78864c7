"""The docker-compose file, checked by Docker Compose itself (`docker compose config`, no engine needed).

Compose parses, interpolates and validates the file against its schema; the tests then hold the
resolved project to the deployment's rules: every image built here from one pinned Debian base
and named as a local build, a healthcheck or a stated reason for each service, readiness
conditions, no secret literals, replicated Kafka, more than one speed worker and Spark worker.
The live deployment is brought up by ``test_compose_deployment.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.deploy import COMPOSE_FILE, LOCAL_BASE, OFFICIAL_BASE, fresh_secrets
from tests.flows import REPO, compose_environment

pytestmark = pytest.mark.unit

DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
REQUIRED = list(fresh_secrets())
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$")
PINNED = re.compile(r"^[a-z0-9./-]+:(?!latest)[0-9A-Za-z][A-Za-z0-9._-]*$")


def config(tmp_path: Path, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--format", "json"],
        env=compose_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = config(tmp_path_factory.mktemp("compose"), {name: f"test-{name.lower()}" for name in REQUIRED})
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.mark.parametrize("missing", REQUIRED)
def test_a_missing_secret_fails_fast_and_says_which(tmp_path: Path, missing: str) -> None:
    result = config(tmp_path, {name: "x" for name in REQUIRED if name != missing})
    assert result.returncode != 0
    assert f"required variable {missing} is missing" in result.stderr, result.stderr


def test_the_platform_is_all_there(project: dict[str, Any]) -> None:
    services = project["services"]
    assert {"kafka-1", "kafka-2", "kafka-3", "spark-master", "spark-worker", "postgres"} <= set(services)
    assert {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"} <= set(services)
    assert {"simulators", "lake-sink", "speed", "serving", "dashboard", "topics", "airflow-init"} <= set(services)
    assert services["speed"]["deploy"]["replicas"] > 1
    assert services["spark-worker"]["deploy"]["replicas"] > 1
    for name in ("lake-sink", "speed", "serving", "spark-worker", "airflow-scheduler"):
        assert any(v["target"] == "/data" and v["source"] == "lake" for v in services[name]["volumes"]), name


def test_every_image_is_built_here_from_one_pinned_base(project: dict[str, Any]) -> None:
    services = project["services"]
    built = {s["image"]: s["build"] for s in services.values() if "build" in s}
    assert set(built) == {"exact-lambda-platform:0.1.0", "exact-lambda-postgres:0.1.0"}, "one build per image"
    for image, build in built.items():
        assert build["args"]["BASE_IMAGE"] == OFFICIAL_BASE
        assert build["target"] == image.split("-")[2].split(":")[0], image
    for name, service in services.items():
        assert re.fullmatch(r"exact-lambda-(platform|postgres):\d+\.\d+\.\d+", service["image"]), (
            f"{name}: {service['image']} must name a local build of this project, never an official image"
        )
        assert service["image"] in built, f"{name} would need a registry"
        if "build" not in service:
            assert service.get("pull_policy") == "never", f"{name}: built by another service, never pulled"
    assert PINNED.match(OFFICIAL_BASE) and "bookworm-" in OFFICIAL_BASE, "a dated, pinned Debian tag"
    assert not LOCAL_BASE.startswith("debian:"), "the debootstrap build does not pose as the official image"


def test_the_dockerfile_uses_only_the_base_image_and_the_host_built_inputs() -> None:
    text = DOCKERFILE.read_text()
    assert not text.startswith("# syntax="), "a syntax directive makes BuildKit pull its frontend from Docker Hub"
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert default and default.group(1) == OFFICIAL_BASE
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, re.MULTILINE)
    named = {name for _, name in stages}
    for image, _ in stages:
        assert image == "${BASE_IMAGE}" or image in named, f"FROM {image}: only the pinned base or an earlier stage"
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", text, re.MULTILINE):
        assert source == "build/wheels" or (REPO / source).exists(), f"COPY {source}: no such path in the repository"
    for stage in re.findall(r"^COPY --from=(\S+)", text, re.MULTILINE):
        assert stage in named, f"COPY --from={stage}: no such stage"
    assert "--no-index" in text, "Python packages come from the host's wheels of uv.lock, not from the network"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git", "infra/compose/.env"} <= set(ignored), "local state stays out of the context"
    assert "infra/spark/jars" not in ignored and "infra/kafka/libs" not in ignored, "the pinned jars go in"


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
    brokers = {name: s for name, s in project["services"].items() if name.startswith("kafka-")}
    voters = {f"{s['command'][s['command'].index('--node-id') + 1]}@{name}:9093" for name, s in brokers.items()}
    for name, service in brokers.items():
        command = service["command"]
        assert command[:3] == ["lambdactl", "broker", "run-node"]
        assert set(command[command.index("--voters") + 1].split(",")) == voters
        assert command[command.index("--host") + 1] == name
        assert service["environment"]["LAMBDA_TOPIC_REPLICATION_FACTOR"] == "3"
        assert service["environment"]["LAMBDA_TOPIC_MIN_INSYNC_REPLICAS"] == "2"
    platform = project["services"]["lake-sink"]["environment"]
    assert platform["LAMBDA_TOPIC_REPLICATION_FACTOR"] == "3" and platform["LAMBDA_TOPIC_MIN_INSYNC_REPLICAS"] == "2"
    assert platform["LAMBDA_PRODUCER_ACKS"] == "all"
    assert platform["LAMBDA_SPARK_MASTER"] == "spark://spark-master:7077"


def test_published_ports_listen_on_loopback_unless_asked(project: dict[str, Any]) -> None:
    published = [p for s in project["services"].values() for p in s.get("ports", [])]
    assert published and all(p["host_ip"] == "127.0.0.1" for p in published)
