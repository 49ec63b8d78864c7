"""A live dashboard in the browser and a Prometheus endpoint, from the probes `lambdactl status` uses.

A sampler thread reads the platform every second the way ``lambdactl status`` does (the broker's
offsets and groups, the lake's Delta log, speed snapshots, the batch manifest, the serving file) and
queries the merged views through one serving snapshot, whose label travels with the rows it gave.
An HTTP server (standard library, its own port) serves the page, the samples as JSON
(``/api/samples``) and the latest sample in the Prometheus text format (``/metrics``). The page
draws with Chart.js, fetched pinned from the npm registry at install (``infra.npm``), so it needs no
network while it runs.

Freshness here is what a reader waits for: the age of the oldest record that is in Kafka but not yet
visible in the speed layer's published views (0 when every produced record is visible).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kafka import TopicPartition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from infra.npm import CHART_JS
from lambda_contracts.plumbing.kafka import new_consumer
from lambda_contracts.settings import Settings
from lambdactl.probes import probe_batch, probe_kafka, probe_lake, probe_serving, probe_speed
from serving_layer.query import serving_connection

log = logging.getLogger(__name__)
PAGE = Path(__file__).resolve().parent / "static" / "dashboard.html"
HISTORY = 300
"""Samples kept for the charts: five minutes at one per second."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SNAPSHOT_QUERY = "SELECT max(batch_version), sum(reflected_offset) FROM serving_status"
VIEW_QUERIES = {
    "top_pages": "SELECT page, sum(views) AS views FROM page_views_per_minute "
    "WHERE bucket >= now() - INTERVAL 1 HOUR GROUP BY page ORDER BY views DESC, page LIMIT 10",
    "revenue_per_product": "SELECT product_id, sum(revenue) AS revenue FROM product_sales_per_hour "
    "WHERE bucket >= now() - INTERVAL 24 HOUR GROUP BY product_id ORDER BY revenue DESC, product_id LIMIT 10",
    "sensor_metrics": "SELECT metric, sum(value_sum) / sum(readings) AS mean, min(value_min) AS low, "
    "max(value_max) AS high, sum(readings) AS readings FROM sensor_stats_per_minute "
    "WHERE bucket >= now() - INTERVAL 10 MINUTE GROUP BY metric ORDER BY metric",
}


@dataclass
class Sample:
    """What the platform looked like at ``at`` (seconds since the epoch)."""

    at: float
    events_in: int | None = None
    events_per_s: float | None = None
    lag: dict[str, dict[int, int]] = field(default_factory=dict)
    freshness_s: float | None = None
    batch_version: int = 0
    batch_cutoff_age_s: float | None = None
    dead_letters: int | None = None
    components: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ViewsSample:
    """The merged views' headline rows, and the serving snapshot they come from."""

    snapshot: str
    rows: dict[str, list[list[Any]]]


class Sampler:
    """Samples the platform every ``every_s`` seconds into a bounded history; the server reads it."""

    def __init__(self, settings: Settings, every_s: float = 1.0) -> None:
        self.settings = settings
        self.every_s = every_s
        self.samples: deque[Sample] = deque(maxlen=HISTORY)
        self.views: ViewsSample | None = None
        self.view_query_seconds: list[float] = []
        self.lock = threading.Lock()
        self._consumer: Any = None

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except Exception:  # a probe that fails must not end the dashboard: the next tick tries again
                log.exception("dashboard sample failed; retrying in %.0f s", self.every_s)
            stop.wait(max(0.0, self.every_s - (time.monotonic() - started)))
        if self._consumer is not None:
            self._consumer.close(autocommit=False)

    def sample(self) -> None:
        now = time.time()
        kafka = probe_kafka(self.settings)
        sample = Sample(at=now, components=[asdict(kafka.component), *(asdict(g.component) for g in kafka.groups)])
        if kafka.component.up:
            sample.events_in = sum(kafka.ends.values())
            sample.dead_letters = kafka.dead_letters
            previous = self.samples[-1] if self.samples else None
            if previous is not None and previous.events_in is not None:
                sample.events_per_s = (sample.events_in - previous.events_in) / (now - previous.at)
            lake = probe_lake(self.settings, kafka.ends)
            speed = probe_speed(self.settings, kafka.ends)
            sample.components += [asdict(lake.component), asdict(speed.component)]
            if lake.progress is not None:
                sample.lag["lake-sink"] = lake.lag
            sample.lag["speed"] = {p: n for p, n in speed.lag.items()}
            visible = {p: s.next_offset if s else 0 for p, s in speed.snapshots.items()}
            sample.freshness_s = self._oldest_invisible_age(kafka.ends, visible, now)
        batch = probe_batch(self.settings)
        sample.batch_version, sample.batch_cutoff_age_s = batch.manifest.version, batch.age_s
        sample.components += [asdict(batch.component), asdict(probe_serving(self.settings))]
        views = self._views()
        with self.lock:
            self.samples.append(sample)
            if views is not None:
                self.views = views

    def _oldest_invisible_age(self, ends: dict[int, int], visible: dict[int, int], now: float) -> float:
        """Seconds the oldest produced but not yet visible record has waited (its Kafka timestamp)."""
        behind = {p: visible.get(p, 0) for p, end in ends.items() if end > visible.get(p, 0)}
        if not behind:
            return 0.0
        if self._consumer is None:
            self._consumer = new_consumer(self.settings, group_id=None, max_poll_records=len(ends) * 50)
        topic = self.settings.events_topic
        self._consumer.assign([TopicPartition(topic, p) for p in behind])
        for partition, offset in behind.items():
            self._consumer.seek(TopicPartition(topic, partition), offset)
        oldest: dict[int, float] = {}
        deadline = time.monotonic() + 0.5
        while len(oldest) < len(behind) and time.monotonic() < deadline:
            for tp, records in self._consumer.poll(timeout_ms=100).items():
                first = next((r for r in records if r.offset >= behind[tp.partition]), None)
                if first is not None:
                    oldest.setdefault(tp.partition, first.timestamp / 1000)
        # Kafka's end offsets are read after `now`, so a record produced in between is younger than the
        # sample: it has waited no time at all, never a negative one.
        return max((max(0.0, now - t) for t in oldest.values()), default=0.0)

    def _views(self) -> ViewsSample | None:
        started = time.perf_counter()
        try:
            connection = serving_connection(self.settings)
        except (FileNotFoundError, OSError, ValueError) as error:
            log.debug("no serving snapshot yet: %s", error)
            return None
        try:
            status = connection.execute(
                "SELECT max(batch_version), sum(reflected_offset) FROM serving_status"
            ).fetchone()
            rows = {name: connection.execute(query).fetchall() for name, query in VIEW_QUERIES.items()}
        finally:
            connection.close()
        self.view_query_seconds.append(time.perf_counter() - started)
        version, reflected = status or (0, 0)
        label = f"batch version {version} + speed, reflecting {int(reflected or 0):,} records"
        return ViewsSample(label, {name: [[_plain(v) for v in r] for r in table] for name, table in rows.items()})

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "samples": [asdict(s) for s in self.samples],
                "views": asdict(self.views) if self.views else None,
                "now": time.time(),
            }


