"""Prometheus metrics of the serving process: its queries, connections and live refreshes.

Served as Prometheus text on ``/metrics`` (``serving_metrics_port``) beside the Postgres endpoint;
the platform-wide signals (events in, lag, freshness, dead letters) are on the dashboard's
``/metrics``, from the same probes ``lambdactl status`` uses.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from serving_layer.live import LiveViews

# SQLSTATEs that mean the endpoint said no (read-only, limits), as opposed to a failed query
REFUSED = {
    "25006": "read_only",
    "57014": "cancelled",
    "53200": "memory_limit",
    "53300": "connections",
    "42501": "files",
}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _LiveCollector(Collector):
    """What the newest committed refresh serves, read at scrape time."""

    def __init__(self, live: LiveViews) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        latest = self.live.latest
        if latest is None:
            return
        refreshes = CounterMetricFamily(
            "lambda_serving_refreshes", "Refreshes of the live views (one per publish seen)."
        )
        refreshes.add_metric([], latest.number)
        version = GaugeMetricFamily("lambda_serving_batch_version", "Batch version of the snapshot served now.")
        version.add_metric([], latest.batch_version)
        reflected = GaugeMetricFamily(
            "lambda_serving_reflected_offset",
            "Per partition, the offset below which every valid event is in the served views.",
            labels=["partition"],
        )
        for partition, offset in sorted(latest.reflected_offsets.items()):
            reflected.add_metric([str(partition)], offset)
        duration = GaugeMetricFamily("lambda_serving_refresh_duration_seconds", "How long the newest refresh took.")
        duration.add_metric([], latest.seconds)
        yield from (refreshes, version, reflected, duration)


class EndpointMetrics:
    """Counters and a latency histogram the Postgres endpoint updates, in a registry of their own."""

    def __init__(self, live: LiveViews) -> None:
        self.registry = CollectorRegistry()
        self.statements = Counter(
            "lambda_serving_statements",
            "Statements through the Postgres endpoint, by outcome (ok, error, or why it was refused).",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lambda_serving_statement_duration_seconds",
            "From a statement's arrival to its last row sent.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.connections = Gauge("lambda_serving_connections", "Client connections open now.", registry=self.registry)
        self.refused_connections = Counter(
            "lambda_serving_refused_connections",
            "Connections refused at the maximum (LAMBDA_SERVING_MAX_CONNECTIONS).",
            registry=self.registry,
        )
        self.logins = Counter(
            "lambda_serving_logins", "Login attempts, by outcome.", ["outcome"], registry=self.registry
        )
        self.results = Counter(
            "lambda_serving_result_cache_lookups",
            "Statements by how the result cache met them: hit, miss, or bypass (a result that may not be "
            "kept: not deterministic, not of served relations, or the cache off).",
            ["outcome"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(live))

    def statement(self, sqlstate: str | None, seconds: float) -> None:
        outcome = "ok" if sqlstate is None else REFUSED.get(sqlstate, "error")
        self.statements.labels(outcome).inc()
        self.latency.observe(seconds)
