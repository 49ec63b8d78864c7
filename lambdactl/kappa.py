"""Kappa beside Lambda: every view rebuilt by streaming the retained log through the speed layer's code.

A Kappa *set* (``data/kappa/<name>/``) is a speed layer of its own (own consumer group, own
snapshots) with no batch layer: it reads the events topic from offset 0 with ``SpeedWorker`` and
the same view declarations, up to a target position. The target is what one serving snapshot of the
live Lambda platform reflected when the replay was planned; that snapshot's views are fingerprinted
then (row count and a content hash per view), so the two can be compared exactly although the live
platform moves on. ``verify`` compares three things at that one position, view by view: the Kappa
views, the Lambda merged views, and a recompute from the lake's master dataset (each ``event_id``
once, with the views' own SQL in DuckDB).

The live platform is never touched: a replay writes only under its set. A replay killed at any
instant resumes from its last published snapshots (the speed layer's exactly-once publishes), and
its views are only read once it has reached the target. The topic must still hold offset 0 of every
partition: once retention deleted the first events, a replay from the log alone cannot rebuild them,
and the replay refuses (seeding it from the lake is the way to a long history, not built yet).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import operator
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.dataset as ds

from batch_layer.lake import Lake
from lambda_contracts.plumbing import duck
from lambda_contracts.plumbing.files import write_atomically
from lambda_contracts.plumbing.kafka import new_consumer, topic_offsets
from lambda_contracts.settings import Settings
from lambda_contracts.speed_snapshot import read_snapshot
from lambda_contracts.view_sets import LAMBDA, served_set, switch_served_set, view_set_settings
from lambda_contracts.views import VIEWS, View, canonical_text, deduplicated_sql
from serving_layer.query import serving_connection
from serving_layer.snapshot import resolve
from speed_layer.worker import SpeedWorker

VERIFIED = "verified.json"
PLAN = "plan.json"


class KappaError(RuntimeError):
    """A replay or a verification that cannot go on; the message says what to do."""


@dataclass(frozen=True)
class Fingerprint:
    rows: int
    digest: str
    """sha256 over the view's rows as canonical text, sorted: equal rows, equal digest, whatever engine."""


@dataclass(frozen=True)
class ReplayPlan:
    name: str
    target: dict[int, int]
    """Partition -> offset: the replay counts every record below it, as the Lambda snapshot did."""
    lambda_views: dict[str, Fingerprint]
    lambda_batch_version: int
    planned_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ReplayPlan:
        data = json.loads(text)
        return cls(
            name=data["name"],
            target={int(p): int(o) for p, o in data["target"].items()},
            lambda_views={v: Fingerprint(**f) for v, f in data["lambda_views"].items()},
            lambda_batch_version=data["lambda_batch_version"],
            planned_at=data["planned_at"],
        )


kappa_settings = view_set_settings
"""A Kappa set's own speed layer (``lambda_contracts.view_sets``)."""


def fingerprint(rows: Iterable[Sequence[Any]]) -> Fingerprint:
    lines = sorted("\t".join(canonical_text(v) for v in row) for row in rows)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return Fingerprint(len(lines), digest)


def served_fingerprints(settings: Settings) -> tuple[dict[int, int], int, dict[str, Fingerprint]]:
    """One serving snapshot: the offsets it reflects, its batch version and each view's fingerprint."""
    connection = serving_connection(settings)
    try:
        status = connection.sql(
            "SELECT kafka_partition, reflected_offset, batch_version FROM serving_status"
        ).fetchall()
        views = {view.name: fingerprint(connection.sql(_columns_of(view, view.name)).fetchall()) for view in VIEWS}
    finally:
        connection.close()
    reflected = {int(p): int(o) for p, o, _ in status}
    return reflected, int(status[0][2]) if status else 0, views


