"""Chaos soak: the whole platform under random SIGKILLs, its merged views checked every second.

A three-node local broker cluster (replication 3, min ISR 2), simulators with late events,
redeliveries (on the same partition and, resent under another key, on another one) and malformed
records; a lake sink, two speed workers and serve as processes; a batch run every minute. At random
instants one of them is SIGKILLed: a broker node (restarted after a few seconds), the lake sink, a
speed worker, serve (each restarted at once, as a supervisor would), a speed outage (one worker killed, the
other frozen until the next batch version is published, then thawed), a batch run in the middle of
its Spark job or in the middle of writing and publishing its version (started again under the same
run id, as Airflow's retry would).

Every second the merged views are read through the serving layer's Python API and compared with an
independent recompute (``OracleViews``: pyarrow aggregates straight from the view declarations, no
SQL) of exactly the valid records below the offsets that snapshot reflects, each ``event_id`` once.
At the end: records acknowledged to the producer that are missing from the topic or the lake
(``lost``) or present twice (``duplicated``).
"""

from __future__ import annotations

import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from kafka import TopicPartition

from batch_layer.lake import Lake
from benchmarks.cpu_quota import CpuQuota
from infra.local_broker import LocalBroker
from infra.topics import ensure_topics
from lambda_contracts.columns import events_to_arrow
from lambda_contracts.intake import split
from lambda_contracts.manifest import current_version
from lambda_contracts.plumbing.kafka import admin_client, events_end_offsets, new_consumer, quiet_kafka_logs
from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from lambda_contracts.topics import platform_topics
from lambda_contracts.views import VIEWS, View, canonical_text
from serving_layer.query import serving_connection
from sources.producer import BatchingProducer
from sources.run import RunReport, build_simulators, run_simulation

KINDS = ("broker", "lake-sink", "speed", "speed-outage", "serve", "batch-spark", "batch-publish")
SPEED_OUTAGE_S = (5.0, 15.0)
"""How long a speed worker killed in an outage stays down once the other is thawed."""
OUTAGE_PUBLISH_WAIT_S = 120.0
"""How long an outage waits for the next batch version before it ends anyway."""
BATCH_EVERY_S = 60.0
BROKER_DOWN_S = (4.0, 10.0)
CHECKS_BEHIND = 30
"""Readings that may wait for their check: beyond, reading waits (memory stays bounded)."""
READERS = 3
"""Reads of the merged views that may run at once (one starts every second)."""
DEFERRED = 300
"""Readings kept until the oracle has read the records they reflect (a broker node down holds it back);
beyond, the oldest is given up and counted as unchecked (memory stays bounded)."""
DEFERRED_LIMIT_S = 120.0
"""How long readings still deferred when sampling ends wait for the oracle."""


@dataclass
class ChaosFigures:
    kills: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    mismatched: int = 0
    lost: int = 0
    duplicated: int = 0
    max_freshness_s: float = 0.0
    produced: int = 0
    reflected: int = 0
    batch_versions: int = 0
    batch_failures: int = 0
    batch_only_samples: int = 0
    """Samples where no partition's speed rows were used (a stranded partition, or none published yet)."""
    unchecked: int = 0
    """Readings never compared: the oracle never read every record they reflect in time."""
    exits: Counter[str] = field(default_factory=Counter)
    """Services that exited without being killed (restarted, as the demo and compose do)."""
    evidence: Path | None = None
    """A kept soak's folder (``keep_data``): each mismatch is written down there, the first with the state."""
    taken_from_stale_owners: int = 0
    """Times a speed worker let go of a partition it still held because another had published it since."""
    mismatch_notes: list[str] = field(default_factory=list)
    sample_seconds: list[tuple[float, float]] = field(default_factory=list)
    """Per sample: reading the merged views, recomputing them."""

    def last_line(self) -> str:
        return (
            f"kills={sum(self.kills.values())} samples={self.samples} mismatched_samples={self.mismatched} "
            f"lost={self.lost} duplicated={self.duplicated} max_freshness_s={self.max_freshness_s:.1f}"
        )


# -- the independent recompute ------------------------------------------------------------------------


