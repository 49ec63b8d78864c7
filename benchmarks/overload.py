"""Twice the load the platform sustains, for minutes: memory stays bounded, lag grows, then recovers.

The run has three phases on the embedded default (one broker node, a lake sink, a speed worker,
serve, a batch run every minute). The lake sink and the speed worker each run under a CPU quota
(``consumer_cores``, a cgroup: ``benchmarks/cpu_quota.py``): on two cores, producers sharing them
with unconfined consumers offered less than half of what those drain, never twice.

1. **Capacity**: the lake sink and the speed worker are stopped, a backlog is produced as fast as
   possible, then they start again and the rate at which each drains it is timed from its first
   progress (start-up excluded; the producer done, so it takes no core from them); the platform
   sustains the slower of the two.
2. **Overload**: simulators (two processes) are asked for ``factor`` times that rate for ``minutes``;
   what they achieve on the same cores is reported beside it.
3. **Recovery**: the load drops to a quarter of the capacity (``RELIEF``); the time until both
   consumers are back at the head of the topic is the recovery time.

Every second it samples each process's resident memory (the batch run's with its Spark JVM) and each
consumer's lag. At the end every record in the topic must be in the lake exactly once (the
simulators send no malformed records here, so nothing goes to the dead-letter topic).
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from batch_layer.lake import Lake
from benchmarks.chaos import ChaosFigures, Platform
from benchmarks.cpu_quota import CpuQuota
from benchmarks.footprint import PAGE
from infra.local_broker import LocalBroker
from infra.topics import ensure_topics
from lambda_contracts.plumbing.kafka import admin_client, events_end_offsets
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import read_snapshot
from lambda_contracts.topics import platform_topics

BACKLOG = 300_000
"""Records produced at once to measure how fast the consumers drain a backlog."""
RELIEF = 0.25
"""The load after the overload, as a share of the capacity: the backlog of ten minutes at twice the capacity
drains at the rest (at half, it took more than half an hour)."""
RECOVERY_LIMIT_S = 2700.0
PRODUCERS = 2
"""Simulator processes offering the overload: one Python process alone cannot offer it on two cores."""
CONSUMERS = {"lake": "lake-sink", "speed": "speed-1"}
"""Position name -> the process that advances it."""
BATCH_PYTHON = "batch run's Python alone"
"""The batch run's own process, without its Spark JVM: the rest of the batch run's tree is the JVM."""


@dataclass
class Memory:
    """Resident MiB of one component per second (its whole process tree)."""

    name: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the overload began, MiB)."""
    peak_anonymous: float = 0.0
    """The most resident MiB not backed by a file: mapped files (the speed worker's batch id index) are
    page cache the kernel can take back."""

    @property
    def peak(self) -> float:
        return max((mib for _, mib in self.samples), default=0.0)

    def sample(self, at: float, pid: int, alone: bool = False) -> None:
        resident, anonymous = _tree_mib(pid, alone)
        self.samples.append((at, resident))
        self.peak_anonymous = max(self.peak_anonymous, anonymous)

    def median_between(self, start: float, end: float) -> float:
        window = [mib for at, mib in self.samples if start <= at < end]
        return statistics.median(window) if window else 0.0


@dataclass
class OverloadFigures:
    lake_drain_per_s: float = 0.0
    speed_drain_per_s: float = 0.0
    offered_per_s: float = 0.0
    overload_s: float = 0.0
    produced: int = 0
    max_lag: dict[str, int] = field(default_factory=lambda: {"lake": 0, "speed": 0})
    lag_at_drop: dict[str, int] = field(default_factory=lambda: {"lake": 0, "speed": 0})
    recovery_s: dict[str, float] = field(default_factory=dict)
    memory: dict[str, Memory] = field(default_factory=dict)
    batch_versions: int = 0
    consumer_cores: float = 0.0
    throttled_s: dict[str, float] = field(default_factory=dict)
    """Consumer -> how long its CPU quota held it back over the whole run."""
    lost: int = 0
    duplicated: int = 0

    @property
    def capacity_per_s(self) -> float:
        return min(self.lake_drain_per_s, self.speed_drain_per_s)

    @property
    def achieved_per_s(self) -> float:
        return self.produced / self.overload_s if self.overload_s else 0.0

    @property
    def recovered_s(self) -> float:
        return max(self.recovery_s.values(), default=float("inf"))


