"""The live dashboard in a real browser, and /metrics parsed by the official Prometheus client's parser,
while producers, the lake sink and the speed layer run on a real broker."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from prometheus_client.parser import text_string_to_metric_families

from batch_layer.lake_sink import LakeSink
from lambda_contracts.settings import Settings
from lambdactl.dashboard import serve_dashboard
from speed_layer.worker import SpeedWorker
from tests.browser import browser_page
from tests.flows import (
    ARTIFACTS,
    free_ports,
    lively_simulators,
    producing,
    speed_reflected,
    wait_for,
    whole_platform_settings,
)

pytestmark = pytest.mark.integration


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def test_the_dashboard_updates_in_a_browser_and_metrics_parse(kafka: Settings, tmp_path: Path) -> None:
    settings = whole_platform_settings(kafka, tmp_path).model_copy(update={"dashboard_port": free_ports(1)[0]})
    url = f"http://127.0.0.1:{settings.dashboard_port}"
    stop, ready = threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=LakeSink(settings).run, args=(stop,)),
        threading.Thread(target=SpeedWorker(settings).run, args=(stop,)),
        threading.Thread(target=serve_dashboard, args=(settings, stop, ready)),
    ]
    for thread in threads:
        thread.start()
    try:
        with producing(settings, lively_simulators(seed=61, rate=200.0)):
            assert ready.wait(30), "the dashboard server started"
            wait_for(lambda: speed_reflected(settings) > 500, 60, "the speed layer reflecting 500 records")
            wait_for(lambda: _state(url)["views"] is not None, 30, "the merged views on the dashboard")
            with browser_page(ARTIFACTS / "dashboard.png") as page:
                page.goto(url)
                expect(page.locator("#updated")).to_contain_text("sampled", timeout=15_000)
                points = "() => Chart.getChart('events').data.labels.length"
                first = page.evaluate(points)
                page.wait_for_function(f"({points})() >= {first + 2}", timeout=10_000)  # updates every second
                expect(page.locator(".snapshot").first).to_contain_text("reflecting")
                page.wait_for_function("Chart.getChart('pages').data.labels.length > 0", timeout=10_000)
                expect(page.locator("#components")).to_contain_text("speed")

            families = {f.name: f for f in text_string_to_metric_families(_get(f"{url}/metrics").decode())}
            state = _state(url)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert {
        "lambda_events_in",
        "lambda_consumer_lag_records",
        "lambda_freshness_seconds",
        "lambda_component_up",
    } <= set(families)
    assert families["lambda_events_in"].type == "counter" and families["lambda_dead_letters"].type == "counter"
    assert families["lambda_dashboard_view_query_seconds"].type == "histogram"
    lag_labels = {
        (s.labels["consumer"], s.labels["partition"]) for s in families["lambda_consumer_lag_records"].samples
    }
    assert {("speed", str(p)) for p in range(settings.topic_partitions)} <= lag_labels
    (events_in,) = [s.value for s in families["lambda_events_in"].samples if s.name == "lambda_events_in_total"]
    assert events_in > 500
    latest = state["samples"][-1]
    assert latest["events_in"] >= events_in and latest["freshness_s"] is not None and latest["freshness_s"] >= 0
    assert state["views"]["snapshot"].startswith("batch version 0 + speed, reflecting ")
    assert [row[0] for row in state["views"]["rows"]["top_pages"]], "top pages from the merged views"


def _state(url: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(_get(f"{url}/api/samples"))
    return state
