"""Traffic for tests: a realistic mix of sources with every fault turned on, produced in the background."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import read_snapshot
from sources.producer import BatchingProducer
from sources.run import build_simulators, run_simulation
from sources.simulators import Simulator


def lively_simulators(
    seed: int,
    start: datetime | None = None,
    rate: float = 300.0,
    duplicate_share: float = 0.03,
    malformed_share: float = 0.02,
) -> list[Simulator]:
    """Web, app and sensors with late (up to 2 h), duplicate and malformed records."""
    return build_simulators(
        ["web", "app", "sensor"],
        rate=rate,
        serde=JsonSerde(),
        start=start or datetime.now(UTC),
        seed=seed,
        late_share=0.2,
        max_lateness=timedelta(hours=2),
        duplicate_share=duplicate_share,
        malformed_share=malformed_share,
    )


@contextmanager
def producing(settings: Settings, simulators: list[Simulator]) -> Iterator[None]:
    """Produce in real time while the block runs; every record sent is acknowledged on exit."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_simulation,
        args=(simulators, BatchingProducer(settings, settings.events_topic)),
        kwargs={"stop": stop, "realtime": True},
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def whole_platform_settings(kafka: Settings, data_dir: Path) -> Settings:
    """Settings for a test that runs sink, speed worker and batch together, with quick cadences."""
    return kafka.model_copy(
        update={
            "data_dir": data_dir,
            "lake_flush_seconds": 0.3,
            "lake_sink_group": f"sink-{kafka.events_topic}",
            "speed_group": f"speed-{kafka.events_topic}",
            "speed_segment_seconds": 1.0,
            "speed_publish_ms": 200,
            "speed_prune_grace_seconds": 4.0,
        }
    )


@contextmanager
def reaped(processes: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Kill every process added to the list when the block ends, even if the test failed."""
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2) -> None:
    """Poll a real signal until it holds, within a bounded time; ``what`` names it in the failure."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f}s")
        time.sleep(every_s)


def start_lambdactl(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A ``lambdactl`` subcommand as its own process, output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "lambdactl", *args], env=env, stdout=out, stderr=out)


def speed_reflected(settings: Settings) -> int:
    """Records the speed layer's published snapshots reflect, over all partitions."""
    snapshots = [read_snapshot(settings.speed_views_path, p) for p in range(settings.topic_partitions)]
    return sum(s.next_offset for s in snapshots if s)