def run_overload(
    settings: Settings,
    *,
    minutes: float = 10.0,
    factor: float = 2.0,
    consumer_cores: float = 0.1,
    show: Callable[[str], None] = print,
) -> OverloadFigures:
    """``consumer_cores``: the CPU quota of the lake sink and of the speed worker, each (0: none)."""
    figures = OverloadFigures(consumer_cores=consumer_cores)
    with tempfile.TemporaryDirectory(prefix="overload-") as scratch:
        folder = Path(scratch)
        settings = settings.model_copy(update={"data_dir": folder})
        quotas = (  # made first: a machine that cannot make them is told so before anything starts
            {name: CpuQuota(f"lambda-overload-{name}", consumer_cores) for name in CONSUMERS.values()}
            if consumer_cores
            else {}
        )
        if quotas:
            show(f"the lake sink and the speed worker run under a CPU quota of {consumer_cores:g} core each")
        broker = LocalBroker(settings)
        broker.start()
        platform = Platform(settings, folder, broker)
        platform.quotas = quotas
        done = threading.Event()
        batches = threading.Thread(target=platform.run_batches, args=(done, [], ChaosFigures(), random.Random(0)))
        try:
            with admin_client(settings) as admin:
                ensure_topics(admin, platform_topics(settings))
            for name in ("lake-sink", "speed-1", "serve"):
                platform.start(name)
            batches.start()
            _measure_capacity(settings, platform, figures, show)
            _overload(settings, platform, figures, minutes=minutes, factor=factor, show=show)
            _count_losses(settings, figures)
        finally:
            done.set()
            platform.stop()
            batches.join()
            figures.batch_versions = platform.batch_runs
            broker.stop()
            for name, quota in platform.quotas.items():
                figures.throttled_s[name] = quota.throttled_s()
                quota.remove()
    return figures


def _simulate(platform: Platform, name: str, *args: str) -> subprocess.Popen[bytes]:
    """Simulators in a process of their own, so producing does not share a core with the sampling."""
    with (platform.folder / f"{name}.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lambdactl", "simulate", "--malformed-share", "0", *args],
            env=platform.env,
            stdout=out,
            stderr=out,
        )


def _measure_capacity(
    settings: Settings, platform: Platform, figures: OverloadFigures, show: Callable[[str], None]
) -> None:
    """Each consumer's drain of a backlog produced while it was stopped, timed from its first progress.

    Timing a backlog the consumers read while it was produced measured only what was left at the end,
    over a fixed latency (a publish cadence, a batch run), and said 2,069 events/s for a speed worker
    that then kept up with 4,124."""
    show("waiting until the lake sink and the speed worker own the topic ...")
    warmup = _simulate(platform, "warmup", "--count", "3000", "--fast", "--seed", "1")
    warmup.wait()
    _wait_caught_up(settings, limit_s=300)
    show(f"capacity: the consumers stopped, {BACKLOG:,} records produced, the consumers started again ...")
    for name in CONSUMERS.values():
        platform.stop_one(name)
    backlog = _simulate(platform, "backlog", "--count", str(BACKLOG), "--fast", "--seed", "2")
    backlog.wait()
    start = _positions(settings)
    for name in CONSUMERS.values():
        platform.start(name)
    began = time.monotonic()
    first: dict[str, tuple[float, int]] = {}
    """Consumer -> when its position first moved past where it stopped, and to where (start-up excluded)."""
    drain: dict[str, float] = {}
    while len(drain) < len(CONSUMERS):
        if time.monotonic() - began > 600:
            raise RuntimeError("the backlog did not drain in 10 minutes; see the logs in " + str(platform.folder))
        positions, now = _positions(settings), time.monotonic()
        for name in CONSUMERS:
            if name in drain:
                continue
            if name not in first and positions[name] > start[name]:
                first[name] = (now, positions[name])
            if name in first and positions[name] >= start["end"]:
                moved_at, moved_to = first[name]
                if now > moved_at:
                    drain[name] = (start["end"] - moved_to) / (now - moved_at)
                else:  # all of it at its first step: only start-up and drain together can be timed
                    drain[name] = (start["end"] - start[name]) / (now - began)
        time.sleep(0.2)  # polling the consumers' published positions: they are the signal
    figures.lake_drain_per_s, figures.speed_drain_per_s = drain["lake"], drain["speed"]
    show(
        f"  lake sink {figures.lake_drain_per_s:,.0f} events/s, speed worker {figures.speed_drain_per_s:,.0f} "
        f"events/s (from their first progress): the platform sustains {figures.capacity_per_s:,.0f} events/s"
    )


