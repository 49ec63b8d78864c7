"""Kappa replay throughput: the log replayed through the speed layer's code, against the live speed layer
and a bare consume-and-parse loop over the same records, in the same run; then Kappa, Lambda and a lake
recompute compared view by view.

A fresh topic is filled with simulator traffic (late, duplicate, cross-partition and malformed records),
the bare loop and the live speed layer read it (``benchmarks.freshness.measure_throughput``), the lake
sink writes it to the lake, and ``lambdactl kappa`` plans, replays and verifies a Kappa set at the
position the live (speed-only) views reflect. The replay runs in ``workers`` processes (one per core by
default, as ``lambdactl kappa replay`` does), each reading a share of the partitions; the bare loop is
one process. Rates exclude start-up and closing, as the bare loop's does: the live layer's consumer group
join, and the replay's process starts (its processes begin reading together once all are connected) and
closes (its rate ends with the last publish of any of its processes).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from batch_layer.lake import Lake
from batch_layer.lake_sink import LakeSink
from benchmarks.freshness import isolated_settings, measure_throughput
from lambda_contracts.plumbing.kafka import events_end_offsets
from lambda_contracts.settings import Settings
from lambdactl.kappa import Comparison, default_workers, plan_replay, replay, report_lines, verify

TARGET_RATIO = 0.8
SET_NAME = "bench"


@dataclass(frozen=True)
class ReplayFigures:
    events: int
    bare_events_per_s: float
    speed_events_per_s: float
    replay_events_per_s: float
    workers: int
    comparisons: list[Comparison]

    @property
    def identical(self) -> bool:
        return all(c.identical for c in self.comparisons)


def sink_all(settings: Settings, show: Callable[[str], None], timeout_s: float = 600) -> None:
    """Run the lake sink until the lake's committed offsets reach the topic's end."""
    lake, ends = Lake(settings.lake_path, settings.events_topic), events_end_offsets(settings)
    stop = threading.Event()
    sink = threading.Thread(target=LakeSink(settings).run, args=(stop,))
    sink.start()
    deadline = time.monotonic() + timeout_s
    try:
        while lake.committed_offsets(ends) != ends:
            if time.monotonic() > deadline or not sink.is_alive():
                raise RuntimeError(f"the lake did not reach {ends} within {timeout_s:.0f} s: see the sink's log")
            stop.wait(0.2)  # polling the lake's own commit log, the signal a batch run reads too
    finally:
        stop.set()
        sink.join()
    show(f"  lake holds offsets {sum(ends.values()):,} (every partition to its end)")


def run_replay_benchmark(
    settings: Settings, events: int = 300_000, show: Callable[[str], None] = print, workers: int | None = None
) -> ReplayFigures:
    workers = workers or default_workers()
    with tempfile.TemporaryDirectory(prefix="replay-") as folder:
        isolated = isolated_settings(settings, Path(folder))
        show(f"1. {events:,} events: a bare consume-and-parse loop, then the live speed layer")
        live = measure_throughput(isolated, events, show)
        show("2. the lake sink writes them to the lake (for the recompute)")
        sink_all(isolated, show)
        show(f"3. Kappa: replay the log from offset 0 through the speed layer's code, in {workers} process(es)")
        plan = plan_replay(isolated, SET_NAME)
        show(f"  target: {sum(plan.target.values()):,} offsets, what the live views reflect")
        progress = replay(isolated, SET_NAME, workers=workers, show=show)
        show(
            f"  replayed {progress.describe()}: last publish after {progress.published_s or 0:,.2f} s, "
            f"processes closed after {progress.seconds:,.2f} s (start-up included)"
        )
        show("4. Kappa, Lambda and the lake recompute, view by view")
        comparisons = verify(isolated, SET_NAME)
    return ReplayFigures(
        events, live.bare_events_per_s, live.speed_events_per_s, progress.events_per_s, workers, comparisons
    )


def report(f: ReplayFigures) -> list[str]:
    ratio = f.replay_events_per_s / f.bare_events_per_s
    return [
        *report_lines(f.comparisons)[:-1],
        f"bare consume+json.loads {f.bare_events_per_s:,.0f} events/s; live speed layer "
        f"{f.speed_events_per_s:,.0f} events/s (one process each); Kappa replay {f.replay_events_per_s:,.0f} events/s "
        f"({f.workers} process{'es' if f.workers > 1 else ''})",
        f"replay / bare {ratio:.2f} (target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'NOT met'}); "
        f"replay / live speed layer {f.replay_events_per_s / f.speed_events_per_s:.2f}",
        f"replay_events_per_s={f.replay_events_per_s:.0f} ratio_to_bare={ratio:.2f} "
        f"identical={'true' if f.identical else 'false'}",
    ]
