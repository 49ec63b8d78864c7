"""The README's main command: the platform on one machine, no Docker.

It installs the broker jars, starts the broker (or uses the running one), creates the topics,
runs the simulators as a child process and shows what arrives with a live rate. On Ctrl-C or at
the end of ``duration_s`` it stops what it started, in order, and leaves the data for next time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from infra.jars import install_all
from infra.local_broker import LocalBroker
from infra.topics import ensure_topics
from lambda_contracts.kafka_clients import admin_client
from lambda_contracts.settings import Settings
from lambda_contracts.topics import platform_topics
from lambdactl.monitor import run_monitor

CHILD_STOP_TIMEOUT_S = 30.0


def run_demo(settings: Settings, duration_s: float | None, rate: float, echo: Callable[[str], None] = print) -> None:
    echo("== exact-lambda demo: embedded mode (local Kafka broker, no Docker) ==")
    broker = LocalBroker(settings) if settings.uses_local_broker else None
    started_broker = False
    simulator: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    try:
        if broker is not None:
            install_all(progress=echo)
            status, started_broker = broker.start()
            echo(("started " if started_broker else "using running ") + status.describe())
        with admin_client(settings) as admin:
            for report in ensure_topics(admin, platform_topics(settings)):
                echo(f"topic {report.name}: {report.partitions} partitions{' (created)' if report.created else ''}")
        log_path = _log_path(settings, "simulate.log")
        simulator = _start_simulator(rate, log_path)
        echo(f"simulators: web, app (10% up to 2 h late), sensor at {rate:,.0f} records/s each; log {log_path}")
        echo("monitor: valid events per second as they arrive; Ctrl-C stops everything")
        if duration_s is not None:
            timer = threading.Timer(duration_s, stop.set)
            timer.daemon = True
            timer.start()
        totals = run_monitor(settings, stop, show=lambda tick: echo(tick.describe()))
        echo(f"seen {totals.accepted:,} valid events and {totals.rejected:,} rejected ones (see `lambdactl dlq`)")
    except KeyboardInterrupt:
        echo("stopping ...")
    finally:
        stop.set()
        if simulator is not None:
            _stop_child(simulator)
        if broker is not None and started_broker:
            broker.stop()
            echo("broker stopped; its data stays in " + str(broker.home))


def _start_simulator(rate: float, log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "lambdactl", "simulate", "--rate", str(rate)]
    with log_path.open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """SIGINT first (the simulator flushes its producer), SIGKILL if it does not exit in time."""
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=CHILD_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _log_path(settings: Settings, name: str) -> Path:
    folder = settings.data_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