def plan_replay(settings: Settings, name: str) -> ReplayPlan:
    """Fix the target (what the live platform reflects now) and fingerprint its views; refuse when the
    topic no longer holds the first records."""
    if name == LAMBDA or not name.replace("-", "").replace("_", "").isalnum():
        raise KappaError(f"{name!r} cannot name a Kappa set: use letters, digits, - and _ (and not {LAMBDA!r})")
    folder = kappa_settings(settings, name).data_dir
    if (folder / PLAN).exists():
        return ReplayPlan.from_json((folder / PLAN).read_text())
    consumer = new_consumer(settings, group_id=None)
    try:
        first = topic_offsets(consumer, settings.events_topic, beginning=True)
    finally:
        consumer.close(autocommit=False)
    if not first:
        raise KappaError(f"no topic {settings.events_topic}: nothing to replay (start the platform first)")
    trimmed = {p: o for p, o in first.items() if o > 0}
    if trimmed:
        where = ", ".join(f"partition {p} starts at {o:,}" for p, o in sorted(trimmed.items()))
        raise KappaError(
            f"the events topic no longer holds its first records ({where}; retention deleted them), so a "
            "replay from the log alone cannot rebuild the views; raise LAMBDA_EVENTS_RETENTION_HOURS for Kappa, "
            "or use the batch layer, which reads the lake's full history"
        )
    target, version, views = served_fingerprints(settings)
    plan = ReplayPlan(name, target, views, version, datetime.now(UTC).isoformat())
    write_atomically(folder / PLAN, plan.to_json())
    return plan


@dataclass
class ReplayProgress:
    done: int
    total: int
    events_per_s: float
    seconds: float
    published_s: float | None = None
    """Once ended: seconds from the start to the last publish of any process (their closing follows)."""

    @property
    def eta_s(self) -> float:
        return (self.total - self.done) / self.events_per_s if self.events_per_s else float("inf")

    def describe(self) -> str:
        eta = f"{self.eta_s:,.0f} s" if self.eta_s != float("inf") else "?"
        return (
            f"{self.done:,} of {self.total:,} offsets replayed ({self.total - self.done:,} to go), "
            f"{self.events_per_s:,.0f}/s, ETA {eta}"
        )


def replayed_to(settings: Settings, name: str, target: dict[int, int]) -> int:
    """Offsets below the target the set has published (per partition, at most its target)."""
    root = kappa_settings(settings, name).speed_views_path
    done = 0
    for partition, end in target.items():
        snapshot = read_snapshot(root, partition)
        done += min(end, snapshot.next_offset) if snapshot else 0
    return done


def default_workers() -> int:
    """One replay process per core: kafka-python parses records in pure Python, so a process uses one core."""
    return max(1, os.cpu_count() or 1)


def partition_groups(target: Mapping[int, int], workers: int) -> list[tuple[int, ...]]:
    """Deal the partitions to at most ``workers`` processes, each partition to one, the largest first to the
    least loaded, so the processes finish together; no process gets an empty share."""
    count = max(1, min(workers, len(target)))
    loads = [0] * count
    shares: list[list[int]] = [[] for _ in range(count)]
    for partition in sorted(target, key=lambda p: (-target[p], p)):
        lightest = loads.index(min(loads))
        shares[lightest].append(partition)
        loads[lightest] += target[partition]
    return [tuple(sorted(share)) for share in shares if share]


