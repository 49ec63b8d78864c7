"""No orphans, whatever kills the supervisor: a watchdog that outlives it by exactly one sweep.

A supervisor (the demo) marks its own environment with a fresh token, so every process it starts and
every process those start (Airflow's components, the Spark JVM of an Airflow task, the broker)
inherits it. It also starts this watchdog, in a session of its own, holding the read end of a pipe
whose write end only the supervisor holds. When the supervisor dies, by any signal, SIGKILL
included, the kernel closes that end; the watchdog reads EOF and stops every process that carries
the token: SIGTERM, a grace period, SIGKILL. A supervisor that stops cleanly does the same first, so
the watchdog's sweep then finds nothing.

    python -m lambdactl.reaper TOKEN      # started by ``Supervision``; reads the pipe on stdin
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

TOKEN_VARIABLE = "EXACT_LAMBDA_SUPERVISOR"
"""Not a setting (no ``LAMBDA_`` prefix, so ``child_environment`` keeps it): a mark on processes, read from /proc."""
GRACE_S = 20.0


def marked_processes(token: str) -> list[int]:
    """Pids of live processes whose environment carries ``token`` (this process excluded)."""
    wanted = f"{TOKEN_VARIABLE}={token}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if wanted in (proc / "environ").read_bytes().split(b"\0") and not _zombie(proc):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _zombie(proc: Path) -> bool:
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def sweep(token: str, grace_s: float = GRACE_S) -> int:
    """Stop every marked process. Returns how many there were."""
    return len(stop_processes(lambda: marked_processes(token), grace_s))


def stop_processes(find: Callable[[], list[int]], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM what ``find`` returns, wait up to ``grace_s`` while it still finds any, then SIGKILL the rest."""
    pids = find()
    for pid in pids:
        signal_if_alive(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while find() and time.monotonic() < deadline:
        time.sleep(0.2)  # processes finishing their last commit; /proc is the signal
    for pid in find():
        signal_if_alive(pid, signal.SIGKILL)
    return pids


def signal_if_alive(pid: int, signum: int) -> None:
    """Signal ``pid``; one that already exited is what the caller wanted anyway."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


class Supervision:
    """Mark this process's descendants and start the watchdog that stops them if this process dies."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        os.environ[TOKEN_VARIABLE] = self.token  # inherited by everything started from now on
        read_end, self._write_end = os.pipe()
        self.watchdog = subprocess.Popen(
            [sys.executable, "-m", "lambdactl.reaper", self.token],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the terminal's group must not reach it
            env={k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE},  # it does not sweep itself
        )
        os.close(read_end)

    def remaining(self) -> list[int]:
        return marked_processes(self.token)

    def finish(self) -> None:
        """After a clean stop: let the watchdog sweep (nothing should be left) and exit."""
        os.close(self._write_end)
        self.watchdog.wait(timeout=GRACE_S + 10)


def main(argv: list[str]) -> int:
    token = argv[0]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass  # nothing is ever written: EOF is the supervisor's death (or its clean finish)
    sweep(token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