class OracleViews:
    """Every valid record of the topic, read as it arrives; views of any prefix, computed with pyarrow."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tables: dict[int, list[pa.Table]] = {p: [] for p in range(settings.topic_partitions)}
        self.read_to: dict[int, int] = dict.fromkeys(range(settings.topic_partitions), 0)
        self.appended: dict[int, list[tuple[int, float]]] = {p: [] for p in range(settings.topic_partitions)}
        """Per partition, (offset, append time in seconds) of every record, for freshness."""
        self._lock = threading.Lock()
        self._events = events_to_arrow([])
        """Every valid record read so far, in one table (new reads are appended at the next ``rows``)."""

    def follow(self, stop: threading.Event) -> None:
        consumer = new_consumer(self.settings, group_id=None, max_poll_records=5000)
        tps = [TopicPartition(self.settings.events_topic, p) for p in range(self.settings.topic_partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        try:
            while not stop.is_set():
                for tp, records in consumer.poll(timeout_ms=200).items():
                    accepted, _ = split(records, JsonSerde(), rejected_by="oracle")  # pydantic, record by record
                    with self._lock:
                        self._tables[tp.partition].append(events_to_arrow(accepted))
                        self.appended[tp.partition].extend((r.offset, r.timestamp / 1000) for r in records)
                        self.read_to[tp.partition] = records[-1].offset + 1
        finally:
            consumer.close(autocommit=False)

    @classmethod
    def of(cls, events: pa.Table, partitions: int = 6) -> OracleViews:
        """An oracle over events already read (for checking the oracle itself)."""
        oracle = cls(Settings(topic_partitions=partitions))
        oracle._tables[0].append(events)
        return oracle

    def covers(self, reflected: dict[int, int]) -> bool:
        with self._lock:
            return all(self.read_to[p] >= offset for p, offset in reflected.items())

    def rows(self, reflected: dict[int, int]) -> dict[str, Counter[tuple[str, ...]]]:
        with self._lock:
            parts = [t for p in self._tables for t in self._tables[p]]
            for partition in self._tables:
                self._tables[partition] = []
        self._events = pa.concat_tables([self._events, *parts]).combine_chunks()  # few chunks: fast kernels
        events = self._events
        events = events.filter(pc.less(events.column("kafka_offset"), _per_partition(events, reflected)))
        events = _first_copies(events)
        return {view.name: _aggregate(events, view) for view in VIEWS}

    def oldest_unreflected_age(self, reflected: dict[int, int], now: float) -> float:
        """Seconds since the oldest record the views do not reflect yet was appended (0: all reflected)."""
        ages = []
        with self._lock:
            for partition, offset in reflected.items():
                appended = self.appended[partition]
                if offset < len(appended):
                    ages.append(now - appended[offset][1])
        return max(ages, default=0.0)


def _per_partition(events: pa.Table, reflected: dict[int, int]) -> pa.Array:
    """For each row, the reflected offset of its partition."""
    partitions = events.column("kafka_partition").to_numpy(zero_copy_only=False)
    top = max(max(reflected, default=0), int(partitions.max(initial=0)))
    limits = np.array([reflected.get(p, 0) for p in range(top + 1)], np.int64)
    return pa.array(limits[partitions], pa.int64())


def _first_copies(events: pa.Table) -> pa.Table:
    """Each event_id once: its first copy by (partition, offset)."""
    order = pc.sort_indices(events, [("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    events = events.take(order).append_column("row", pa.array(range(events.num_rows), pa.int64()))
    first = events.group_by("event_id").aggregate([("row", "min")]).column("row_min")
    return events.take(first).drop_columns(["row"])


_GRAIN = {"minute": "minute", "hour": "hour", "day": "day"}


def _aggregate(events: pa.Table, view: View) -> Counter[tuple[str, ...]]:
    """The view's served rows over ``events`` with Arrow's group-by: independent of the views' SQL."""
    mine = events.filter(pc.is_in(events.column("event_type"), pa.array(view.event_types)))
    for condition in view.filters:
        mine = mine.filter(pc.is_in(mine.column(condition.column), pa.array(condition.values)))
    bucket = pc.floor_temporal(mine.column("event_time"), unit=_GRAIN[view.grain])
    counted = pa.table({"bucket": bucket} | {d.name: mine.column(d.source) for d in view.dimensions})
    aggregations = []
    for i, measure in enumerate(view.measures):
        values = mine.column(measure.column or "event_id")
        function: str = measure.aggregate  # Arrow's hash aggregates bear the declarations' names
        if measure.when is not None:  # only its event type counts: a 1 or the value there, 0 elsewhere
            chosen = pc.equal(mine.column("event_type"), measure.when)
            values, function = pc.if_else(chosen, 1 if measure.aggregate == "count" else values, 0), "sum"
        counted = counted.append_column(f"m{i}", values)
        aggregations.append((f"m{i}", function))
    keys = ["bucket", *(d.name for d in view.dimensions)]
    grouped = counted.group_by(keys).aggregate(aggregations)
    ordered = grouped.select([*keys, *(f"{column}_{function}" for column, function in aggregations)])
    return text_rows(tuple(row.values()) for row in ordered.to_pylist())