def _overload(
    settings: Settings,
    platform: Platform,
    figures: OverloadFigures,
    *,
    minutes: float,
    factor: float,
    show: Callable[[str], None],
) -> None:
    figures.offered_per_s = factor * figures.capacity_per_s
    before = sum(events_end_offsets(settings).values())
    show(f"overload: {figures.offered_per_s:,.0f} events/s offered for {minutes:g} minutes ...")
    pids = {name: process.pid for name, process in platform.processes.items()}
    broker_pid = platform.cluster.nodes[0].running_pid()
    if broker_pid is not None:
        pids["broker"] = broker_pid
    figures.memory = {name: Memory(name) for name in [*pids, "batch run", BATCH_PYTHON]}
    per_source = figures.offered_per_s / 3 / PRODUCERS  # three sources in each producer process
    loads = [
        _simulate(
            platform,
            f"overload-{n}",
            "--rate",
            f"{per_source:.0f}",
            "--duration",
            f"{minutes * 60:.0f}",
            "--seed",
            str(10 + n),
        )
        for n in range(PRODUCERS)
    ]
    began = time.monotonic()
    dropped_at: float | None = None
    relief: subprocess.Popen[bytes] | None = None
    next_line = began + 30
    while True:
        now = time.monotonic() - began
        for name, pid in pids.items():
            figures.memory[name].sample(now, pid)
        if platform.batch is not None and platform.batch.poll() is None:
            figures.memory["batch run"].sample(now, platform.batch.pid)
            figures.memory[BATCH_PYTHON].sample(now, platform.batch.pid, alone=True)
        positions = _positions(settings)
        lags = {name: positions["end"] - positions[name] for name in ("lake", "speed")}
        for name, lag in lags.items():
            figures.max_lag[name] = max(figures.max_lag[name], lag)
        if dropped_at is None and now >= minutes * 60:
            for load in loads:  # behind their schedule, simulators would go on until they sent it all
                load.terminate()
                load.wait()
            dropped_at = now
            figures.overload_s = now
            figures.lag_at_drop = dict(lags)
            figures.produced = sum(events_end_offsets(settings).values()) - before
            show(
                f"  load dropped to {RELIEF:.0%} of the capacity after {now:.0f} s; "
                f"lag lake {lags['lake']:,}, speed {lags['speed']:,}"
            )
            relief_per_source = RELIEF * figures.capacity_per_s / 3  # three sources in the process
            relief = _simulate(platform, "relief", "--rate", f"{relief_per_source:.0f}", "--seed", "3")
        if dropped_at is not None:
            for name, lag in lags.items():
                if name not in figures.recovery_s and lag <= figures.capacity_per_s:  # within a second of the head
                    figures.recovery_s[name] = now - dropped_at
                    show(f"  {name} caught up {now - dropped_at:.0f} s after the load dropped")
            if len(figures.recovery_s) == 2 or now - dropped_at > RECOVERY_LIMIT_S:
                break
        if time.monotonic() >= next_line:
            next_line += 30
            rss = ", ".join(f"{m.name} {m.samples[-1][1]:.0f}" for m in figures.memory.values() if m.samples)
            show(f"  {now:5.0f} s: lag lake {lags['lake']:,}, speed {lags['speed']:,}; MiB {rss}")
        time.sleep(1.0)  # the sampling period: a figure per second, not a readiness wait
    if relief is not None:
        relief.terminate()
        relief.wait()
    _wait_caught_up(settings, limit_s=600)


