"""Driving simulators into Kafka: pacing in real time (or as fast as possible), limits, progress.

The producer is always flushed and closed, also on Ctrl-C, so every record that was reported
sent has been acknowledged by the broker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lambda_contracts.events import SOURCES, Source
from lambda_contracts.serde import Serde
from sources.knobs import DEFAULTS, Knobs, SimRecord
from sources.producer import BatchingProducer
from sources.simulators import SIMULATORS, Simulator, merged_records

SEND_EVERY_S = 0.05
"""In real time, records are handed to the producer in ticks: each waits until its due time, then up to
this long more, so the records due within a tick go out together. Sent one by one, every key's partition
starts its own producer batch at its own instant, and at 1,000 records/s the broker answers hundreds of
tiny produce requests a second; in ticks, one request carries every partition's batch (measured at
1,000 records/s: the broker 0.135 -> 0.05-0.06 of a core, the simulators 0.20 -> 0.13-0.17). Like a
device gateway, a record leaves at most one tick after it happened, never before."""


@dataclass
class RunReport:
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        return (
            f"sent {self.records:,} records ({self.rate:,.0f}/s, {self.megabytes_per_s:.2f} MB/s)"
            f" valid {self.kinds['valid']:,} duplicate {self.kinds['duplicate']:,}"
            f" malformed {self.kinds['malformed']:,}"
        )


def build_simulators(
    sources: Iterable[Source] = SOURCES,
    *,
    serde: Serde,
    start: datetime,
    rate: float = DEFAULTS.rate,
    seed: int = DEFAULTS.seed,
    late_share: float = DEFAULTS.late_share,
    max_lateness: timedelta = DEFAULTS.max_lateness,
    duplicate_share: float = DEFAULTS.duplicate_share,
    cross_partition_share: float = DEFAULTS.cross_partition_share,
    malformed_share: float = DEFAULTS.malformed_share,
) -> list[Simulator]:
    """One simulator per source at ``rate`` records/s each; only the app has late events."""
    simulators = []
    for source in sources:
        knobs = Knobs(
            rate=rate,
            late_share=late_share if source == "app" else 0.0,
            max_lateness=max_lateness,
            duplicate_share=duplicate_share,
            cross_partition_share=cross_partition_share,
            malformed_share=malformed_share,
            seed=seed,
        )
        simulators.append(SIMULATORS[source](knobs, serde, start))
    return simulators


def run_simulation(
    simulators: Sequence[Simulator],
    producer: BatchingProducer,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    realtime: bool = True,
    send_every_s: float = SEND_EVERY_S,
    stop: threading.Event | None = None,
    progress: Callable[[RunReport], None] | None = None,
    progress_every_s: float = 1.0,
    on_record: Callable[[SimRecord], None] | None = None,
) -> RunReport:
    """Send records until ``count`` records, ``duration_s`` seconds, or ``stop`` is set."""
    if count is None and duration_s is None and stop is None:
        raise ValueError("give a count, a duration or a stop event, or the run never ends")
    report = RunReport()
    started = time.monotonic()
    next_progress = started + progress_every_s
    try:
        for record in merged_records(simulators):
            now = time.monotonic()
            elapsed = now - started
            if duration_s is not None and (record.due if realtime else elapsed) >= duration_s:
                break
            if realtime and record.due > elapsed:
                pause = record.due - elapsed + send_every_s  # pacing to the simulated clock, in ticks
                if stop is not None:
                    if stop.wait(pause):
                        break
                else:
                    time.sleep(pause)
            elif stop is not None and stop.is_set():
                break
            producer.send(record.key, record.value)
            report.records += 1
            report.bytes += len(record.value)
            report.kinds[record.kind] += 1
            if on_record is not None:
                on_record(record)
            if count is not None and report.records >= count:
                break
            if progress is not None and now >= next_progress:
                report.seconds = now - started
                progress(report)
                next_progress = now + progress_every_s
    finally:
        producer.close()
        report.seconds = time.monotonic() - started
    return report
