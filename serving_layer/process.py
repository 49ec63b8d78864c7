"""The long-running serving process (``lambdactl serve``): live views, the Postgres endpoint, the file.

The live views refresh whenever a layer publishes; the Postgres endpoint (when a password is
set) answers every client from them; the DuckDB database file for the stock CLI is renewed within
``serving_refresh_seconds`` of a publish.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from prometheus_client import start_http_server

from lambda_contracts.settings import Settings
from serving_layer.database_file import DatabaseFiles
from serving_layer.live import LiveViews
from serving_layer.metrics import EndpointMetrics
from serving_layer.pgwire.server import PgEndpoint


def run_serving(settings: Settings, stop: threading.Event, echo: Callable[[str], None]) -> None:
    """Serve until ``stop`` is set."""
    live: LiveViews | None = None
    endpoint: PgEndpoint | None = None
    metrics_server = None
    threads: list[threading.Thread] = []
    if settings.serving_pg_password.get_secret_value():
        # client sessions hand Python's lock back and forth around every DuckDB call: the default 5 ms
        # switch interval would add up to that much wait to each handoff under load
        sys.setswitchinterval(0.0005)
        live = LiveViews(settings)
        live.refresh()
        live.lock()
        metrics = EndpointMetrics(live)
        metrics_server, _ = start_http_server(
            settings.serving_metrics_port, addr=settings.serving_pg_host, registry=metrics.registry
        )
        endpoint = PgEndpoint(settings, live, metrics)
        threads = [
            threading.Thread(target=live.run, args=(stop,), name="live-views", daemon=True),
            threading.Thread(target=endpoint.serve_forever, args=(0.2,), name="pg-endpoint", daemon=True),
        ]
        tls = " (TLS offered)" if endpoint.tls else ""
        echo(
            f"Postgres endpoint on {endpoint.address}{tls}: "
            f"psql 'postgresql://{settings.serving_pg_user}@{endpoint.address}/lambda' "
            "(password: LAMBDA_SERVING_PG_PASSWORD)"
        )
        echo(f"serving metrics: http://{settings.serving_pg_host}:{settings.serving_metrics_port}/metrics")
    else:  # the live views exist for the endpoint: without it, serve only writes the database file
        echo(
            "Postgres endpoint off: set LAMBDA_SERVING_PG_PASSWORD to open it on "
            f"{settings.serving_pg_host}:{settings.serving_pg_port}"
        )
    for thread in threads:
        thread.start()
    try:
        files = DatabaseFiles(settings)
        files.renew()
        path = settings.serving_database.absolute()
        echo(
            f"serving {path}: open it with `duckdb -readonly {path}`; renewed within "
            f"{settings.serving_refresh_seconds}s of a publish"
        )
        while not stop.wait(settings.serving_refresh_seconds):
            files.renew()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        if endpoint is not None:
            endpoint.shutdown()
            endpoint.server_close()
        for thread in threads:
            thread.join(timeout=5)
        if live is not None:
            live.close()
