"""The docker-compose deployment for real: built offline, brought up, exercised, torn down.

One deployment serves the whole module (it takes minutes to build and start); the tests run in
order on it, as an operator would: known events and exact merged views, a batch DAG run on the
Spark cluster, a broker killed under load, speed workers scaled out, down and up again with
everything kept, the Airflow UI in a browser, and finally `down -v` leaving nothing behind.
Timings and memory go to ``test-artifacts/compose-deployment.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import expect
from prometheus_client.parser import text_string_to_metric_families

from infra.deploy import COMPOSE_FILE, prepare, read_env, write_env
from lambda_contracts.views import VIEWS
from tests.browser import browser_page, log_in_to_airflow
from tests.flows import ARTIFACTS, compose_environment, free_ports, wait_for
from tests.oracle import json_rows, simulated_view_rows

pytestmark = pytest.mark.compose

START = datetime(2026, 11, 20, 10, tzinfo=UTC)
RATE = 300.0
Run = tuple[int, datetime, int, float]


@dataclass
class Deployment:
    """One compose project with its own env file, ports and volumes."""

    project: str
    env_file: Path
    airflow_port: int
    spark_port: int
    dashboard_port: int
    pg_port: int
    runs: list[Run] = field(default_factory=list)
    """Every simulator run produced so far (the oracle recomputes them)."""
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def command(self) -> list[str]:
        return ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", self.project, "--env-file", str(self.env_file)]

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.command, *args],
            env=compose_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result

    def lambdactl(self, *args: str, service: str = "serving") -> str:
        return self.compose("exec", "-T", service, "lambdactl", *args, timeout=180).stdout

    def sql(self, statement: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lambdactl("sql", "--json", statement).splitlines() if line.strip()]

    def simulate(self, seed: int, count: int, *, realtime: bool = False) -> subprocess.Popen[str]:
        """Produce ``count`` known records from a one-off container (``--fast`` unless ``realtime``)."""
        start = START.replace(hour=START.hour + len(self.runs))
        self.runs.append((seed, start, count, RATE))
        pace = [] if realtime else ["--fast"]
        simulate = ["lambdactl", "simulate", "--seed", str(seed), "--start", start.isoformat(), "--count", str(count)]
        return subprocess.Popen(
            [*self.command, "run", "--rm", "--no-deps", "-T", "simulators", *simulate, "--rate", str(RATE), *pace],
            env=compose_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def placement(self) -> list[dict[str, Any]]:
        """Per partition of the events topic: leader, replicas, in-sync replicas, end offset."""
        return [json.loads(line) for line in self.lambdactl("topics", "describe", "--json").splitlines() if line]

    def produced(self) -> int:
        return sum(count for _, _, count, _ in self.runs)

    def reflected(self) -> int:
        rows = self.sql("SELECT sum(reflected_offset) AS records FROM serving_status")
        return int(rows[0]["records"] or 0)

    def assert_views_exact(self, timeout_s: float = 300) -> None:
        """Wait until the merged views reflect every record produced, then compare with the recompute."""
        total = self.produced()
        wait_for(lambda: self.reflected() == total, timeout_s, f"the merged views reflecting all {total} records")
        expected = simulated_view_rows(self.runs)
        for view in VIEWS:
            merged = json_rows(self.lambdactl("sql", "--json", f"SELECT * FROM {view.name}"), view)
            assert merged == expected[view.name], f"{view.name} differs from the independent recompute"

    def airflow(self, path: str, body: dict[str, Any] | None = None) -> Any:
        password = read_env(self.env_file)["LAMBDA_AIRFLOW_PASSWORD"]
        base = f"http://127.0.0.1:{self.airflow_port}"
        token = _http_json(f"{base}/auth/token", {"username": "admin", "password": password})["access_token"]
        return _http_json(f"{base}{path}", body, {"Authorization": f"Bearer {token}"})

    def container(self, service: str, index: int = 1) -> str:
        return f"{self.project}-{service}-{index}"


def _http_json(url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _timed(figures: dict[str, Any], name: str, started: float) -> None:
    figures[name] = round(time.monotonic() - started, 1)


@pytest.fixture(scope="module")
def deployment(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("compose")
    airflow_port, spark_port, dashboard_port, pg_port = free_ports(4)
    env_file = folder / ".env"
    write_env(
        env_file,
        extra={
            "LAMBDA_AIRFLOW_PORT": str(airflow_port),
            "LAMBDA_SPARK_UI_PORT": str(spark_port),
            "LAMBDA_DASHBOARD_PORT": str(dashboard_port),
            "LAMBDA_SERVING_PG_PORT": str(pg_port),
            "LAMBDA_BATCH_INTERVAL_MINUTES": "60",
        },
    )
    project = f"lambda-test-{uuid.uuid4().hex[:6]}"
    deployment = Deployment(project, env_file, airflow_port, spark_port, dashboard_port, pg_port)
    figures = deployment.figures
    started = time.monotonic()
    base = prepare(progress=lambda _: None, env_file=env_file)
    _timed(figures, "prepare_s", started)
    figures["base_image"] = f"{base.name} ({base.how})"
    try:
        started = time.monotonic()
        deployment.compose("build", timeout=2400)
        _timed(figures, "build_s", started)
        started = time.monotonic()
        deployment.compose("build", timeout=600)
        _timed(figures, "build_warm_s", started)
        started = time.monotonic()
        deployment.compose("up", "-d", "--wait", "--wait-timeout", "900", "--scale", "simulators=0", timeout=1200)
        _timed(figures, "up_wait_s", started)
        yield deployment
    finally:
        deployment.compose("down", "-v", "--remove-orphans", timeout=600, check=False)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "compose-deployment.json").write_text(json.dumps(figures, indent=1) + "\n")


def test_known_events_give_exact_merged_views(deployment: Deployment) -> None:
    producer = deployment.simulate(seed=7, count=4000)
    output, _ = producer.communicate(timeout=300)
    assert producer.returncode == 0, output
    assert "done: sent 4,000 records" in output
    deployment.assert_views_exact()
    stats = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}"],
        capture_output=True,
        text=True,
        check=True,
        env=compose_environment(),
    ).stdout
    usage = {line.split()[0]: line.split()[1] for line in stats.splitlines() if line.startswith(deployment.project)}
    deployment.figures["memory"] = usage
    deployment.figures["memory_total_mib"] = round(sum(_mib(value) for value in usage.values()))


def _mib(text: str) -> float:
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 1024 / 1024}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(text)


def test_a_batch_dag_run_computes_on_the_spark_cluster(deployment: Deployment) -> None:
    run = deployment.airflow("/api/v2/dags/batch_views/dagRuns", {"logical_date": None})
    path = f"/api/v2/dags/batch_views/dagRuns/{run['dag_run_id']}"
    started = time.monotonic()
    wait_for(lambda: deployment.airflow(path)["state"] in ("success", "failed"), 900, "the batch_views run ending", 5)
    _timed(deployment.figures, "batch_run_s", started)
    assert deployment.airflow(path)["state"] == "success"
    status = deployment.sql("SELECT min(batch_version) AS v, sum(batch_cutoff) AS covered FROM serving_status")
    assert status[0]["v"] >= 1 and status[0]["covered"] > 0, "a batch version with cutoffs is published"

    with urllib.request.urlopen(f"http://127.0.0.1:{deployment.spark_port}/json/", timeout=10) as response:
        master = json.loads(response.read())
    apps = {a["id"] for a in master["completedapps"] + master["activeapps"] if a["name"] == "exact-lambda-batch"}
    assert apps, "the batch job ran as an application of the Spark master"
    executors = set()
    for index in (1, 2):
        worker = deployment.compose(
            "exec",
            "-T",
            "--index",
            str(index),
            "spark-worker",
            "python",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://localhost:8081/json/').read().decode())",
        ).stdout
        details = json.loads(worker)
        executors |= {e["appid"] for e in details["executors"] + details["finishedexecutors"]}
    assert apps & executors, "executors of the batch application ran in a spark-worker container"
    deployment.assert_views_exact()


def test_a_broker_killed_under_load_loses_nothing(deployment: Deployment) -> None:
    placement = deployment.placement()
    leaders = [p["leader"] for p in placement]
    victim = max(set(leaders), key=leaders.count)
    assert all(len(p["isr"]) == 3 for p in placement), "three in-sync replicas before the kill"
    producer = deployment.simulate(seed=8, count=6000, realtime=True)  # about 20 s at 300 records/s
    assert producer.stdout is not None
    progress = threading.Event()

    def watch() -> None:
        assert producer.stdout is not None
        for line in producer.stdout:
            if line.startswith("sent "):
                progress.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    assert progress.wait(120), "the producer is sending"
    deployment.compose("kill", f"kafka-{victim}")
    producer.wait(timeout=600)
    reader.join(10)
    assert producer.returncode == 0, "every record was acknowledged with a broker down (acks=all, min ISR 2)"
    ends = sum(
        p["end_offset"] for p in map(json.loads, deployment.lambdactl("topics", "describe", "--json").splitlines())
    )
    assert ends == deployment.produced(), "each acknowledged record is in the topic exactly once"
    deployment.assert_views_exact()
    deployment.compose("up", "-d", "--wait", f"kafka-{victim}")
    wait_for(
        lambda: all(
            len(json.loads(line)["isr"]) == 3
            for line in deployment.lambdactl("topics", "describe", "--json").splitlines()
        ),
        300,
        "the restarted broker back in every ISR",
        5,
    )


def test_the_broker_commands_work_inside_compose(deployment: Deployment) -> None:
    rebalanced = deployment.lambdactl("broker", "rebalance")
    assert "before: node 1:" in rebalanced and "node 3:" in rebalanced, rebalanced
    assert "nothing to move" in rebalanced or "partitions moved and in sync" in rebalanced, rebalanced
    refused = deployment.compose("exec", "-T", "serving", "lambdactl", "broker", "drain", "--node", "3", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "would leave 2 brokers for topic" in refused.stderr and "replication factor 3" in refused.stderr


def test_speed_workers_scale_out_and_stay_exact(deployment: Deployment) -> None:
    deployment.compose("up", "-d", "--wait", "--no-recreate", "--scale", "speed=3", "--scale", "simulators=0")

    def spread() -> bool:
        members = json.loads(deployment.lambdactl("status", "--json"))["groups"].get("speed", [])
        return len(members) == 3 and all(members) and sorted(p for m in members for p in m) == list(range(6))

    wait_for(spread, 180, "three speed workers sharing the six partitions", 3)
    producer = deployment.simulate(seed=9, count=3000)
    assert producer.wait(timeout=300) == 0
    deployment.assert_views_exact()


def test_down_and_up_keep_lake_views_topics_and_airflow_history(deployment: Deployment) -> None:
    before = deployment.sql("SELECT min(batch_version) AS v FROM serving_status")[0]["v"]
    runs_before = {r["dag_run_id"] for r in deployment.airflow("/api/v2/dags/batch_views/dagRuns")["dag_runs"]}
    started = time.monotonic()
    deployment.compose("down", timeout=600)
    deployment.compose("up", "-d", "--wait", "--wait-timeout", "900", "--scale", "simulators=0", timeout=1200)
    _timed(deployment.figures, "down_up_s", started)
    ends = sum(
        p["end_offset"] for p in map(json.loads, deployment.lambdactl("topics", "describe", "--json").splitlines())
    )
    assert ends == deployment.produced(), "the topic kept every record"
    assert deployment.sql("SELECT min(batch_version) AS v FROM serving_status")[0]["v"] >= before
    runs_after = {r["dag_run_id"] for r in deployment.airflow("/api/v2/dags/batch_views/dagRuns")["dag_runs"]}
    assert runs_before <= runs_after, "Airflow's history is in Postgres's volume"
    assert "Delta version" in deployment.lambdactl("lake")
    deployment.assert_views_exact()


def test_the_dashboard_behind_compose_charts_the_deployment(deployment: Deployment) -> None:
    url = f"http://127.0.0.1:{deployment.dashboard_port}"
    with browser_page(ARTIFACTS / "compose-dashboard.png") as page:
        page.goto(url)
        expect(page.locator("#updated")).to_contain_text("sampled", timeout=30_000)
        expect(page.locator(".snapshot").first).to_contain_text("reflecting", timeout=30_000)
        expect(page.locator("#components")).to_contain_text("3 broker(s)")
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        families = {f.name for f in text_string_to_metric_families(response.read().decode())}
    assert {"lambda_events_in", "lambda_consumer_lag_records", "lambda_batch_version"} <= families


def test_sql_tools_connect_to_the_postgres_endpoint_behind_compose(deployment: Deployment) -> None:
    password = read_env(deployment.env_file)["LAMBDA_SERVING_PG_PASSWORD"]
    url = f"postgresql://lambda@127.0.0.1:{deployment.pg_port}/lambda?sslmode=disable"
    run = subprocess.run(
        ["psql", url, "-Atc", "SELECT min(batch_version) >= 0, count(*) FROM serving_status"],
        env={"PGPASSWORD": password, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    partitions = len(deployment.sql("SELECT kafka_partition FROM serving_status"))
    assert run.stdout.strip() == f"t|{partitions}"
    with psycopg.connect(url.replace("lambda@", f"lambda:{password}@")) as connection:
        total = connection.execute("SELECT sum(views) FROM page_views_per_minute").fetchone()
        assert total is not None and total[0] > 0, "the merged views are served over the published port"


def test_the_airflow_ui_served_by_the_api_server_shows_the_dags(deployment: Deployment) -> None:
    password = read_env(deployment.env_file)["LAMBDA_AIRFLOW_PASSWORD"]
    with browser_page(ARTIFACTS / "compose-airflow-dags.png") as page:
        log_in_to_airflow(page, f"http://127.0.0.1:{deployment.airflow_port}", password)


def test_down_v_removes_everything(deployment: Deployment) -> None:
    deployment.compose("down", "-v", "--remove-orphans", timeout=600)
    label = f"label=com.docker.compose.project={deployment.project}"
    for kind in (["ps", "-a"], ["volume", "ls"], ["network", "ls"]):
        listed = subprocess.run(
            ["docker", *kind, "--filter", label, "-q"],
            capture_output=True,
            text=True,
            check=True,
            env=compose_environment(),
        ).stdout
        assert listed.strip() == "", f"docker {' '.join(kind)} still lists {listed}"
