"""Child processes the demo supervises: each in its own process group, logging to a file.

Stopping signals the whole group (Airflow's standalone mode has children of its own), waits a
bounded time for a clean exit, then kills the group, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

STOP_TIMEOUT_S = 30.0
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


def leftover_processes(data_dir: Path) -> list[tuple[int, str]]:
    """Platform processes (``lambdactl`` services, Airflow) of an earlier run on ``data_dir``.

    A demo killed with SIGKILL cannot stop its children; they still hold the data dir's
    consumer groups and Airflow's ports. Found through /proc: their ``LAMBDA_DATA_DIR`` (relative
    to their working directory) or ``AIRFLOW_HOME`` names this data dir.
    """
    target = data_dir.resolve()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            environ = dict(
                item.split("=", 1)
                for item in (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        ours = (
            "lambdactl" in cmdline
            and "LAMBDA_DATA_DIR" in environ
            and (cwd / environ["LAMBDA_DATA_DIR"]).resolve() == target
        )
        airflow = environ.get("AIRFLOW_HOME") == str(target / "airflow")
        if (ours and " demo" not in cmdline) or airflow:
            found.append((int(proc.name), cmdline[:100]))
    return sorted(found)


def refuse_leftovers(data_dir: Path) -> None:
    """Stop with a clear message if an earlier run on ``data_dir`` left processes behind."""
    leftovers = leftover_processes(data_dir)
    if leftovers:
        listing = "\n".join(f"  pid {pid}: {command}" for pid, command in leftovers)
        pids = " ".join(str(pid) for pid, _ in leftovers)
        raise LeftoverError(
            f"an earlier run on {data_dir.resolve()} is still running (killed without clean-up?):\n{listing}\n"
            f"Stop it with `kill {pids}` (the services commit and exit), then start again; the data is kept."
        )