def text_rows(rows: Iterable[Sequence[Any]]) -> Counter[tuple[str, ...]]:
    """Rows as a multiset of text tuples: equal values, equal text, whatever engine produced them."""
    return Counter(tuple(canonical_text(v) for v in row) for row in rows)


@dataclass(frozen=True)
class MergedReading:
    reflected: dict[int, int]
    views: dict[str, Counter[tuple[str, ...]]]
    speed_used: bool
    """Whether any partition's speed rows were merged."""
    described: str
    """Per partition: batch version, cutoff, the speed layer's next offset, whether its rows are used."""


def merged_rows(settings: Settings) -> MergedReading:
    """One resolved serving snapshot: the offsets it reflects, every merged view's rows, and its status
    (per partition: batch version, cutoff, speed's next offset, whether speed rows are used) for notes."""
    connection = serving_connection(settings)
    try:
        status = connection.sql(
            "SELECT kafka_partition, reflected_offset, batch_version, batch_cutoff, speed_next_offset, speed_used "
            "FROM serving_status ORDER BY kafka_partition"
        ).fetchall()
        views = {}
        for view in VIEWS:
            columns = ", ".join(view.served_columns)
            rows = connection.sql(f"SELECT {columns} FROM {view.name}").fetchall()
            views[view.name] = text_rows(rows)
    finally:
        connection.close()
    described = "; ".join(f"p{p}: v{v} cutoff {c} speed {n} {'used' if u else 'unused'}" for p, _, v, c, n, u in status)
    reflected = {int(row[0]): int(row[1]) for row in status}
    return MergedReading(reflected, views, any(row[5] for row in status), described)


# -- the platform under test --------------------------------------------------------------------------


