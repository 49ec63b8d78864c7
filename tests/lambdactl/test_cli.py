"""The command line as a user runs it: real processes, real broker, readable output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lambda_contracts.settings import Settings
from lambdactl.airflow_api import airflow_api, airflow_url
from lambdactl.airflow_local import saved_admin_password
from lambdactl.services import run_processes
from tests.browser import trigger_recompute
from tests.flows import (
    EXTERNAL_BROKER_ENV,
    free_port_run,
    free_ports,
    reaped,
    start_lambdactl,
    wait_for,
    wait_for_line,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(os.environ.get(EXTERNAL_BROKER_ENV)), reason="runs its own local broker"),
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    port, controller_port, dashboard_port, pg_port, metrics_port = free_ports(5)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("LAMBDA_")},
        "LAMBDA_DATA_DIR": str(tmp_path),
        "LAMBDA_BROKER_PORT": str(port),
        "LAMBDA_BROKER_CONTROLLER_PORT": str(controller_port),
        "LAMBDA_DASHBOARD_PORT": str(dashboard_port),
        "LAMBDA_SERVING_PG_PORT": str(pg_port),
        "LAMBDA_SERVING_METRICS_PORT": str(metrics_port),
        "LAMBDA_BROKER_HEAP_MB": "384",
        "LAMBDA_KAFKA_CONNECT_TIMEOUT_S": "3",
    }


def lambdactl(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lambdactl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def processes_of(data_dir: str) -> list[str]:
    """Processes started for this data dir: the broker (by its config path), Airflow (by its home) and
    anything with this data dir in its environment (the demo's services, the Spark of a batch task)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                environ = (proc / "environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            marks = (f"AIRFLOW_HOME={data_dir}", f"LAMBDA_DATA_DIR={data_dir}")
            if data_dir in cmdline or any(f"\0{mark}\0" in f"\0{environ}" for mark in marks):
                found.append(f"{proc.name}: {cmdline[:80]}")
    return found


def test_broker_lifecycle_from_the_command_line(env: dict[str, str]) -> None:
    try:
        first = lambdactl(env, "broker", "start")
        assert first.returncode == 0, first.stderr
        assert "started: broker up at" in first.stdout
        second = lambdactl(env, "broker", "start")
        assert second.returncode == 0, second.stderr
        assert "already running: broker up at" in second.stdout
        assert lambdactl(env, "broker", "status").returncode == 0
        created = lambdactl(env, "topics", "create")
        assert "created events (6 partitions)" in created.stdout
        assert "exists  events (6 partitions)" in lambdactl(env, "topics", "create").stdout
        sent = lambdactl(env, "simulate", "--count", "500", "--fast", "--malformed-share", "0.1")
        assert sent.returncode == 0, sent.stderr
        assert "done: sent 500 records" in sent.stdout
    finally:
        stopped = lambdactl(env, "broker", "stop")
    assert stopped.stdout.strip() == "broker stopped"
    status = lambdactl(env, "broker", "status")
    assert status.returncode == 1 and "broker down" in status.stdout
    assert not processes_of(env["LAMBDA_DATA_DIR"])


def test_without_a_broker_the_error_says_what_to_do(env: dict[str, str]) -> None:
    result = lambdactl(env, "simulate", "--count", "5")
    assert result.returncode == 1
    assert "Is the broker running?" in result.stderr
    assert "lambdactl broker start" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_shows_events_arriving_and_cleans_up(env: dict[str, str]) -> None:
    result = lambdactl(env, "demo", "--duration", "8", "--rate", "200", "--no-airflow")
    assert result.returncode == 0, result.stdout + result.stderr
    rate_lines = [line for line in result.stdout.splitlines() if " ev/s | valid " in line]
    assert len(rate_lines) >= 4, result.stdout
    assert any("rejected" in line for line in rate_lines)
    assert "broker stopped" in result.stdout
    assert not processes_of(env["LAMBDA_DATA_DIR"]), "the demo leaves nothing behind"
    again = lambdactl(env, "demo", "--duration", "3", "--rate", "50", "--no-airflow")
    assert again.returncode == 0, "a second run resumes on the same data"
    assert "topic events: 6 partitions\n" in again.stdout


def test_demo_runs_airflow_and_the_batch_dag_publishes_on_its_own(env: dict[str, str]) -> None:
    """The whole platform: batch DAG on its own, merged SQL, `status`, and the Airflow UI in Chromium."""
    env = {**env, "LAMBDA_AIRFLOW_PORT": str(free_port_run(3))}
    current = Path(env["LAMBDA_DATA_DIR"]) / "views" / "batch" / "CURRENT"
    # The first scheduled run starts as soon as Airflow is up; a 5-minute cadence keeps the second one
    # from queueing the browser's recompute behind it on two cores (it cost minutes at 1 minute).
    demo = subprocess.Popen(
        [sys.executable, "-m", "lambdactl", "demo", "--rate", "100", "--batch-every-minutes", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600  # Airflow start, a scheduled run and Spark on two busy cores
        while not current.exists():  # the scheduled DAG's publish is the signal
            if demo.poll() is not None:
                assert demo.stdout is not None
                raise AssertionError(f"the demo ended early (exit {demo.returncode}):\n{demo.stdout.read()[-4000:]}")
            assert time.monotonic() < deadline, "no batch view version was published"
            time.sleep(1)
        status = lambdactl(env, "sql", "SELECT min(batch_version) AS v, bool_and(speed_used) AS s FROM serving_status")
        assert status.returncode == 0, status.stderr
        answer = lambdactl(env, "sql", "SELECT sum(views) AS views FROM page_views_per_minute")
        assert answer.returncode == 0 and "views" in answer.stdout, answer.stderr
        refused = lambdactl(env, "sql", "CREATE TABLE t AS SELECT 1")
        assert refused.returncode == 1 and "only SELECT" in refused.stderr
        shown = status_with_every_component_up(env)
        assert re.search(r"^ {2}up  batch_views DAG +last run \S+: (running|success|queued)$", shown, re.M)
        assert re.search(r"^events in: [\d,]+/s; dead letters kept: [\d,]+$", shown, re.MULTILINE)
        assert re.search(r"^lag lake-sink: [\d,]+ records \(partition:lag 0:\d+", shown, re.MULTILINE)
        assert re.search(r"^lag speed: [\d,]+ records", shown, re.MULTILINE)
        recompute_from_the_browser(env)
    finally:
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=180)
    assert demo.returncode == 0, output[-3000:]
    assert "Airflow UI: http://127.0.0.1:" in output and "login: admin / " in output
    assert "run the demo with LAMBDA_SERVING_PG_PASSWORD=<password> set" in output
    assert int(current.read_text()) >= 1
    assert "stopped airflow (exit" in output
    assert not processes_of(env["LAMBDA_DATA_DIR"]), "Ctrl-C leaves no broker, Airflow or service behind"


COMPONENTS = ("kafka", "group speed", "group lake-sink", "lake", "speed", "batch", "serving", "airflow")


def status_with_every_component_up(env: dict[str, str], timeout_s: float = 60) -> str:
    """`lambdactl status` once it shows every component up; what the platform logged if it never does.

    A consumer group passes through states without members (a rebalance, a member that rejoins), so
    one `status` may catch one: the status is polled, bounded, like any readiness signal.
    """
    shown: list[str] = []

    def every_component_up() -> bool:
        result = lambdactl(env, "status")
        assert result.returncode == 0, result.stderr
        shown.append(result.stdout)
        return not components_down(result.stdout)

    try:
        wait_for(every_component_up, timeout_s, "every component up in `lambdactl status`", every_s=1)
    except TimeoutError as error:
        down = components_down(shown[-1])
        raise AssertionError(f"{error}; {down} stayed down:\n{shown[-1]}\n{platform_logs(env)}") from None
    return shown[-1]


def components_down(status: str) -> list[str]:
    return [c for c in COMPONENTS if not re.search(rf"^  up  {c} ", status, re.MULTILINE)]


def platform_logs(env: dict[str, str], lines: int = 40) -> str:
    """The ends of the services' logs and the broker's consumer-group decisions, for a failure message."""
    data = Path(env["LAMBDA_DATA_DIR"])
    parts = []
    for log in (data / "logs" / "lake-sink.log", data / "logs" / "speed.log", data / "logs" / "kafka-client.log"):
        if log.exists():
            parts.append(f"--- {log.name}:\n" + "\n".join(log.read_text().splitlines()[-lines:]))
    server = data / "kafka" / "logs" / "server.log"
    if server.exists():
        groups = [line for line in server.read_text().splitlines() if "GroupCoordinator" in line]
        parts.append("--- broker group coordinator:\n" + "\n".join(groups[-lines:]))
    return "\n".join(parts)


def recompute_from_the_browser(env: dict[str, str]) -> None:
    """Headless Chromium logs in, reads the DAG docs and triggers batch_recompute with a day range."""
    settings = Settings(
        data_dir=Path(env["LAMBDA_DATA_DIR"]),
        airflow_port=int(env["LAMBDA_AIRFLOW_PORT"]),
        broker_port=int(env["LAMBDA_BROKER_PORT"]),
        broker_controller_port=int(env["LAMBDA_BROKER_CONTROLLER_PORT"]),
    )
    day = datetime.now(UTC).date().isoformat()
    password = saved_admin_password(settings)
    assert password is not None, "the demo generated the admin password"
    screenshot = ARTIFACTS / "airflow-batch-recompute-triggered.png"
    run_id = trigger_recompute(airflow_url(settings), password, day, screenshot)
    assert screenshot.stat().st_size > 10_000, "the screenshot is kept as a test artifact"
    path = f"/api/v2/dags/batch_recompute/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    assert airflow_api(settings, path)["conf"] == {"first_day": day, "last_day": day}, "the form's params reached it"
    deadline = time.monotonic() + 300
    while (state := airflow_api(settings, path)["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"the triggered recompute is still {state}"
        time.sleep(2)  # polling the run's real state, bounded by the deadline
    assert state == "success", "the recompute run triggered from the UI succeeded"


def test_demo_started_in_the_background_cleans_up_on_sigterm(env: dict[str, str]) -> None:
    """A shell's background job ignores SIGINT; `kill` (SIGTERM) must still stop everything."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "lambdactl", "demo", "--rate", "50", "--no-airflow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509 - what `cmd &` does
    )
    assert demo.stdout is not None
    for line in demo.stdout:  # the monitor's first line means every service is up
        if " ev/s | valid " in line:
            break
    demo.send_signal(signal.SIGTERM)
    output, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, output[-3000:]
    assert "stopping ..." in output and "stopped lake-sink (exit" in output and "broker stopped" in output
    assert not processes_of(env["LAMBDA_DATA_DIR"]), "SIGTERM leaves no broker or service behind"


def test_a_wrong_setting_is_named_without_a_traceback(env: dict[str, str]) -> None:
    result = lambdactl({**env, "LAMBDA_BROKER_NODES": "2"}, "broker", "status")
    assert result.returncode == 2
    assert "error: LAMBDA_BROKER_NODES must be 1 or 3" in result.stderr and "Traceback" not in result.stderr
    typo = lambdactl({**env, "LAMBDA_SPEED_PUBLISH_MS": "soon"}, "status")
    assert typo.returncode == 2 and "error: LAMBDA_SPEED_PUBLISH_MS: Input should be a valid integer" in typo.stderr


def test_schemas_check_passes_the_shipped_catalog_and_an_unknown_format_is_named(env: dict[str, str]) -> None:
    check = lambdactl(env, "schemas", "check")
    assert check.returncode == 0, check.stderr
    assert "events-value v2: id 2" in check.stdout and "compatible: every version reads every other" in check.stdout
    wrong = lambdactl(env, "simulate", "--serde", "protobuf", "--count", "1")
    assert wrong.returncode == 2 and "unknown serde 'protobuf'; known: avro-v1, avro-v2, json" in wrong.stderr


def test_a_run_killed_without_clean_up_is_named_before_a_new_one_starts(env: dict[str, str], tmp_path: Path) -> None:
    with reaped([start_lambdactl(env, tmp_path / "serve.log", "serve")]) as (leftover,):
        wait_for((tmp_path / "serving").exists, 60, "the leftover serve loop running")
        result = lambdactl(env, "demo", "--duration", "1", "--no-airflow")
        assert result.returncode == 1
        assert "is still running" in result.stderr and f"pid {leftover.pid} (service)" in result.stderr, result.stderr
        assert "`lambdactl stop`" in result.stderr
        stopped = lambdactl(env, "stop")
        assert stopped.returncode == 0 and f"stopping 1 service process(es): {leftover.pid}" in stopped.stdout
        assert leftover.wait(timeout=10) == 0, "serve stopped cleanly on SIGTERM"
        assert not processes_of(env["LAMBDA_DATA_DIR"])
        assert "nothing runs on" in lambdactl(env, "stop").stdout


def start_demo(env: dict[str, str], stdout: int, log: Path) -> subprocess.Popen[str]:
    """A demo without Airflow on its own broker, returned once its monitor prints (every service is up)."""
    with log.open("a") as errors:
        demo = subprocess.Popen(
            [sys.executable, "-m", "lambdactl", "demo", "--rate", "50", "--no-airflow"],
            env=env,
            stdout=stdout,
            stderr=errors,
            text=True,
        )
    return demo


def read_until_the_monitor_prints(demo: subprocess.Popen[str]) -> None:
    assert demo.stdout is not None
    for line in demo.stdout:  # the monitor's first line means every service is up
        if " ev/s | valid " in line:
            return
    raise AssertionError(f"the demo ended before its monitor printed (exit {demo.wait()})")


def test_a_supervisor_killed_with_sigkill_leaves_no_process(env: dict[str, str], tmp_path: Path) -> None:
    demo = start_demo(env, subprocess.PIPE, tmp_path / "demo-errors.log")
    with reaped([demo]):  # type: ignore[list-item]
        read_until_the_monitor_prints(demo)
        assert len(processes_of(env["LAMBDA_DATA_DIR"])) >= 5, "broker, simulators, lake sink, speed and serve run"
        demo.send_signal(signal.SIGKILL)
        demo.wait()
    wait_for(lambda: not processes_of(env["LAMBDA_DATA_DIR"]), 60, "every child of the killed demo gone")
    again = lambdactl(env, "demo", "--duration", "3", "--rate", "50", "--no-airflow")
    assert again.returncode == 0, "nothing is left to refuse the next run: " + again.stderr[-2000:]


def test_ctrl_c_with_the_output_reader_dead_stops_cleanly(env: dict[str, str], tmp_path: Path) -> None:
    """`./dev demo | tee demo.log`, then Ctrl-C: the terminal's group gets SIGINT and tee dies first."""
    demo = start_demo(env, subprocess.PIPE, tmp_path / "demo-errors.log")
    with reaped([demo]):  # type: ignore[list-item]
        read_until_the_monitor_prints(demo)
        assert demo.stdout is not None
        demo.stdout.close()  # the reader is gone: the demo's next line meets a broken pipe
        sink_log = Path(env["LAMBDA_DATA_DIR"]) / "logs" / "lake-sink.log"
        wait_for_line(sink_log, "lake version")  # a flush takes seconds: the monitor wrote meanwhile
        assert demo.poll() is None, "a broken output does not stop the demo"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=180) == 0, (tmp_path / "demo-errors.log").read_text()[-3000:]
    assert not processes_of(env["LAMBDA_DATA_DIR"]), "the services and the broker were stopped"
    assert "Traceback" not in (tmp_path / "demo-errors.log").read_text()
    assert "lake sink stopped: " in sink_log.read_text(), "the sink was stopped cleanly, not killed"


def test_a_killed_service_is_started_again_and_restart_rolls_services(env: dict[str, str], tmp_path: Path) -> None:
    """A crash costs a restart, not the demo; `lambdactl restart` is how new code (a new view) gets in."""
    data_dir = Path(env["LAMBDA_DATA_DIR"])

    def pids(service: str) -> set[int]:
        return {p.pid for p in run_processes(data_dir) if p.service == service}

    demo = start_demo(env, subprocess.PIPE, tmp_path / "demo-errors.log")
    with reaped([demo]):  # type: ignore[list-item]
        read_until_the_monitor_prints(demo)
        speed_log = data_dir / "logs" / "speed.log"
        took = "speed worker took partition 0 "
        wait_for(lambda: took in speed_log.read_text(), 60, "the first speed worker owning its partitions")
        (speed,) = pids("speed")
        os.kill(speed, signal.SIGKILL)
        wait_for(lambda: len(pids("speed") - {speed}) == 1, 30, "the killed speed worker started again")
        wait_for(lambda: speed_log.read_text().count(took) >= 2, 60, "the new worker resuming its partitions")
        before = pids("serve") | pids("lake-sink")
        restarted = lambdactl(env, "restart", "serve", "lake-sink")
        assert restarted.returncode == 0, restarted.stderr
        assert re.search(
            r"^restarted serve: pid \d+ -> \d+\nrestarted lake-sink: pid \d+ -> \d+$", restarted.stdout, re.M
        )
        assert not (pids("serve") | pids("lake-sink")) & before
        unknown = lambdactl(env, "restart", "broker")
        assert unknown.returncode == 1 and "the demo's services are simulate, lake-sink, speed, serve" in unknown.stderr
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=180)
    assert demo.returncode == 0, (tmp_path / "demo-errors.log").read_text()[-3000:]
    assert re.search(r"^speed exited \(code -9\); started again as pid \d+", output, re.M), output[-3000:]
    assert "serve exited (code 0); started again" in output and "lake-sink exited (code 0); started again" in output
    assert "lake sink stopped: " in (data_dir / "logs" / "lake-sink.log").read_text(), "the sink committed and exited"
    assert not processes_of(env["LAMBDA_DATA_DIR"]), "the restarted services were stopped with the demo"
    again = lambdactl(env, "restart", "speed")
    assert again.returncode == 1 and "no demo runs on" in again.stderr
