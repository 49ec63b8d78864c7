"""The speed worker publishes every ``speed_publish_ms`` from start to start, whatever a publish costs.

Freshness is half the publish period plus the publish itself; a period that stretched by the time of
each publish (and of the extra passes that copies waiting on another partition need) or by a poll
that waits past the due time made the marker events of the freshness benchmark hundreds of
milliseconds staler. A fake clock makes the cadence exact to check.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lambda_contracts.plumbing.event_ids import IdSet
from lambda_contracts.settings import Settings
from speed_layer.worker import POLL_TIMEOUT_MS, SpeedWorker

pytestmark = pytest.mark.unit

PUBLISH_MS = 500
PASS_S = 0.15
"""What one publish pass costs on the fake clock."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class IdleConsumer:
    """A consumer with nothing to read: a poll waits its whole timeout (on the fake clock)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.timeouts: list[tuple[float, int]] = []

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def subscribe(self, topics: list[str]) -> None:
        pass

    def assignment(self) -> set[Any]:
        return set()

    def poll(self, timeout_ms: int) -> dict[Any, Any]:
        self.timeouts.append((self.clock.now, timeout_ms))
        self.clock.now += timeout_ms / 1000
        return {}

    def close(self, autocommit: bool) -> None:
        pass


def test_publishes_keep_their_cadence_through_extra_passes_and_polls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(time, "monotonic", clock.monotonic)  # the worker module calls time.monotonic()
    consumer = IdleConsumer(clock)
    settings = Settings(data_dir=tmp_path, speed_publish_ms=PUBLISH_MS)
    worker = SpeedWorker(settings, consumer=consumer)
    stop = threading.Event()
    passes: list[float] = []

    def publish_pass() -> IdSet:  # the first step of every publish pass: count it and let it take time
        passes.append(clock.now)
        clock.now += PASS_S
        if len(passes) >= 12:
            stop.set()
        return IdSet()

    def publish_waiting() -> None:
        worker._publish()  # a further pass, as when rows waited at a copy of an unpublished count

    monkeypatch.setattr(worker, "_tail_others", publish_pass)
    monkeypatch.setattr(worker, "_publish_waiting", publish_waiting)
    worker.run(stop)

    cadence = passes[0:-1:2]  # each cadence's first pass (the last one is the final publish on stop)
    periods = [round(later - earlier, 6) for earlier, later in itertools.pairwise(cadence)]
    assert periods == [PUBLISH_MS / 1000] * len(periods)
    for polled_at, timeout_ms in consumer.timeouts:
        due = min((start for start in cadence if start >= polled_at), default=None)
        if due is not None:
            assert polled_at + timeout_ms / 1000 <= due + 1e-9, "a poll waited past the publish due"
        assert 0 <= timeout_ms <= POLL_TIMEOUT_MS