class Platform:
    """The platform's processes, restarted after every kill."""

    def __init__(self, settings: Settings, folder: Path, cluster: LocalBroker) -> None:
        self.settings = settings
        self.folder = folder
        self.cluster = cluster
        self.env = settings.child_environment()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.batch: subprocess.Popen[bytes] | None = None
        self.batch_runs = 0
        self.down_until: dict[str, float] = {}
        """Service -> the monotonic instant its outage ends (started again then, by ``restart_exited``)."""
        self.quotas: dict[str, CpuQuota] = {}
        """Service -> the CPU quota its process runs under (the overload benchmark's smaller machine)."""

    def start(self, name: str) -> None:
        command = {"lake-sink": ["lake-sink"], "speed-1": ["speed"], "speed-2": ["speed"], "serve": ["serve"]}[name]
        self.processes[name] = self._launch(name, command)
        if name in self.quotas:
            self.quotas[name].add(self.processes[name].pid)

    def _launch(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "lambdactl", *command], env=self.env, stdout=out, stderr=out)

    def stop_one(self, name: str) -> None:
        """Stop one service cleanly (it finishes what it holds), for a measure that needs it gone."""
        self.processes[name].terminate()
        _wait_or_kill(self.processes[name])

    def restart_exited(self) -> list[str]:
        """Start again the services that exited on their own (as the demo and compose do), and those whose
        outage is over; the names of the former."""
        now = time.monotonic()
        for name in [name for name, until in self.down_until.items() if until <= now]:
            del self.down_until[name]
            self.start(name)
        exited = [
            name
            for name, process in self.processes.items()
            if process.poll() is not None and name not in self.down_until
        ]
        for name in exited:
            self.start(name)
        return exited

    def kill(self, name: str, down_s: float = 0.0) -> None:
        """SIGKILL a service and start it again at once (a supervisor's restart), or after ``down_s`` (an
        outage: a host down for a while), from ``restart_exited``."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()
        if down_s:
            self.down_until[name] = time.monotonic() + down_s
        else:
            self.start(name)

    def start_batch(self, run_id: str) -> subprocess.Popen[bytes]:
        log = self.folder / f"batch-{run_id}.log"
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "lambdactl", "batch", "advance", "--run-id", run_id],
                env=self.env,
                stdout=out,
                stderr=out,
            )

    def run_batches(self, stop: threading.Event, kills: list[str], figures: ChaosFigures, rng: random.Random) -> None:
        """A batch run every ``BATCH_EVERY_S``; a failed or killed run is retried at once under its run id.

        ``kills`` holds the batch kills asked for (``batch-spark``, ``batch-publish``): the next run is
        killed inside that step, seen in its log, which is read every few milliseconds (the publish
        step lasts well under a second).
        """
        marks = {"batch-spark": "computing version", "batch-publish": "writing version"}
        next_run = time.monotonic() + 20.0
        while not stop.is_set() or kills:  # kills asked for still land after the soak's last second
            if time.monotonic() < next_run and not kills:
                stop.wait(0.2)
                continue
            self.batch_runs += 1
            run_id = f"chaos-{self.batch_runs}"
            while True:
                kind = kills[0] if kills else None
                self.batch = self.start_batch(run_id)
                killed = self._kill_inside(self.batch, run_id, marks[kind], rng) if kind else False
                code = self.batch.wait()
                if killed and kind:
                    kills.remove(kind)
                    figures.kills[kind] += 1
                elif code == 0:
                    figures.batch_versions += 1
                    break
                else:
                    figures.batch_failures += 1  # retried under the same run id, as Airflow would
                    if stop.is_set():
                        break
            next_run = time.monotonic() + BATCH_EVERY_S

    def _kill_inside(self, run: subprocess.Popen[bytes], run_id: str, mark: str, rng: random.Random) -> bool:
        log = self.folder / f"batch-{run_id}.log"
        seen = log.stat().st_size  # a retry appends to the same log: only what this run writes counts
        while run.poll() is None:
            with log.open("rb") as text:
                text.seek(seen)
                if mark.encode() in text.read():
                    time.sleep(rng.uniform(0.0, 0.1))  # an instant inside the step
                    if run.poll() is not None:
                        return False
                    run.send_signal(signal.SIGKILL)
                    run.wait()
                    return True
            time.sleep(0.005)  # reading the run's own log: the step's line is the signal
        return False

    def stop(self) -> None:
        for process in [*self.processes.values(), *([self.batch] if self.batch else [])]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.processes.values(), *([self.batch] if self.batch else [])]:
            _wait_or_kill(process)


def _wait_or_kill(process: subprocess.Popen[bytes]) -> None:
    """Wait for a process asked to stop; kill it if it has not stopped within a minute."""
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_chaos(
    settings: Settings,
    *,
    minutes: float = 10.0,
    seed: int = 7,
    rate: float = 100.0,
    cross_partition_share: float = 0.5,
    kinds: tuple[str, ...] = KINDS,
    keep_data: Path | None = None,
    show: Callable[[str], None] = print,
) -> ChaosFigures:
    """``rate`` is records per second per source (three sources); ``cross_partition_share`` of the
    redeliveries (5 % of records) are resent under another key, so land on another partition.
    ``keep_data``: an empty or new folder to run in and leave behind (every component's log, the lake,
    the views and the brokers' logs), to look into a mismatch; otherwise a temporary one."""
    figures = ChaosFigures()
    rng = random.Random(seed)
    with _soak_folder(keep_data) as folder:
        figures.evidence = folder if keep_data is not None else None
        settings = _soak_settings(settings, folder)
        cluster = LocalBroker(settings)
        cluster.start()
        stop = threading.Event()
        platform = Platform(settings, folder, cluster)
        try:
            with admin_client(settings) as admin:
                ensure_topics(admin, platform_topics(settings))
            oracle = OracleViews(settings)
            threads = [threading.Thread(target=oracle.follow, args=(stop,), daemon=True)]
            report: list[RunReport] = []
            producing = threading.Event()
            simulators = build_simulators(
                serde=JsonSerde(),
                start=datetime.now(UTC),
                seed=seed,
                rate=rate,
                late_share=0.2,
                max_lateness=timedelta(hours=2),
                duplicate_share=0.05,
                cross_partition_share=cross_partition_share,
                malformed_share=0.01,
            )
            producer = BatchingProducer(settings, settings.events_topic)
            threads.append(
                threading.Thread(
                    target=lambda: report.append(run_simulation(simulators, producer, stop=producing, realtime=True)),
                    daemon=True,
                )
            )
            for thread in threads:
                thread.start()
            for name in ("lake-sink", "speed-1", "speed-2", "serve"):
                platform.start(name)
            _soak(
                settings,
                platform,
                oracle=oracle,
                figures=figures,
                rng=rng,
                seconds=minutes * 60,
                kinds=kinds,
                show=show,
            )
            producing.set()
            threads[1].join(timeout=300)
            figures.produced = report[0].records if report else 0
            _settle(settings, platform, oracle, figures, show)
            _count_losses(settings, figures)
        finally:
            stop.set()
            platform.stop()
            cluster.stop()
        figures.taken_from_stale_owners = _logged(folder.glob("speed-*.log"), TAKEN_FROM_STALE_OWNER)
    return figures


TAKEN_FROM_STALE_OWNER = b"was published by another worker"
"""What a speed worker logs when it finds a partition of its own published by another one (the group gave it
away while this worker did not know yet) and lets go of it."""


@contextmanager
def _soak_folder(keep: Path | None) -> Iterator[Path]:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
            yield Path(scratch)
        return
    if keep.exists() and any(keep.iterdir()):
        raise ValueError(f"{keep} is not empty: give a new or empty folder to keep the soak's data in")
    keep.mkdir(parents=True, exist_ok=True)
    yield keep


def _logged(logs: Iterable[Path], line: bytes) -> int:
    """How many lines of ``logs`` hold ``line``."""
    return sum(text.count(line) for text in (path.read_bytes() for path in logs))


def _soak_settings(settings: Settings, folder: Path) -> Settings:
    return settings.model_copy(
        update={
            "data_dir": folder,
            "broker_nodes": 3,
            "topic_replication_factor": 3,
            "topic_min_insync_replicas": 2,
            "lake_flush_seconds": 1.0,
            "speed_segment_seconds": 2.0,
            "speed_prune_grace_seconds": 10.0,
            "consumer_session_timeout_ms": 6000,
            "speed_stale_after_seconds": 30.0,
            "speed_rebuild_memory_events": 500,  # rebuilds under kills spill to disk, not only under load
        }
    )


def _soak(
    settings: Settings,
    platform: Platform,
    *,
    oracle: OracleViews,
    figures: ChaosFigures,
    rng: random.Random,
    seconds: float,
    kinds: tuple[str, ...],
    show: Callable[[str], None],
) -> None:
    """Kill by plan for ``seconds`` while batch runs and samples go on in threads of their own."""
    started = time.monotonic()
    plan = kill_plan(kinds, seconds, rng)
    instants = sorted(rng.uniform(10.0, max(10.0, 0.75 * seconds)) for _ in plan)
    done = threading.Event()
    batch_kills: list[str] = []
    threads = [
        threading.Thread(target=platform.run_batches, args=(done, batch_kills, figures, random.Random(rng.random()))),
        threading.Thread(target=_sample_every_second, args=(settings, oracle, figures, done)),
    ]
    for thread in threads:
        thread.start()
    try:
        for kind, instant in zip(plan, instants, strict=True):
            if _wait_restarting(platform, done, started + instant, figures, show):
                break
            show(f"  {time.monotonic() - started:5.0f} s: kill {kind}")
            if kind == "broker":
                node = platform.cluster.node(rng.randrange(1, 4))
                node.kill()
                figures.kills["broker"] += 1
                time.sleep(rng.uniform(*BROKER_DOWN_S))  # the node stays down a while (no signal to wait for)
                with quiet_kafka_logs():
                    platform.cluster.start()  # waits until the node answers again
            elif kind in ("lake-sink", "serve"):
                platform.kill(kind)
                figures.kills[kind] += 1
            elif kind == "speed":
                platform.kill(rng.choice(["speed-1", "speed-2"]))
                figures.kills["speed"] += 1
            elif kind == "speed-outage":
                _speed_outage(settings, platform, rng)
                figures.kills["speed-outage"] += 1
            else:
                batch_kills.append(kind)  # the batch thread kills its next run inside that step
        _wait_restarting(platform, done, started + seconds, figures, show)
    finally:
        done.set()
        for thread in threads:
            thread.join()


def _speed_outage(settings: Settings, platform: Platform, rng: random.Random) -> None:
    """One speed worker killed, the other frozen (SIGSTOP: a process pause) until the next batch version is
    published: no worker holds the partitions across the publish, so the thawed one takes the killed one's
    partitions reconciled with the version before, and rebuilds them beside its own, which it reconciles
    late; the killed one comes back a few seconds later and the group deals the partitions out again."""
    killed, frozen = rng.sample(["speed-1", "speed-2"], 2)
    version = current_version(settings.batch_views_path)
    platform.kill(killed, down_s=OUTAGE_PUBLISH_WAIT_S + 60.0)  # started again below, once thawed
    platform.processes[frozen].send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + OUTAGE_PUBLISH_WAIT_S
        while current_version(settings.batch_views_path) == version and time.monotonic() < deadline:
            time.sleep(0.2)  # the batch thread publishes; its CURRENT file is the signal
    finally:
        platform.processes[frozen].send_signal(signal.SIGCONT)
    platform.down_until[killed] = time.monotonic() + rng.uniform(*SPEED_OUTAGE_S)


def kill_plan(kinds: Sequence[str], seconds: float, rng: random.Random) -> list[str]:
    """What to kill, in order: one kill per 20 s (at least one of each kind), every kind twice when there is
    room for it and once otherwise, the rest chosen at random."""
    if not kinds:
        return []
    kills = max(len(kinds), int(seconds / 20))
    plan = list(kinds) * (2 if kills >= 2 * len(kinds) else 1)
    rng.shuffle(plan)
    return plan + [rng.choice(kinds) for _ in range(kills - len(plan))]


def _wait_restarting(
    platform: Platform, done: threading.Event, until: float, figures: ChaosFigures, show: Callable[[str], None]
) -> bool:
    """Wait until the monotonic instant ``until``, restarting every second the services that exited on their own
    (counted: the soak asks that nothing crashes); True if the soak was ended meanwhile."""
    while not done.wait(timeout=max(0.0, min(1.0, until - time.monotonic()))):
        for name in platform.restart_exited():
            figures.exits[name] += 1
            show(f"        {name} exited on its own (see {name}.log); started again")
        if time.monotonic() >= until:
            return False
    return True


@dataclass(frozen=True)
class Sample:
    """One read of the merged views (or why it failed), to be checked against the oracle."""

    reading: MergedReading | None
    error: str = ""
    read_at: float = 0.0
    """Wall-clock time when the read ended: the freshness of what it shows is measured there."""
    read_s: float = 0.0


def _sample_every_second(settings: Settings, oracle: OracleViews, figures: ChaosFigures, done: threading.Event) -> None:
    """Start a read of the merged views every second; each reading is checked against the recompute in a
    thread of its own, in the order the reads started. A read takes ~1.2 s while everything runs, so two
    may overlap (each resolves its own snapshot), and a slow recompute does not thin the readings."""
    readings: queue.Queue[Future[Sample] | None] = queue.Queue(maxsize=CHECKS_BEHIND)
    checker = threading.Thread(target=_check_readings, args=(oracle, figures, readings))
    checker.start()
    done.wait(timeout=5.0)
    try:
        with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="chaos-read") as readers:
            while not done.is_set():
                began = time.monotonic()
                readings.put(readers.submit(_read, settings))  # waits while checks are CHECKS_BEHIND behind
                done.wait(timeout=max(0.0, 1.0 - (time.monotonic() - began)))
    finally:
        readings.put(None)
        checker.join()


