"""Watching for marker readings from a process of its own, as a dashboard would.

Produce-to-visible is the time from a marker's send until a reader sees it. The reader used to poll
from a thread of the benchmark's own process, which also runs the simulators and the producer at
10,000 events/s: every poll and every file it read waited for Python's lock behind them, so a marker
looked later than it was visible. Here the reader runs in a separate process (spawned), notes on
the machine's monotonic clock when it first sees each marker and when each partition's speed publish
reached which offset (from the snapshot's own publish time), and hands both back when told which
markers were sent.
"""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.synchronize import Event as EventType
from typing import Protocol

from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import PartitionSnapshot, current_sequence, snapshot_path

POLL_PAUSE_S = 0.01
READY_TIMEOUT_S = 60.0
LAST_MARKERS_TIMEOUT_S = 10.0
"""How long the watcher keeps looking for markers not seen yet once production ended."""


class MarkerPoll(Protocol):
    """Reads the marker devices visible now; picklable, so it can be handed to the watcher process."""

    def __call__(self, settings: Settings) -> Iterable[str]: ...

    def close(self) -> None: ...


@dataclass
class Publishes:
    """Per partition, (next offset, monotonic time) of each speed publish seen."""

    settings: Settings
    by_partition: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    _sequences: dict[int, int] = field(default_factory=dict)
    _wall_to_monotonic: float = field(default_factory=lambda: time.monotonic() - time.time())

    def look(self) -> None:
        """Note every new snapshot: looked at often enough to see each publish (one per ``speed_publish_ms``)."""
        root = self.settings.speed_views_path
        for partition in range(self.settings.topic_partitions):
            sequence = current_sequence(root, partition)
            if not sequence or self._sequences.get(partition) == sequence:
                continue
            try:
                snapshot = PartitionSnapshot.from_json(snapshot_path(root, partition, sequence).read_text())
            except FileNotFoundError:  # replaced and removed since: the next look sees its successor
                continue
            self._sequences[partition] = sequence
            published = datetime.fromisoformat(snapshot.published_at).timestamp() + self._wall_to_monotonic
            self.by_partition.setdefault(partition, []).append((snapshot.next_offset, published))

    def first_past(self, partition: int, offset: int) -> float | None:
        """When a publish of ``partition`` first reached past ``offset``."""
        return next((at for next_offset, at in self.by_partition.get(partition, []) if next_offset > offset), None)


Seen = dict[str, float]
Sightings = tuple[Seen, dict[int, list[tuple[int, float]]]]


def _watch(
    poll: MarkerPoll,
    settings: Settings,
    ready: EventType,
    sent: multiprocessing.Queue[list[str]],
    out: multiprocessing.Queue[Sightings],
) -> None:
    """The watcher process: poll until the sent markers are all seen (or the time for the last ones is up)."""
    seen: Seen = {}
    publishes = Publishes(settings)
    expected: set[str] | None = None
    deadline = float("inf")
    try:
        while expected is None or (not expected <= seen.keys() and time.monotonic() < deadline):
            devices = poll(settings)
            now = time.monotonic()
            for device in devices:
                seen.setdefault(device, now)
            publishes.look()
            ready.set()
            if expected is None:
                try:
                    expected = set(sent.get_nowait())
                    deadline = time.monotonic() + LAST_MARKERS_TIMEOUT_S
                except queue.Empty:
                    pass
            time.sleep(POLL_PAUSE_S)
    finally:
        poll.close()
        out.put((seen, publishes.by_partition))


class MarkerWatcher:
    """Starts the watcher process, waits until it polls, and collects what it saw."""

    def __init__(self, poll: MarkerPoll, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Event()
        self._sent: multiprocessing.Queue[list[str]] = context.Queue()
        self._out: multiprocessing.Queue[Sightings] = context.Queue()
        self._process = context.Process(
            target=_watch, args=(poll, settings, self._ready, self._sent, self._out), daemon=True
        )
        self._settings = settings

    def start(self) -> None:
        self._process.start()
        if not self._ready.wait(READY_TIMEOUT_S):
            self.stop()
            raise RuntimeError(
                f"the marker watcher did not poll within {READY_TIMEOUT_S:.0f} s (exit {self._process.exitcode})"
            )

    def finish(self, sent: Iterable[str]) -> tuple[Seen, Publishes]:
        """Tell it which markers were sent; what it saw once it has seen them all, or given up on the rest."""
        self._sent.put(list(sent))
        seen, by_partition = self._out.get(timeout=LAST_MARKERS_TIMEOUT_S + READY_TIMEOUT_S)
        self._process.join(timeout=30)
        return seen, Publishes(self._settings, by_partition)

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=30)


@dataclass
class Acknowledgements:
    """When the producer's acknowledgement of each marker came, with its partition and offset."""

    at: dict[str, tuple[float, int, int]] = field(default_factory=dict)

    def of(self, marker: str) -> Callable[[int, int], None]:
        def record(partition: int, offset: int) -> None:
            self.at[marker] = (time.monotonic(), partition, offset)

        return record

    def stage_medians(self, sent: dict[str, float], seen: Seen, publishes: Publishes) -> dict[str, float]:
        """Medians of a marker's time to the broker, then into a speed publish, then until seen."""
        to_broker, to_publish, to_visible = [], [], []
        for marker, (acked, partition, offset) in self.at.items():
            published = publishes.first_past(partition, offset)
            if published is None or marker not in seen:
                continue
            to_broker.append(acked - sent[marker])
            to_publish.append(published - acked)
            to_visible.append(seen[marker] - published)
        if not to_broker:
            return {"to_broker": float("nan"), "to_publish": float("nan"), "to_visible": float("nan")}
        return {
            "to_broker": statistics.median(to_broker),
            "to_publish": statistics.median(to_publish),
            "to_visible": statistics.median(to_visible),
        }
