"""Airflow for the embedded mode: ``airflow standalone`` on SQLite under the data dir.

It runs the scheduler, the dag-processor, the API server (the UI) and the triggerer with the
LocalExecutor, reads the project's ``dags/`` folder, and starts with the DAGs unpaused so the
scheduled batch DAG runs on its own. The admin password is generated once and kept in the data
dir, so the printed login stays valid across runs.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from infra.ports import ensure_port_free
from lambda_contracts.settings import Settings
from lambdactl.airflow_api import ADMIN, AirflowHealth, airflow_health
from lambdactl.services import Service

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 240.0


class AirflowError(RuntimeError):
    """Airflow did not come up; the message says where to look."""


@dataclass(frozen=True)
class AirflowLogin:
    url: str
    username: str
    password: str


def airflow_home(settings: Settings) -> Path:
    return (settings.data_dir / "airflow").resolve()


def passwords_file(settings: Settings) -> Path:
    return airflow_home(settings) / "passwords.json"


def saved_admin_password(settings: Settings) -> str | None:
    """The embedded Airflow's admin password, if a demo has generated it."""
    path = passwords_file(settings)
    return str(json.loads(path.read_text())[ADMIN]) if path.exists() else None


def admin_password(settings: Settings) -> str:
    """The admin password, generated on first use and kept for later runs."""
    saved = saved_admin_password(settings)
    if saved is not None:
        return saved
    path = passwords_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    path.write_text(json.dumps({ADMIN: password}))
    path.chmod(0o600)
    return password


def airflow_env(settings: Settings) -> dict[str, str]:
    """The process environment for Airflow: its config, plus the platform's LAMBDA_* settings."""
    home = airflow_home(settings)
    env = settings.child_environment()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            # Airflow's own defaults (8793, 8794) would collide with a second demo or a chosen port.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(airflow_ports(settings)[1]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(airflow_ports(settings)[2]),
            # Task processes report to the API server: it must be the one on our port.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{settings.airflow_port}/execution/",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def start_airflow(settings: Settings, log: Path) -> tuple[Service, AirflowLogin]:
    """Start ``airflow standalone`` and return once its API reports a healthy scheduler."""
    for port in airflow_ports(settings):
        ensure_port_free("127.0.0.1", port, "LAMBDA_AIRFLOW_PORT (Airflow also uses the next two ports for its logs)")
    password = admin_password(settings)
    service = Service(
        "airflow",
        [str(Path(sys.executable).parent / "airflow"), "standalone"],
        log,
        env=airflow_env(settings),
        stop_signal=signal.SIGINT,  # standalone stops its components itself on Ctrl-C
        signal_group=False,
    ).start()
    url = f"http://127.0.0.1:{settings.airflow_port}"
    try:
        wait_until_healthy(service, url)
    except BaseException:
        service.stop()  # a half-started Airflow must not outlive the demo (Ctrl-C included)
        raise
    return service, AirflowLogin(url, ADMIN, password)


def airflow_ports(settings: Settings) -> tuple[int, int, int]:
    """The API server's port, then the log servers' of task workers and of the triggerer."""
    return settings.airflow_port, settings.airflow_port + 1, settings.airflow_port + 2


def wait_until_healthy(service: Service, url: str, timeout_s: float = READY_TIMEOUT_S) -> AirflowHealth:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not service.running:
            raise AirflowError(
                f"airflow standalone exited during start-up. Last lines of {service.log}:\n{service.tail()}"
            )
        health = airflow_health(url)
        if health.state("scheduler") == "healthy":
            return health
        last = health.error or f"scheduler {health.state('scheduler')}"
        time.sleep(1.0)  # polling a real health endpoint, bounded by the deadline
    raise AirflowError(f"Airflow did not become healthy at {url} within {timeout_s:.0f}s ({last}); see {service.log}")


def init_deployed_airflow(settings: Settings, passwords_file: Path) -> None:
    """Migrate a deployment's Airflow database and write the admin password Airflow reads.

    The password is the deployment's ``LAMBDA_AIRFLOW_PASSWORD`` (required there), so the UI login
    and ``lambdactl status`` agree.
    """
    password = settings.airflow_password.get_secret_value()
    if not password:
        raise AirflowError("LAMBDA_AIRFLOW_PASSWORD is empty: set it (`lambdactl deploy env` writes one)")
    passwords_file.parent.mkdir(parents=True, exist_ok=True)
    passwords_file.write_text(json.dumps({settings.airflow_username: password}))
    passwords_file.chmod(0o600)
    migrate = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=False)
    if migrate.returncode != 0:
        raise AirflowError(f"`airflow db migrate` failed (exit {migrate.returncode}); its output is above")