def _check_readings(oracle: OracleViews, figures: ChaosFigures, readings: queue.Queue[Future[Sample] | None]) -> None:
    """Check readings in order as the oracle covers what they reflect; one it does not cover yet (its
    consumer held back by a broker node that is down) waits, and later ones are checked meanwhile."""
    deferred: list[Sample] = []
    while (reading := readings.get()) is not None:
        deferred = _check_covered(oracle, figures, [*deferred, reading.result()])
        if len(deferred) > DEFERRED:
            figures.unchecked += 1
            deferred.pop(0)
    deadline = time.monotonic() + DEFERRED_LIMIT_S
    while deferred and time.monotonic() < deadline:
        deferred = _check_covered(oracle, figures, deferred)
        time.sleep(0.1)  # the oracle's consumer reading on: its offsets are the signal
    figures.unchecked += len(deferred)


def _check_covered(oracle: OracleViews, figures: ChaosFigures, samples: list[Sample]) -> list[Sample]:
    """Check the samples the oracle covers; the rest, still to check."""
    waiting = []
    for sample in samples:
        if sample.reading is not None and not oracle.covers(sample.reading.reflected):
            waiting.append(sample)
        else:
            _check(oracle, figures, sample)
    return waiting


def _sample(settings: Settings, oracle: OracleViews, figures: ChaosFigures) -> None:
    sample = _read(settings)
    deadline = time.monotonic() + DEFERRED_LIMIT_S
    while sample.reading is not None and not oracle.covers(sample.reading.reflected):
        if time.monotonic() > deadline:
            figures.unchecked += 1
            return
        time.sleep(0.05)  # the oracle's consumer catching up to the offsets the snapshot reflects
    _check(oracle, figures, sample)