def _positions(settings: Settings) -> dict[str, int]:
    """Records in the topic, in the lake and counted by the speed layer."""
    partitions = range(settings.topic_partitions)
    lake = Lake(settings.lake_path, settings.events_topic).committed_offsets(partitions)
    speed = 0
    for partition in partitions:
        snapshot = read_snapshot(settings.speed_views_path, partition)
        speed += snapshot.next_offset if snapshot else 0
    return {"end": sum(events_end_offsets(settings).values()), "lake": sum(lake.values()), "speed": speed}


def _wait_caught_up(settings: Settings, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        positions = _positions(settings)
        if positions["lake"] == positions["speed"] == positions["end"]:
            return
        time.sleep(0.5)  # the consumers' own published positions are the signal
    raise RuntimeError(f"the lake sink and the speed worker did not catch up in {limit_s:.0f} s")


def _tree_mib(pid: int, alone: bool = False) -> tuple[float, float]:
    """Resident MiB of ``pid`` and every process below it (a batch run's Spark JVM, say), or of ``pid``
    ``alone``, and the part of it that no file backs."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, anonymous, todo = 0, 0, [pid]
    while todo:
        current = todo.pop()
        try:
            pages = Path(f"/proc/{current}/statm").read_text().split()
        except OSError:
            continue
        total += int(pages[1]) * PAGE
        anonymous += (int(pages[1]) - int(pages[2])) * PAGE  # resident less shared (file-backed) pages
        if not alone:
            todo.extend(children.get(current, []))
    return total / 2**20, anonymous / 2**20


def _count_losses(settings: Settings, figures: OverloadFigures) -> None:
    """Every record of the topic in the lake once: none missing, none twice."""
    end = sum(events_end_offsets(settings).values())
    table = Lake(settings.lake_path, settings.events_topic).table()
    if table is None:
        figures.lost = end
        return
    rows = table.to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
    distinct = rows.group_by(["kafka_partition", "kafka_offset"]).aggregate([]).num_rows
    figures.duplicated = rows.num_rows - distinct
    figures.lost = end - distinct


def report(f: OverloadFigures) -> list[str]:
    held = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sorted(f.throttled_s.items()))
    quota = "with no CPU quota"
    if f.consumer_cores:
        quota = f"under a CPU quota of {f.consumer_cores:g} core each (held back {held})"
    lines = [
        f"capacity {quota}: lake sink drains {f.lake_drain_per_s:,.0f} events/s, "
        f"speed worker {f.speed_drain_per_s:,.0f}; sustained {f.capacity_per_s:,.0f}",
        f"overload: {f.offered_per_s:,.0f} events/s asked for {f.overload_s:.0f} s; the producers achieved "
        f"{f.achieved_per_s:,.0f} ({f.produced:,} records); max lag lake {f.max_lag['lake']:,}, "
        f"speed {f.max_lag['speed']:,}; at the drop lake {f.lag_at_drop['lake']:,}, speed {f.lag_at_drop['speed']:,}",
        f"recovery after the load dropped to {RELIEF:.0%} of the capacity: "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sorted(f.recovery_s.items())),
        "resident memory per component (MiB): peak, median of the overload's first and last minute; "
        "peak not backed by a file",
    ]
    end = f.overload_s
    for memory in f.memory.values():
        lines.append(
            f"  {memory.name:<10} peak {memory.peak:6.0f}   first minute {memory.median_between(0, 60):6.0f}   "
            f"last minute {memory.median_between(end - 60, end):6.0f}   anonymous {memory.peak_anonymous:6.0f}"
        )
    lines.append(f"batch runs: {f.batch_versions}")
    peak = max((m.peak for m in f.memory.values()), default=0.0)
    lines.append(
        f"achieved_to_capacity={f.achieved_per_s / f.capacity_per_s if f.capacity_per_s else 0:.2f} "
        f"peak_rss_mib={peak:.0f} recovery_s={f.recovered_s:.0f} lost={f.lost} duplicated={f.duplicated}"
    )
    return lines