def replay(
    settings: Settings,
    name: str,
    *,
    workers: int = 1,
    stop: threading.Event | None = None,
    show: Callable[[str], None] = print,
    every_s: float = 2.0,
) -> ReplayProgress:
    """Replay the log into the set up to the plan's target (resuming what a killed replay published).

    With ``workers`` > 1 the partitions are dealt to that many processes: this one and helpers
    (``lambdactl kappa replay-partitions``). They share the set's folder as two speed workers share
    theirs, so each ``event_id`` still counts once across partitions. Helpers start reading together
    and stop when this process stops or dies (their stdin is a pipe from it).
    """
    plan = plan_replay(settings, name)
    total = sum(plan.target.values())
    stop = stop or threading.Event()
    groups = partition_groups(plan.target, workers)
    first = replayed_to(settings, name, plan.target)
    if first:
        show(f"resuming replay {name}: {first:,} of {total:,} offsets were published before")
    started = time.monotonic()
    helpers = [Helper.start(settings, name, share) for share in groups[1:]]
    finished = threading.Event()

    def report() -> None:
        last, last_at = first, time.monotonic()
        while not finished.wait(every_s):
            done, now = replayed_to(settings, name, plan.target), time.monotonic()
            show("  " + ReplayProgress(done, total, (done - last) / (now - last_at), now - started).describe())
            last, last_at = done, now

    try:
        worker = SpeedWorker(kappa_settings(settings, name), until=plan.target, partitions=groups[0], served=False)
        for helper in helpers:
            helper.wait_ready(stop)
        if helpers:
            show(f"  {len(groups)} processes, partitions {' | '.join(','.join(map(str, g)) for g in groups)}")
        went = time.monotonic()
        for helper in helpers:
            helper.go()
        reporter = threading.Thread(target=report, daemon=True)
        reporter.start()
        try:
            worker.run(stop)
            for helper in helpers:
                helper.wait(stop)
        finally:
            finished.set()
            reporter.join()
    finally:
        for helper in helpers:
            helper.stop()
    done = replayed_to(settings, name, plan.target)
    ended = time.monotonic()
    # the rate runs from the start to the last publish of any process: their closing is not replay work
    published = max([worker.published_all_at or ended, *(h.published_at or ended for h in helpers)])
    rate = (done - first) / (published - went) if published > went else 0.0
    progress = ReplayProgress(done, total, rate, ended - started, published - started)
    if done < total:
        raise KappaError(f"replay {name} stopped at {progress.describe()}; run it again to resume")
    return progress