def _read(settings: Settings) -> Sample:
    began = time.monotonic()
    try:
        reading = merged_rows(settings)
    except Exception as error:  # a read that fails is a finding too
        return Sample(None, error=repr(error))
    return Sample(reading, read_at=time.time(), read_s=time.monotonic() - began)


def _check(oracle: OracleViews, figures: ChaosFigures, sample: Sample) -> None:
    reading = sample.reading
    if reading is None:
        figures.mismatched += 1
        figures.mismatch_notes.append(f"read failed: {sample.error}")
        return
    reflected, views = reading.reflected, reading.views
    began = time.monotonic()
    figures.samples += 1
    figures.batch_only_samples += not reading.speed_used
    figures.reflected = max(figures.reflected, sum(reflected.values()))
    figures.max_freshness_s = max(figures.max_freshness_s, oracle.oldest_unreflected_age(reflected, sample.read_at))
    expected = oracle.rows(reflected)
    figures.sample_seconds.append((sample.read_s, time.monotonic() - began))
    wrong = [name for name in expected if expected[name] != views[name]]
    if wrong:
        figures.mismatched += 1
        name = wrong[0]
        missing, extra = expected[name] - views[name], views[name] - expected[name]
        figures.mismatch_notes.append(
            f"views {wrong} differ at reflected offsets {reflected}; {name}: {sum(missing.values())} rows "
            f"missing (e.g. {next(iter(missing), None)}), {sum(extra.values())} unexpected "
            f"(e.g. {next(iter(extra), None)}); status {reading.described}"
        )
        if figures.evidence is not None:
            _keep_evidence(oracle.settings, figures.evidence, sample, {n: (expected[n], views[n]) for n in wrong})