def _plain(value: Any) -> Any:
    """JSON-ready: decimals as numbers, times as ISO text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, int | float | str) or value is None:
        return value
    return float(value)


class PlatformCollector(Collector):
    """The latest sample as Prometheus metrics (names and labels by Prometheus conventions)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        with self.sampler.lock:
            latest = self.sampler.samples[-1] if self.sampler.samples else None
            query_seconds = list(self.sampler.view_query_seconds)
        if latest is None:
            return
        up = GaugeMetricFamily("lambda_component_up", "1 when the component works (its probe)", labels=["component"])
        for component in latest.components:
            up.add_metric([component["name"]], 1.0 if component["up"] else 0.0)
        yield up
        if latest.events_in is not None:
            yield CounterMetricFamily("lambda_events_in", "Records in the events topic", value=latest.events_in)
        lag = GaugeMetricFamily("lambda_consumer_lag_records", LAG_HELP, labels=["consumer", "partition"])
        for consumer, partitions in latest.lag.items():
            for partition, records in partitions.items():
                lag.add_metric([consumer, str(partition)], records)
        yield lag
        if latest.freshness_s is not None:
            yield GaugeMetricFamily("lambda_freshness_seconds", FRESHNESS_HELP, value=latest.freshness_s)
        yield GaugeMetricFamily("lambda_batch_version", "Newest published batch version", value=latest.batch_version)
        if latest.batch_cutoff_age_s is not None:
            yield GaugeMetricFamily("lambda_batch_cutoff_age_seconds", CUTOFF_HELP, value=latest.batch_cutoff_age_s)
        if latest.dead_letters is not None:
            yield CounterMetricFamily("lambda_dead_letters", "Invalid records kept", value=latest.dead_letters)
        buckets: list[tuple[str, float]] = [
            (str(bound), float(sum(1 for s in query_seconds if s <= bound))) for bound in LATENCY_BUCKETS
        ]
        buckets.append(("+Inf", float(len(query_seconds))))
        yield HistogramMetricFamily(
            "lambda_dashboard_view_query_seconds", QUERY_HELP, buckets=buckets, sum_value=float(sum(query_seconds))
        )


LAG_HELP = "Records a consumer's published state does not reflect yet"
FRESHNESS_HELP = "Age of the oldest produced record not yet visible in the speed layer's views"
CUTOFF_HELP = "Seconds since the newest batch version chose its cutoff"
QUERY_HELP = "The dashboard's merged-view queries, snapshot resolution included"


def serve_dashboard(settings: Settings, stop: threading.Event, ready: threading.Event | None = None) -> None:
    """Sample and serve until ``stop`` is set."""
    CHART_JS.install(progress=log.info)
    sampler = Sampler(settings, settings.dashboard_refresh_seconds)
    registry = CollectorRegistry()
    registry.register(PlatformCollector(sampler))
    server = ThreadingHTTPServer((settings.dashboard_host, settings.dashboard_port), _handler(sampler, registry))
    threads = [
        threading.Thread(target=sampler.run, args=(stop,), name="dashboard-sampler"),
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dashboard-http"),
    ]
    for thread in threads:
        thread.start()
    log.info("dashboard at http://%s:%d/ (metrics at /metrics)", settings.dashboard_host, settings.dashboard_port)
    if ready is not None:
        ready.set()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        for thread in threads:
            thread.join()


def _handler(sampler: Sampler, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    def samples() -> bytes:
        return json.dumps(sampler.snapshot()).encode()

    def metrics() -> bytes:
        return bytes(generate_latest(registry))

    routes: dict[str, tuple[str, Callable[[], bytes]]] = {
        "/": ("text/html; charset=utf-8", PAGE.read_bytes),
        "/static/chart.umd.min.js": ("text/javascript", CHART_JS.target.read_bytes),
        "/api/samples": ("application/json", samples),
        "/metrics": ("text/plain; version=0.0.4; charset=utf-8", metrics),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(HTTPStatus.NOT_FOUND, "not here: try /, /api/samples or /metrics")
                return
            content_type, body = route[0], route[1]()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard %s " + format, self.address_string(), *args)

    return Handler
