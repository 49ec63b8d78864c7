"""Serving benchmark: queries through the Postgres endpoint while the platform ingests.

``lambdactl serve`` (the long-running serving process) and a speed worker run in their own
processes; simulators produce at the asked rate with marker readings every 100 ms. Meanwhile
``clients`` psycopg connections in a separate process run the dashboard query in a loop: p50 and
p99 of its latency and the queries per second, and from the serving process's own latency histogram
(/metrics) how much of it the statements themselves take. Produce-to-visible is measured through the
endpoint too (markers polled with psycopg). Then the same query on the serving process's live
merged tables against a plain pre-merged DuckDB table, in one process: the cost of merging left
at query time (1.0 means none).
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from benchmarks.freshness import MARKER_QUERY, SAMPLE_QUERY, isolated_settings, measure_freshness, percentile
from infra.ports import free_port
from lambda_contracts.plumbing import duck
from lambda_contracts.settings import Settings
from serving_layer.live import LiveViews

QUERY_RUNS = 300
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServerSide:
    """What the serving process's own /metrics counted: result cache lookups by outcome, and its
    statement latency histogram (cumulative counts by upper bound in seconds)."""

    cache_lookups: dict[str, float]
    latency_buckets: dict[float, float]

    @property
    def statements(self) -> int:
        return int(max(self.latency_buckets.values(), default=0))

    def latency_bound_s(self, share: float) -> float:
        """The smallest histogram bound that holds at least ``share`` of the statements (inf if none does)."""
        if self.statements == 0:
            return float("inf")
        needed = share * self.statements
        return min((bound for bound, count in self.latency_buckets.items() if count >= needed), default=float("inf"))


@dataclass(frozen=True)
class ServingFigures:
    pg_p50_ms: float
    pg_p99_ms: float
    queries: int
    qps: float
    merged_p50_ms: float
    premerged_p50_ms: float
    fresh_p50_ms: float
    fresh_p99_ms: float
    achieved_rate: float
    server: ServerSide

    @property
    def merged_to_premerged(self) -> float:
        return self.merged_p50_ms / self.premerged_p50_ms


def _url(settings: Settings) -> str:
    password = settings.serving_pg_password.get_secret_value()
    return f"postgresql://{settings.serving_pg_user}:{password}@127.0.0.1:{settings.serving_pg_port}/lambda"


def _wait_for_endpoint(settings: Settings, serve: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(_url(settings), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the serving process did not open its Postgres endpoint (exit {serve.poll()})"
                ) from None
            time.sleep(0.2)


def _client_loop(url: str, stop: EventType, out: multiprocessing.Queue[list[float]]) -> None:
    """One client: the dashboard query again and again until told to stop; its latencies in ms."""
    latencies = []
    with psycopg.connect(url, autocommit=True) as connection:
        while not stop.is_set():
            started = time.perf_counter()
            connection.execute(SAMPLE_QUERY).fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
    out.put(latencies)


def _clients_process(url: str, clients: int, stop: EventType, out: multiprocessing.Queue[list[float]]) -> None:
    import threading

    threads = [threading.Thread(target=_client_loop, args=(url, stop, out)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _server_side(settings: Settings) -> ServerSide:
    """The serving process's result cache lookups and statement latencies, from its /metrics."""
    url = f"http://127.0.0.1:{settings.serving_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return _parse_server_side(response.read().decode())


def _parse_server_side(text: str) -> ServerSide:
    lookups: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lambda_serving_result_cache_lookups_total":
                lookups[sample.labels["outcome"]] = sample.value
            elif sample.name == "lambda_serving_statement_duration_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return ServerSide(lookups, buckets)


class _MarkersThroughPg:
    """The markers visible through the endpoint, polled on one open connection as a dashboard polls.

    Opening a connection per poll would measure SCRAM's key stretching on both sides (and load the
    serving process with it) rather than how soon a reader sees an event.
    """

    def __init__(self) -> None:
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None

    def __call__(self, settings: Settings) -> Iterable[str]:
        if self._connection is None:
            self._connection = psycopg.connect(_url(settings), autocommit=True)
        return [str(row[0]) for row in self._connection.execute(MARKER_QUERY).fetchall()]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def _merged_against_premerged(settings: Settings) -> tuple[float, float]:
    """p50 of the dashboard query on the live merged tables and on a plain pre-merged table (ms)."""
    live = LiveViews(settings)
    try:
        live.refresh()
        session = live.session()
        premerged = duck.connect()
        premerged.register("source", session.sql("SELECT * FROM page_views_per_minute").to_arrow_table())
        premerged.execute("CREATE TABLE page_views_per_minute AS SELECT * FROM source")
        timings: dict[str, list[float]] = {"merged": [], "premerged": []}
        for _ in range(QUERY_RUNS):  # interleaved, so both meet the same machine
            for name, connection in (("merged", session), ("premerged", premerged)):
                started = time.perf_counter()
                connection.execute(SAMPLE_QUERY).fetchall()
                timings[name].append((time.perf_counter() - started) * 1000)
        return statistics.median(timings["merged"]), statistics.median(timings["premerged"])
    finally:
        live.close()