def _keep_evidence(
    settings: Settings,
    folder: Path,
    sample: Sample,
    differing: dict[str, tuple[Counter[tuple[str, ...]], Counter[tuple[str, ...]]]],
) -> None:
    """A kept soak's record of a mismatch: every differing row, in ``mismatches.log``; and for the first, a copy
    of the speed layer's folder and the batch manifests as they are when it is checked (a mismatch that lasts
    is still in them), to find the events and the partitions behind it."""
    reading = sample.reading
    assert reading is not None
    with (folder / "mismatches.log").open("a") as log:
        log.write(f"reading that ended at {datetime.fromtimestamp(sample.read_at, UTC).isoformat()}, ")
        log.write(f"reflected offsets {reading.reflected}; {reading.described}\n")
        for name, (expected, served) in differing.items():
            for row in sorted((expected - served).elements()):
                log.write(f"  {name} expected, not served: {row}\n")
            for row in sorted((served - expected).elements()):
                log.write(f"  {name} served, not expected: {row}\n")
    first = folder / "first-mismatch"
    if first.exists():
        return
    shutil.copytree(settings.speed_views_path, first / "speed", ignore=shutil.ignore_patterns("*.lock"))
    shutil.copytree(settings.batch_views_path / "manifests", first / "batch-manifests")
    shutil.copy(settings.batch_views_path / "CURRENT", first / "batch-CURRENT")
    (first / "reading.txt").write_text(f"{reading.reflected}\n{reading.described}\n")


