"""Child processes the demo supervises: each in its own process group, logging to a file.

Stopping signals the whole group (Airflow's standalone mode has children of its own), waits a
bounded time for a clean exit, then kills the group, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lambda_contracts.settings import Settings
from lambdactl.reaper import stop_processes

DEFAULT_DATA_DIR = Settings.model_fields["data_dir"].default

STOP_TIMEOUT_S = 30.0
DEMO_STOP_TIMEOUT_S = 150.0
TERM_TIMEOUT_S = 15.0


@dataclass
class Service:
    name: str
    command: list[str]
    log: Path
    env: dict[str, str] | None = None
    stop_signal: int = signal.SIGTERM
    signal_group: bool = True
    """False when the leader stops its own children (signalling them too makes them stop twice)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Stop politely, then firmly: the stop signal, SIGTERM to the group, SIGKILL. Returns the exit code.

        Airflow's scheduler, for one, can wait on idle executor workers after its parent asked it
        to stop; the escalation guarantees that nothing of the group outlives ``stop``.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal(self.stop_signal, group=self.signal_group)
            if not self._exited_within(timeout_s):
                self._signal(signal.SIGTERM, group=True)
                self._exited_within(TERM_TIMEOUT_S)
        self._signal(signal.SIGKILL, group=True)  # whatever the group still holds
        return self.process.wait()

    def _signal(self, signum: int, group: bool) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)

    def _exited_within(self, timeout_s: float) -> bool:
        assert self.process is not None
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return "(no output)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class LeftoverError(RuntimeError):
    """Processes of an earlier run on the same data dir still run; the message lists them."""


@dataclass(frozen=True)
class RunProcess:
    """A process of a run on a data dir, found through /proc."""

    pid: int
    kind: str
    """``demo`` (a supervisor), ``service`` (a lambdactl service, Airflow) or ``broker`` (a local broker node)."""
    command: str
    service: str = ""
    """For a lambdactl service, its command (``speed``, ``serve``, ...); empty otherwise."""


def run_processes(data_dir: Path) -> list[RunProcess]:
    """Every process of a run on ``data_dir``: supervisors, services, Airflow and broker nodes.

    Services are known by their ``LAMBDA_DATA_DIR`` (relative to their working directory, the
    default when unset) or
    ``AIRFLOW_HOME``; broker nodes by their configuration file under the data dir.
    """
    target = data_dir.resolve()
    brokers = str(target / "kafka") + "/"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
            environ = dict(
                item.split("=", 1)
                for item in (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        cmdline = " ".join(argv)
        arguments = _lambdactl_arguments(argv)
        data_dir_of_process = environ.get("LAMBDA_DATA_DIR", str(DEFAULT_DATA_DIR))
        ours = arguments is not None and (cwd / data_dir_of_process).resolve() == target
        if ours and arguments and arguments[0] in ("demo", "bench"):
            found.append(RunProcess(int(proc.name), "demo", cmdline[:100]))
        elif ours or environ.get("AIRFLOW_HOME") == str(target / "airflow"):
            service = arguments[0] if ours and arguments else ""
            found.append(RunProcess(int(proc.name), "service", cmdline[:100], service))
        elif "kafka.Kafka" in cmdline and brokers in cmdline:
            found.append(RunProcess(int(proc.name), "broker", cmdline[:100]))
    return sorted(found, key=lambda p: p.pid)


def _lambdactl_arguments(argv: list[str]) -> list[str] | None:
    """The arguments after ``lambdactl`` (``python -m lambdactl ...`` or the console script), else None."""
    if argv[1:3] == ["-m", "lambdactl"]:
        return argv[3:]
    for index, argument in enumerate(argv[:2]):
        if Path(argument).name == "lambdactl":
            return argv[index + 1 :]
    return None


def _still_running(data_dir: Path, pids: set[int]) -> list[int]:
    return [p.pid for p in run_processes(data_dir) if p.pid in pids]


def refuse_leftovers(data_dir: Path) -> None:
    """Stop with a clear message if an earlier run on ``data_dir`` left processes behind; name every one."""
    processes = run_processes(data_dir)
    if any(p.kind != "broker" for p in processes):
        listing = "\n".join(f"  pid {p.pid} ({p.kind}): {p.command}" for p in processes)
        raise LeftoverError(
            f"an earlier run on {data_dir.resolve()} is still running:\n{listing}\n"
            f"Stop it with `lambdactl stop` (the services commit and exit, the data is kept), then start again."
        )


def stop_run(data_dir: Path, echo: Callable[[str], None]) -> list[RunProcess]:
    """Stop every process of a run on ``data_dir``: supervisors first (they stop what they started),
    then any service they did not, then broker nodes last, each politely then firmly."""
    stopped = []
    for kind, grace_s in (("demo", DEMO_STOP_TIMEOUT_S), ("service", STOP_TIMEOUT_S), ("broker", STOP_TIMEOUT_S)):
        processes = [p for p in run_processes(data_dir) if p.kind == kind]
        if not processes:
            continue
        echo(f"stopping {len(processes)} {kind} process(es): " + ", ".join(str(p.pid) for p in processes))
        stop_processes(functools.partial(_still_running, data_dir, {p.pid for p in processes}), grace_s)
        stopped += processes
    return stopped