@dataclass
class Helper:
    """A process replaying a share of the partitions (``lambdactl kappa replay-partitions``).

    Protocol on its pipes: it writes ``ready`` once connected, starts reading on ``go``, and stops
    (publishing what it counted) when its stdin closes, which the kernel does when this process dies.
    Its last line, ``published <monotonic seconds>``, says when its last publish ended.
    """

    partitions: tuple[int, ...]
    process: subprocess.Popen[bytes]
    log: Path
    published_at: float | None = None
    READY_TIMEOUT_S: ClassVar[float] = 120.0
    STOP_TIMEOUT_S: ClassVar[float] = 60.0

    @classmethod
    def start(cls, settings: Settings, name: str, partitions: tuple[int, ...]) -> Helper:
        log = (
            kappa_settings(settings, name).data_dir / "logs" / f"replay-partitions-{'-'.join(map(str, partitions))}.log"
        )
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "lambdactl", "kappa", "replay-partitions", "--name", name]
        command += ["--partitions", ",".join(map(str, partitions))]
        with log.open("ab") as errors:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=settings.child_environment(),
                start_new_session=True,  # a Ctrl-C reaches the parent, which stops its helpers itself
            )
        return cls(partitions, process, log)

    def wait_ready(self, stop: threading.Event) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if stop.is_set():
                raise KappaError("the replay was stopped before its processes started; run it again to resume")
            readable, _, _ = select.select([self.process.stdout], [], [], 0.2)  # its line is the readiness signal
            if readable:
                if self.process.stdout.readline().strip() == b"ready":
                    return
                break
        raise KappaError(f"the replay process for partitions {self.partitions} did not start: {self.describe_end()}")

    def go(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died since it was ready: ``wait`` reports how
            self.process.stdin.write(b"go\n")
            self.process.stdin.flush()

    def wait(self, stop: threading.Event) -> None:
        """Until the helper is done; a stop request is passed on (its stdin closes)."""
        while self.process.poll() is None:
            if stop.wait(0.2):  # the process's exit is the signal; stop closes its pipe
                self.stop()
        if self.process.returncode != 0:
            raise KappaError(f"the replay process for partitions {self.partitions} failed: {self.describe_end()}")
        self._read_last_lines()

    def stop(self) -> None:
        """Close its stdin (it publishes and exits), then wait; kill it if it does not exit in time."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=self.STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._read_last_lines()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _read_last_lines(self) -> None:
        """Once it exited: when its last publish ended, from its ``published`` line (if it got that far)."""
        if self.process.stdout is None or self.process.stdout.closed:
            return
        for line in self.process.stdout.read().decode().splitlines():
            if line.startswith("published "):
                self.published_at = float(line.split()[1])

    def describe_end(self) -> str:
        code = self.process.poll()
        state = "still running" if code is None else f"exit code {code}"
        tail = self.log.read_text(errors="replace").strip().splitlines()[-5:] if self.log.exists() else []
        return f"{state}; its log {self.log} ends with: " + (" / ".join(tail) or "(nothing)")


def replay_partitions(settings: Settings, name: str, partitions: Sequence[int]) -> None:
    """A helper's share of a parallel replay, driven by its parent over stdin and stdout (see ``Helper``)."""
    if not (kappa_settings(settings, name).data_dir / PLAN).exists():
        raise KappaError(f"no Kappa set {name}: a share is replayed by `lambdactl kappa replay --workers N`")
    plan = plan_replay(settings, name)
    worker = SpeedWorker(kappa_settings(settings, name), until=plan.target, partitions=partitions, served=False)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        return  # the parent stopped (or died) before the start
    stop = threading.Event()

    def stop_when_parent_closes() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed the pipe, or died
        stop.set()

    threading.Thread(target=stop_when_parent_closes, daemon=True).start()
    worker.run(stop)  # up to the target, or published so far when the parent stopped (a rerun resumes)
    if worker.published_all_at is not None:
        sys.stdout.write(f"published {worker.published_all_at}\n")
        sys.stdout.flush()


@dataclass(frozen=True)
class Comparison:
    view: str
    kappa: Fingerprint
    lambda_merged: Fingerprint
    recompute: Fingerprint

    @property
    def identical(self) -> bool:
        return self.kappa == self.lambda_merged == self.recompute


def verify(settings: Settings, name: str) -> list[Comparison]:
    """Kappa views, Lambda merged views and a recompute from the lake, all at the plan's target."""
    folder = kappa_settings(settings, name).data_dir
    if not (folder / PLAN).exists():
        raise KappaError(f"no Kappa set {name} under {folder.parent}: run `lambdactl kappa replay --name {name}`")
    plan = ReplayPlan.from_json((folder / PLAN).read_text())
    reflected, _, kappa = served_fingerprints(kappa_settings(settings, name))
    if any(reflected.get(p, 0) > o for p, o in plan.target.items()):
        raise KappaError(
            f"set {name} already runs past its target (`lambdactl kappa run`): it can only be verified at the "
            "target; plan and replay a new set to verify again"
        )
    if any(reflected.get(p, 0) != o for p, o in plan.target.items()):
        raise KappaError(f"replay {name} has not reached its target yet: run `lambdactl kappa replay --name {name}`")
    recomputed = recompute_from_lake(settings, plan.target)
    comparisons = [Comparison(v.name, kappa[v.name], plan.lambda_views[v.name], recomputed[v.name]) for v in VIEWS]
    verdict = {"identical": all(c.identical for c in comparisons), "verified_at": datetime.now(UTC).isoformat()}
    write_atomically(folder / VERIFIED, json.dumps(verdict) + "\n")
    return comparisons


def switch(settings: Settings, name: str, show: Callable[[str], None] = print, timeout_s: float = 120.0) -> None:
    """Serve the Kappa set ``name`` instead of what is served now (or ``LAMBDA`` to go back), blue/green.

    A Kappa set is switched to only once it was verified identical at its target and has caught up
    with the position serving reflects when the switch is asked for (a live set needs `kappa run`).
    """
    if name != LAMBDA:
        folder = kappa_settings(settings, name).data_dir
        verdict = json.loads((folder / VERIFIED).read_text()) if (folder / VERIFIED).exists() else None
        if not verdict or not verdict["identical"]:
            raise KappaError(f"set {name} was not verified identical: run `lambdactl kappa verify --name {name}` first")
        wanted = resolve(settings).reflected_offsets()
        show(f"waiting for set {name} to reflect what serving reflects now ({sum(wanted.values()):,} offsets)")
        deadline = time.monotonic() + timeout_s
        while True:
            have = resolve(kappa_settings(settings, name)).reflected_offsets()
            behind = sum(max(0, o - have.get(p, 0)) for p, o in wanted.items())
            if not behind:
                break
            if time.monotonic() > deadline:
                raise KappaError(
                    f"set {name} is still {behind:,} offsets behind what serving reflects after {timeout_s:.0f} s: "
                    f"is `lambdactl kappa run --name {name}` running?"
                )
            time.sleep(0.2)  # polling the set's published snapshots, the signal readers use too
    switched = switch_served_set(settings, name)
    show(f"serving reads {switched.name} now (was {switched.previous})")


def retire(settings: Settings, name: str, grace_s: float) -> None:
    """Delete a Kappa set serving does not read, once readers that resolved it before a switch are done."""
    folder = kappa_settings(settings, name).data_dir
    served = served_set(settings)
    if served.name == name:
        raise KappaError(f"set {name} is served now: switch away first (`lambdactl kappa switch --lambda`)")
    if served.previous == name and served.switched_at:
        age = (datetime.now(UTC) - datetime.fromisoformat(served.switched_at)).total_seconds()
        if age < grace_s:
            raise KappaError(
                f"set {name} was served until {age:.0f} s ago and readers may still read it: "
                f"retire it after {grace_s:.0f} s"
            )
    if not folder.exists():
        raise KappaError(f"no Kappa set {name} under {folder.parent}")
    shutil.rmtree(folder)


def recompute_from_lake(settings: Settings, target: dict[int, int]) -> dict[str, Fingerprint]:
    """Every view from the lake's events below ``target``, each ``event_id`` once (the first copy by
    partition and offset), with the views' own SQL: a full recompute, independent of both layers."""
    lake = Lake(settings.lake_path, settings.events_topic)
    committed = lake.committed_offsets(target)
    behind = {p: (committed[p], o) for p, o in target.items() if committed[p] < o}
    if behind:
        raise KappaError(
            "the lake does not hold everything below the target yet (partition: lake, target "
            f"{behind}): is the lake sink running? Verify again once it caught up"
        )
    table = lake.table()
    if table is None or not target:
        return {view.name: fingerprint([]) for view in VIEWS}
    below = functools.reduce(  # pushed into the scan: the lake is partitioned by Kafka partition
        operator.or_,
        [(ds.field("kafka_partition") == p) & (ds.field("kafka_offset") < o) for p, o in target.items()],
    )
    events = table.to_pyarrow_dataset().to_table(filter=below)
    connection = duck.connect()
    try:
        connection.register("lake_events", events)
        connection.execute(f"CREATE TEMP VIEW firsts AS {deduplicated_sql('lake_events')}")
        return {view.name: fingerprint(connection.sql(_recomputed(view)).fetchall()) for view in VIEWS}
    finally:
        connection.close()


def _recomputed(view: View) -> str:
    """The view's served rows straight from the deduplicated lake events (``firsts``)."""
    partials = f"({view.aggregate_sql('firsts')}) AS partials"
    return _columns_of(view, f"({view.final_sql(partials)})")


def _columns_of(view: View, relation: str) -> str:
    return f"SELECT {', '.join(view.served_columns)} FROM {relation}"


def report_lines(comparisons: list[Comparison]) -> list[str]:
    lines = [f"{'view':<28} {'rows k/l/r':>20}  kappa / lambda / recompute (sha256, first 12)"]
    for c in comparisons:
        rows = f"{c.kappa.rows}/{c.lambda_merged.rows}/{c.recompute.rows}"
        hashes = " / ".join(f.digest[:12] for f in (c.kappa, c.lambda_merged, c.recompute))
        lines.append(f"{c.view:<28} {rows:>20}  {hashes}  {'same' if c.identical else 'DIFFERENT'}")
    lines.append(f"identical={'true' if all(c.identical for c in comparisons) else 'false'}")
    return lines


def existing_sets(settings: Settings) -> list[Path]:
    return sorted(p for p in (settings.data_dir / "kappa").glob("*") if (p / PLAN).exists())
