"""The demo keeps its services running, and restarts one on request: a rolling restart.

A service that exits while the demo runs (a crash, an out-of-memory kill, or `lambdactl restart`)
is started again with the same command, as compose's ``restart: unless-stopped`` does in a
deployment. Each service resumes from what it committed, so a restart loses and doubles nothing.
A restart also picks up new code: that is how a new view declaration reaches the speed worker and
serving while the broker, the lake sink and Airflow keep running. A service that keeps failing is
left down and named with the end of its log (after ``RESTART_LIMIT`` failed exits within
``RESTART_WINDOW_S``), rather than restarted in a tight loop.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from lambdactl.reaper import signal_if_alive
from lambdactl.services import RunProcess, Service, run_processes

RESTARTABLE = ("simulate", "lake-sink", "speed", "serve")
"""The lambdactl commands the demo runs as services (Airflow is not restarted: `lambdactl status` shows it)."""
RESTART_LIMIT = 5
RESTART_WINDOW_S = 300.0
CHECK_EVERY_S = 1.0
RESTART_TIMEOUT_S = 90.0


class KeepAlive:
    """Watches ``services`` (those given now: Airflow, started later, is not among them) and starts again
    any that exited, until ``stop`` is set."""

    def __init__(self, services: Iterable[Service], echo: Callable[[str], None]) -> None:
        self.services = list(services)
        self.echo = echo
        self._failures: dict[str, deque[float]] = {s.name: deque(maxlen=RESTART_LIMIT) for s in self.services}
        self._given_up: set[str] = set()
        self._thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> KeepAlive:
        self._thread = threading.Thread(target=self.run, args=(stop,), name="keep-alive", daemon=True)
        self._thread.start()
        return self

    def join(self) -> None:
        """Wait for the watcher to see the stop, so no restart races the shutdown."""
        if self._thread is not None:
            self._thread.join()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(CHECK_EVERY_S):
            for service in self.services:
                if stop.is_set():
                    return
                if service.name not in self._given_up and not service.running:
                    self.restart(service, time.monotonic())

    def restart(self, service: Service, now: float) -> None:
        code = service.process.returncode if service.process is not None else None
        failures = self._failures[service.name]
        if code != 0:  # a clean exit (asked by `lambdactl restart`) is no failure
            failures.append(now)
        if len(failures) == RESTART_LIMIT and now - failures[0] < RESTART_WINDOW_S:
            self._given_up.add(service.name)
            self.echo(
                f"{service.name} exited (code {code}) {RESTART_LIMIT} times within {RESTART_WINDOW_S / 60:.0f} min: "
                f"left down; fix the cause, then `lambdactl stop` and start again. Its log ({service.log}) ends:\n"
                + service.tail()
            )
            return
        process = service.start().process
        assert process is not None
        self.echo(f"{service.name} exited (code {code}); started again as pid {process.pid} (log {service.log})")


class RestartError(RuntimeError):
    """A restart that cannot be done here; the message says why and what to do."""


def restart_services(
    data_dir: Path, names: list[str], echo: Callable[[str], None], timeout_s: float = RESTART_TIMEOUT_S
) -> None:
    """Restart the named services of the demo on ``data_dir`` one at a time (a rolling restart).

    Each is asked to stop (it finishes its current commit), and the demo's keep-alive starts it again;
    the next one is restarted only once the new process runs, so at most one service is down at a time.
    """
    unknown = [n for n in names if n not in RESTARTABLE]
    if unknown:
        raise RestartError(f"cannot restart {', '.join(unknown)}: the demo's services are {', '.join(RESTARTABLE)}")
    if not any(p.kind == "demo" for p in run_processes(data_dir)):
        raise RestartError(
            f"no demo runs on {data_dir.resolve()}, so nothing would start a stopped service again. "
            "Start the platform with `./dev demo`; in a compose deployment use `docker compose restart <service>`."
        )
    for name in names:
        old = _service_processes(data_dir, name)
        if not old:
            raise RestartError(f"{name} is not running on {data_dir.resolve()}; `lambdactl status` shows what runs")
        for process in old:
            signal_if_alive(process.pid, signal.SIGTERM)  # it may have exited on its own meanwhile
        new = _wait_for_new(data_dir, name, {p.pid for p in old}, timeout_s)
        echo(f"restarted {name}: pid {', '.join(str(p.pid) for p in old)} -> {', '.join(str(p.pid) for p in new)}")


def _service_processes(data_dir: Path, name: str) -> list[RunProcess]:
    return [p for p in run_processes(data_dir) if p.kind == "service" and p.service == name]


def _wait_for_new(data_dir: Path, name: str, old: set[int], timeout_s: float) -> list[RunProcess]:
    """The new process of ``name``, once the old ones are gone and the demo started it again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        processes = _service_processes(data_dir, name)
        if processes and not {p.pid for p in processes} & old:
            return processes
        time.sleep(0.2)  # the old process finishing its commit, then the keep-alive's next check; /proc tells
    raise RestartError(
        f"{name} was asked to stop but no new process ran within {timeout_s:.0f} s; "
        f"see its log under {data_dir.resolve() / 'logs'} and `lambdactl status`"
    )
