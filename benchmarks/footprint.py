"""Footprint benchmark: what the always-on part of the platform costs at a steady rate.

A fresh data dir, the local broker, and the platform's own commands as separate processes:
``lambdactl simulate`` (three sources at ``rate / 3`` each), ``lake-sink``, ``speed`` and ``serve``.
Every second each process's CPU time and resident memory are read from ``/proc`` (the broker's JVM
included); the first ``warmup`` seconds are start-up and are left out. At the end the bytes and
files under ``data/views`` and ``data/lake`` are counted. Airflow and Spark are not part of it: they
run for minutes an hour, not all the time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infra.local_broker import LocalBroker
from infra.topics import ensure_topics
from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.settings import Settings
from lambda_contracts.topics import platform_topics

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Sampled:
    name: str
    pid: int
    cpu: list[tuple[float, float]] = field(default_factory=list)
    """(monotonic time, CPU seconds used so far)."""
    rss: list[float] = field(default_factory=list)
    """Resident MiB at each sample after the warm-up."""

    def sample(self, now: float, steady: bool) -> None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            return
        if steady:
            self.cpu.append((now, (int(fields[11]) + int(fields[12])) / TICK))
            self.rss.append(pages * PAGE / 2**20)

    @property
    def cores(self) -> float:
        if len(self.cpu) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.cpu[0], self.cpu[-1]
        return (c1 - c0) / (t1 - t0)

    @property
    def rss_mib(self) -> float:
        """The median of the steady samples (the last ones decide whether it keeps growing)."""
        return statistics.median(self.rss[-10:]) if self.rss else 0.0


@dataclass(frozen=True)
class Footprint:
    rate: float
    seconds: float
    processes: list[Sampled]
    views_bytes: int
    views_files: int
    lake_bytes: int
    lake_files: int
    events: int

    @property
    def cores(self) -> float:
        return sum(p.cores for p in self.processes)

    @property
    def rss_mib(self) -> float:
        return sum(p.rss_mib for p in self.processes)


def tree_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) below ``folder``; a file hard-linked in several places counts once (it is stored once)."""
    stats = {}
    for path in folder.rglob("*") if folder.exists() else []:
        info = path.lstat()
        if path.is_file():
            stats[(info.st_dev, info.st_ino)] = info.st_size
    return sum(stats.values()), len(stats)


def run_footprint(
    settings: Settings,
    rate: float = 1000.0,
    seconds: float = 120.0,
    warmup: float = 30.0,
    show: Callable[[str], None] = print,
) -> Footprint:
    with tempfile.TemporaryDirectory(prefix="footprint-") as folder:
        settings = settings.model_copy(update={"data_dir": Path(folder)})
        broker = LocalBroker(settings)
        broker.start()
        children: list[tuple[str, subprocess.Popen[bytes]]] = []
        try:
            with admin_client(settings) as admin:
                ensure_topics(admin, platform_topics(settings))
            env = settings.child_environment()
            commands = {
                "simulators": ["simulate", "--rate", str(rate / 3)],
                "lake-sink": ["lake-sink"],
                "speed": ["speed"],
                "serve": ["serve"],
            }
            logs = Path(folder) / "logs"
            logs.mkdir(exist_ok=True)
            for name, args in commands.items():
                with (logs / f"{name}.log").open("wb") as out:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "lambdactl", *args], env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                children.append((name, process))
            broker_pid = broker.nodes[0].running_pid()
            assert broker_pid is not None
            sampled = [Sampled("broker", broker_pid)] + [Sampled(name, p.pid) for name, p in children]
            started = time.monotonic()
            show(f"running at {rate:,.0f} events/s for {seconds:.0f} s (the first {warmup:.0f} s are start-up) ...")
            next_report = started + 30
            while (now := time.monotonic()) - started < seconds:
                for item in sampled:
                    item.sample(now, steady=now - started >= warmup)
                for name, process in children:
                    if process.poll() is not None:
                        raise RuntimeError(f"{name} exited ({process.returncode}); see {logs / name}.log")
                if now >= next_report:
                    next_report += 30
                    show(f"  {now - started:.0f} s: " + ", ".join(f"{p.name} {p.cores:.2f}" for p in sampled))
                time.sleep(1.0)  # the sampling period: a figure per second, not a readiness wait
            events = sum(_topic_end(settings).values())
        finally:
            for _, process in children:
                process.terminate()
            for _, process in children:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
            broker.stop()
        views = tree_size(settings.data_dir / "views")
        lake = tree_size(settings.lake_path)
        return Footprint(rate, seconds, sampled, views[0], views[1], lake[0], lake[1], events)


def _topic_end(settings: Settings) -> dict[int, int]:
    from lambda_contracts.plumbing.kafka import new_consumer, topic_offsets

    consumer = new_consumer(settings, group_id=None)
    try:
        return topic_offsets(consumer, settings.events_topic)
    finally:
        consumer.close(autocommit=False)


def report(f: Footprint) -> list[str]:
    lines = [f"{f.events:,} events in {f.seconds:.0f} s at {f.rate:,.0f} events/s; steady state per component:"]
    lines += [f"  {p.name:<11} {p.cores:5.2f} cores {p.rss_mib:8.0f} MiB" for p in f.processes]
    ratio = f.views_bytes / f.lake_bytes if f.lake_bytes else float("inf")
    lines.append(
        f"data/views {f.views_bytes / 1e6:,.1f} MB in {f.views_files:,} files; "
        f"data/lake {f.lake_bytes / 1e6:,.1f} MB in {f.lake_files:,} files"
    )
    lines.append(f"cores={f.cores:.2f} rss_mib={f.rss_mib:.0f} views_to_lake={ratio:.2f}")
    return lines
