"""The README's main command: the whole platform on one machine, no Docker.

It installs the pinned jars, starts the broker (or uses the running one), creates the topics,
then runs the simulators, the lake sink and Airflow (whose batch DAG advances the batch views
every ``batch_interval_minutes``) as child processes, and shows what arrives with a live rate.
On Ctrl-C or at the end of ``duration_s`` it stops what it started, producers first, and keeps
the data for the next run.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from infra.jars import install_all
from infra.local_broker import LocalBroker
from infra.topics import ensure_topics
from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.settings import Settings
from lambda_contracts.topics import platform_topics
from lambdactl.airflow_local import start_airflow
from lambdactl.keep_alive import KeepAlive
from lambdactl.monitor import MonitorTick, run_monitor
from lambdactl.probes import probe_batch, probe_lake
from lambdactl.reaper import Supervision
from lambdactl.services import Service, refuse_leftovers
from sources.knobs import DEFAULTS

STATUS_EVERY_S = 15.0
SAMPLE_QUERY = (
    "SELECT page, sum(views) AS views FROM page_views_per_minute "
    "WHERE bucket >= now() - INTERVAL 10 MINUTE GROUP BY page ORDER BY views DESC LIMIT 10"
)


def run_demo(
    settings: Settings,
    duration_s: float | None,
    rate: float,
    with_airflow: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    echo = survives_a_closed_output(echo)
    echo("== exact-lambda demo: embedded mode (local Kafka broker, Spark local, Airflow standalone) ==")
    supervision = Supervision()  # before any child: whatever kills this process, its watchdog stops them
    _interrupt_on(STOP_SIGNALS)  # `kill`, a closed terminal and Ctrl-C all clean up like Ctrl-C
    broker = LocalBroker(settings) if settings.uses_local_broker else None
    started_broker = False
    services: list[Service] = []
    keep_alive: KeepAlive | None = None
    stop = threading.Event()
    logs = settings.data_dir / "logs"
    env = settings.child_environment()
    try:
        refuse_leftovers(settings.data_dir)
        install_all(progress=echo)
        if broker is not None:
            status, started_broker = broker.start()
            echo(("started " if started_broker else "using running ") + status.describe())
        with admin_client(settings) as admin:
            for report in ensure_topics(admin, platform_topics(settings)):
                echo(f"topic {report.name}: {report.partitions} partitions{' (created)' if report.created else ''}")
        simulate = _lambdactl("simulate", "--rate", str(rate))
        services.append(Service("simulators", simulate, logs / "simulate.log", env).start())
        services.append(Service("lake-sink", _lambdactl("lake-sink"), logs / "lake-sink.log", env).start())
        echo(f"lake sink: {settings.events_topic} -> {settings.lake_path} (log {logs / 'lake-sink.log'})")
        services.append(Service("speed", _lambdactl("speed"), logs / "speed.log", env).start())
        services.append(Service("serve", _lambdactl("serve"), logs / "serve.log", env).start())
        echo(f"speed worker -> {settings.speed_views_path}; merged views in {settings.serving_database}")
        keep_alive = KeepAlive(services, echo).start(stop)  # a service that exits is started again
        echo("a service that exits is started again; `lambdactl restart speed serve` restarts them with new code")
        echo("live dashboard: run `lambdactl dashboard` in another terminal (charts on :8050, /metrics)")
        late = f"{DEFAULTS.late_share:.0%} up to {DEFAULTS.max_lateness.total_seconds() / 3600:g} h late"
        echo(f"simulators: web, app ({late}), sensor at {rate:,.0f} records/s each")
        if with_airflow:
            echo("starting Airflow (scheduler, dag-processor, API server, triggerer); first start takes a minute ...")
            airflow, login = start_airflow(settings, logs / "airflow.log")
            services.append(airflow)
            echo(f"Airflow UI: {login.url}  login: {login.username} / {login.password}")
            echo(f"  DAG batch_views advances the batch views every {settings.batch_interval_minutes} min")
        echo("query the merged views (batch + speed) from another terminal, for example:")
        echo(f'  {sys.executable.rsplit("/", 1)[0]}/lambdactl sql "{SAMPLE_QUERY}"')
        echo(f"  duckdb -readonly {settings.serving_database.absolute()}  (any DuckDB CLI; reopen it to refresh)")
        pg_url = f"postgresql://{settings.serving_pg_user}@{settings.serving_pg_host}:{settings.serving_pg_port}/lambda"
        if settings.serving_pg_password.get_secret_value():
            echo(f"  PGPASSWORD=$LAMBDA_SERVING_PG_PASSWORD psql '{pg_url}'  (any Postgres client: JDBC, BI tools)")
        else:
            echo(
                "  Postgres clients (psql, JDBC, BI tools): run the demo with LAMBDA_SERVING_PG_PASSWORD=<password> set"
            )
        echo("monitor: valid events per second as they arrive; Ctrl-C stops everything")
        if duration_s is not None:
            timer = threading.Timer(duration_s, stop.set)
            timer.daemon = True
            timer.start()
        show = _status_printer(settings, echo)
        totals = run_monitor(settings, stop, show=show)
        echo(f"seen {totals.accepted:,} valid events and {totals.rejected:,} rejected (see `lambdactl dlq`)")
    except KeyboardInterrupt:
        echo("stopping ...")
    finally:
        stop.set()
        _keep_stopping_on(STOP_SIGNALS, echo)
        if keep_alive is not None:
            keep_alive.join()
        for service in services:  # producers first, then the sink (it commits), then Airflow
            code = service.stop()
            echo(f"stopped {service.name} (exit {code})")
        if broker is not None and started_broker:
            broker.stop()
            echo("broker stopped; data stays in " + str(settings.data_dir))
        supervision.finish()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def survives_a_closed_output(echo: Callable[[str], None]) -> Callable[[str], None]:
    """``echo``, except that once the reader of our output is gone (``demo | tee`` and Ctrl-C kill
    ``tee`` first) it writes nowhere instead of raising: the clean stop matters more than its report."""
    closed = False

    def write(text: str) -> None:
        nonlocal closed
        if closed:
            return
        try:
            echo(text)
        except OSError as error:
            if error.errno not in (errno.EPIPE, errno.EIO):
                raise
            closed = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush has nowhere to fail
            os.close(devnull)

    return write


def _interrupt_on(signals: tuple[signal.Signals, ...]) -> None:
    """Turn these signals into KeyboardInterrupt, also where the shell started us ignoring SIGINT."""

    def interrupt(signum: int, _: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in signals:
        signal.signal(signum, interrupt)


def _keep_stopping_on(signals: tuple[signal.Signals, ...], echo: Callable[[str], None]) -> None:
    """While the demo stops its services, a second signal must not cut the clean-up short."""

    def still_stopping(signum: int, _: object) -> None:
        echo(f"{signal.Signals(signum).name}: still stopping the services, one moment ...")

    for signum in signals:
        signal.signal(signum, still_stopping)


def _status_printer(settings: Settings, echo: Callable[[str], None]) -> Callable[[MonitorTick], None]:
    """Every tick, the arrival rate; every ``STATUS_EVERY_S``, how far the lake and batch views are."""
    last = 0.0

    def show(tick: MonitorTick) -> None:
        nonlocal last
        echo(tick.describe())
        if time.monotonic() - last >= STATUS_EVERY_S:
            last = time.monotonic()
            try:
                echo("   " + batch_status(settings))
            except Exception as error:  # a probe racing a lake compaction must not end the demo
                logging.getLogger(__name__).debug("status line failed", exc_info=True)
                echo(f"   status unavailable this time ({type(error).__name__}: {error}); the next line tries again")

    return show


def batch_status(settings: Settings) -> str:
    """One console line: what the lake holds, the batch version, and what the merged views reflect."""
    lake = probe_lake(settings, {})
    batch = probe_batch(settings)
    in_lake = sum(lake.progress.offsets.values()) if lake.progress else 0
    if batch.age_s is None:
        text = "batch views: none published yet"
    else:
        text = (
            f"batch views: version {batch.manifest.version}, covering {batch.covered_records:,} records, "
            f"published {batch.age_s:.0f}s ago"
        )
    merged = ""
    if settings.serving_database.exists():
        from serving_layer.query import query

        sql = "SELECT sum(reflected_offset) AS records, bool_and(speed_used) AS fresh FROM serving_status"
        row = query(settings, sql).to_pylist()[0]
        layers = "batch + speed" if row["fresh"] else "batch only"
        merged = f" | merged views reflect {row['records'] or 0:,} records ({layers})"
    return f"lake: {in_lake:,} records committed | {text}{merged}"


def _lambdactl(*args: str) -> list[str]:
    return [sys.executable, "-m", "lambdactl", *args]