def _settle(
    settings: Settings, platform: Platform, oracle: OracleViews, figures: ChaosFigures, show: Callable[[str], None]
) -> None:
    """Let every component catch up on the last records, then compare once more."""
    end = events_end_offsets(settings)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if merged_rows(settings).reflected == end:
            break
        time.sleep(0.5)  # the speed layer catching up: polled through the serving layer's own status
    show(f"caught up: the merged views reflect {sum(end.values()):,} records")
    _sample(settings, oracle, figures)


def _count_losses(settings: Settings, figures: ChaosFigures) -> None:
    """Acknowledged records missing from the topic or the lake, or there twice."""
    in_topic = sum(events_end_offsets(settings).values())
    figures.lost += max(0, figures.produced - in_topic)
    figures.duplicated += max(0, in_topic - figures.produced)
    consumer = new_consumer(settings, group_id=None)
    valid: set[tuple[int, int]] = set()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for tp, records in consumer.poll(timeout_ms=500).items():
                accepted, _ = split(records, JsonSerde(), rejected_by="oracle")
                valid.update((tp.partition, a.offset) for a in accepted)
    finally:
        consumer.close(autocommit=False)
    lake = Lake(settings.lake_path, settings.events_topic)
    deadline = time.monotonic() + 120
    while lake.committed_offsets(range(settings.topic_partitions)) != events_end_offsets(settings):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)  # the lake sink committing the last records: its own offsets are the signal
    table = lake.table()
    rows = table.to_pyarrow_table(columns=["kafka_partition", "kafka_offset"]) if table else None
    coordinates = (
        list(zip(rows.column(0).to_pylist(), rows.column(1).to_pylist(), strict=True)) if rows is not None else []
    )
    figures.lost += len(valid - set(coordinates))
    figures.duplicated += len(coordinates) - len(set(coordinates))


def report(figures: ChaosFigures) -> list[str]:
    kinds = ", ".join(f"{kind} {figures.kills[kind]}" for kind in KINDS)
    lines = [
        f"kills by kind: {kinds}",
        f"{figures.produced:,} records produced and acknowledged; the merged views finally reflect "
        f"{figures.reflected:,}",
        f"batch versions published: {figures.batch_versions} (runs that failed without being killed: "
        f"{figures.batch_failures})",
    ]
    if figures.sample_seconds:
        reads, recomputes = zip(*figures.sample_seconds, strict=True)
        lines.append(
            f"a sample took {statistics.median(reads) * 1000:.0f} ms to read the merged views (median) and "
            f"{statistics.median(recomputes) * 1000:.0f} ms to recompute them"
        )
    lines.append(
        f"samples served from the batch alone (no partition's speed rows merged): {figures.batch_only_samples}; "
        f"readings never checked (the oracle had not read what they reflect in time): {figures.unchecked}"
    )
    exits = ", ".join(f"{name} {count}" for name, count in sorted(figures.exits.items())) or "none"
    lines.append(f"services that exited without being killed (started again): {exits}")
    lines.append(
        "speed partitions let go of because another worker had published them (a rebalance the holder had not "
        f"seen yet): {figures.taken_from_stale_owners}"
    )
    lines += [f"  mismatch: {note}" for note in figures.mismatch_notes[:10]]
    lines.append(figures.last_line())
    return lines
