"""The serving benchmark's server-side figure: the serving process's own latency histogram, as
/metrics exposes it, read back into "99 % of statements within X"."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from benchmarks.serving import ServerSide, _parse_server_side
from serving_layer.metrics import LATENCY_BUCKETS

pytestmark = pytest.mark.unit


def test_the_bound_is_the_smallest_bucket_holding_the_share() -> None:
    registry = CollectorRegistry()
    latency = Histogram("lambda_serving_statement_duration_seconds", "", buckets=LATENCY_BUCKETS, registry=registry)
    for _ in range(985):
        latency.observe(0.0004)
    for _ in range(10):
        latency.observe(0.004)
    for _ in range(5):
        latency.observe(0.2)
    server = _parse_server_side(generate_latest(registry).decode())
    assert server.statements == 1000
    assert server.latency_bound_s(0.98) == 0.001
    assert server.latency_bound_s(0.99) == 0.005
    assert server.latency_bound_s(0.996) == 0.25
    assert server.latency_bound_s(1.0) == 0.25


def test_no_statements_have_no_bound_to_claim() -> None:
    assert ServerSide({}, {}).latency_bound_s(0.99) == float("inf")
    assert ServerSide({}, {0.001: 0.0, float("inf"): 0.0}).latency_bound_s(0.99) == float("inf")