def run_serving_benchmark(
    settings: Settings, rate: float = 10_000, seconds: float = 30, clients: int = 8, show: Callable[[str], None] = print
) -> ServingFigures:
    with tempfile.TemporaryDirectory(prefix="serving-") as folder:
        bench = isolated_settings(settings, Path(folder) / "serving").model_copy(
            update={
                "serving_pg_password": SecretStr(secrets.token_urlsafe(16)),
                "serving_pg_port": free_port(),  # beside a running demo, whose serve holds the default ports
                "serving_metrics_port": free_port(),
            }
        )
        env = bench.child_environment()
        serve = subprocess.Popen([sys.executable, "-m", "lambdactl", "serve"], env=env, stdout=subprocess.DEVNULL)
        context = multiprocessing.get_context("spawn")
        stop, out = context.Event(), context.Queue()
        querying = context.Process(target=_clients_process, args=(_url(bench), clients, stop, out))
        try:
            _wait_for_endpoint(bench, serve)
            show(f"serving process up; {clients} psycopg clients run the dashboard query through the endpoint")
            querying.start()
            started = time.monotonic()
            fresh = measure_freshness(bench, rate, seconds, show, visible_devices=_MarkersThroughPg())
            stop.set()
            latencies = [value for _ in range(clients) for value in out.get(timeout=60)]
            elapsed = time.monotonic() - started
            querying.join(timeout=30)
            server = _server_side(bench)
        finally:
            stop.set()
            if querying.is_alive():
                querying.terminate()
            serve.terminate()
            serve.wait(timeout=60)
        show("the same query on the live merged tables and on a plain pre-merged table, in one process")
        merged, premerged = _merged_against_premerged(bench)
    return ServingFigures(
        pg_p50_ms=statistics.median(latencies),
        pg_p99_ms=percentile(latencies, 0.99),
        queries=len(latencies),
        qps=len(latencies) / elapsed,
        merged_p50_ms=merged,
        premerged_p50_ms=premerged,
        fresh_p50_ms=fresh["p50"] * 1000,
        fresh_p99_ms=fresh["p99"] * 1000,
        achieved_rate=fresh["achieved"],
        server=server,
    )


def report(f: ServingFigures) -> list[str]:
    lookups = f.server.cache_lookups
    return [
        f"through the Postgres endpoint at {f.achieved_rate:,.0f} events/s ingested: {f.queries:,} dashboard queries, "
        f"{f.qps:,.0f}/s, p50 {f.pg_p50_ms:.1f} ms, p99 {f.pg_p99_ms:.1f} ms (target p99 <= 10 ms: "
        f"{'met' if f.pg_p99_ms <= 10 else 'NOT met'})",
        f"inside the serving process (its /metrics, from a statement's arrival to its last row sent): 99 % of "
        f"{f.server.statements:,} statements (the markers' polls included) within "
        f"{f.server.latency_bound_s(0.99) * 1000:g} ms; the rest of the "
        "clients' latency is spent before a statement arrives or after its last row is sent (sockets, and waiting "
        f"for one of the {os.cpu_count()} cores)",
        f"result cache (LAMBDA_SERVING_RESULT_CACHE_ROWS): {lookups.get('hit', 0):,.0f} statements answered "
        f"from it, {lookups.get('miss', 0):,.0f} ran (kept when read from one refresh), "
        f"{lookups.get('bypass', 0):,.0f} never kept (the markers' polls included)",
        f"live merged tables p50 {f.merged_p50_ms:.2f} ms vs pre-merged table {f.premerged_p50_ms:.2f} ms "
        f"(target ratio <= 1.5: {'met' if f.merged_to_premerged <= 1.5 else 'NOT met'})",
        f"produce-to-visible through the endpoint p50 {f.fresh_p50_ms:,.0f} ms, p99 {f.fresh_p99_ms:,.0f} ms "
        f"(target p99 <= 500 ms: {'met' if f.fresh_p99_ms <= 500 else 'NOT met'})",
        f"pg_p50_ms={f.pg_p50_ms:.1f} pg_p99_ms={f.pg_p99_ms:.1f} merged_to_premerged={f.merged_to_premerged:.2f} "
        f"qps={f.qps:.0f} fresh_p99_ms={f.fresh_p99_ms:.0f}",
    ]
