"""The demo's keep-alive with real short-lived processes: restarts, the failure limit, the shutdown."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from lambdactl.keep_alive import RESTART_LIMIT, RESTART_WINDOW_S, KeepAlive
from lambdactl.services import Service
from tests.flows import wait_for

pytestmark = pytest.mark.unit


def exiting(tmp_path: Path, code: int, name: str = "speed") -> Service:
    """A service whose process prints a line and exits with ``code`` at once."""
    command = [sys.executable, "-c", f"print('{name} ran'); raise SystemExit({code})"]
    return Service(name, command, tmp_path / f"{name}.log")


def finished(service: Service) -> Service:
    service.start()
    assert service.process is not None
    service.process.wait()
    return service


def test_a_failing_service_is_restarted_until_the_limit_within_the_window(tmp_path: Path) -> None:
    said: list[str] = []
    service = finished(exiting(tmp_path, 3))
    keep_alive = KeepAlive([service], said.append)
    for attempt in range(RESTART_LIMIT - 1):
        keep_alive.restart(finished(service), now=float(attempt))
        assert said[-1].startswith("speed exited (code 3); started again as pid ")
    keep_alive.restart(finished(service), now=RESTART_WINDOW_S - 1)
    assert f"exited (code 3) {RESTART_LIMIT} times within {RESTART_WINDOW_S / 60:.0f} min: left down" in said[-1]
    assert "speed ran" in said[-1], "the end of its log is shown"
    assert len(said) == RESTART_LIMIT


def test_failures_spread_over_more_than_the_window_keep_being_restarted(tmp_path: Path) -> None:
    said: list[str] = []
    service = finished(exiting(tmp_path, 1))
    keep_alive = KeepAlive([service], said.append)
    for attempt in range(3 * RESTART_LIMIT):
        keep_alive.restart(finished(service), now=attempt * RESTART_WINDOW_S / (RESTART_LIMIT - 1))
    assert all("started again" in line for line in said)


def test_clean_exits_never_count_as_failures(tmp_path: Path) -> None:
    said: list[str] = []
    service = finished(exiting(tmp_path, 0))
    keep_alive = KeepAlive([service], said.append)
    for _ in range(3 * RESTART_LIMIT):
        keep_alive.restart(finished(service), now=0.0)
    assert all(line.startswith("speed exited (code 0); started again") for line in said)


def test_the_watcher_restarts_what_exits_and_nothing_after_the_stop(tmp_path: Path) -> None:
    said: list[str] = []
    lasting = Service("serve", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "serve.log")
    brief = exiting(tmp_path, 0, name="simulate")
    stop = threading.Event()
    keep_alive = KeepAlive([lasting.start(), brief.start()], said.append).start(stop)
    wait_for(lambda: len(said) >= 2, 30, "the exiting service started again twice")
    stop.set()
    keep_alive.join()
    restarts = len(said)
    assert all(line.startswith("simulate exited (code 0)") for line in said), "the lasting service was left alone"
    assert lasting.running
    assert lasting.stop(timeout_s=5) is not None
    assert brief.stop(timeout_s=5) is not None
    assert len(said) == restarts, "no restart once stopped"
