"""``lambdactl``: one command line for the whole platform.

This package is the composition root: it is the only code that imports several layers, and
it does so only to start them. Each subcommand is thin and calls into its layer.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import duckdb
import typer
from kafka.errors import KafkaError
from pydantic import ValidationError

from batch_layer.batch_job import EmptyLakeError
from batch_layer.publish import SupersededError
from batch_layer.spark import SparkSetupError
from infra.deploy import COMPOSE_FILE, ENV_FILE, DeployError, prepare, write_env
from infra.jars import KAFKA_JARS, InstallError, install_all, java_major_version
from infra.kafka_node import KafkaNodeError
from infra.local_broker import BrokerError, LocalBroker
from infra.npm import CHART_JS
from infra.ports import PortInUseError, ensure_port_free
from infra.scaling import ScalingError
from infra.topics import TopicMismatchError, ensure_topics
from lambda_contracts.events import SOURCES, Source
from lambda_contracts.plumbing.dead_letters import DeadLetterError
from lambda_contracts.plumbing.kafka import admin_client
from lambda_contracts.serde import get_serde
from lambda_contracts.settings import get_settings
from lambda_contracts.topics import platform_topics
from lambdactl.airflow_local import AirflowError
from lambdactl.dead_letters import read_dead_letters
from lambdactl.kappa import KappaError
from lambdactl.keep_alive import RestartError
from lambdactl.monitor import run_monitor
from lambdactl.services import LeftoverError
from sources.knobs import DEFAULTS
from sources.producer import BatchingProducer, DeliveryError
from sources.run import RunReport, build_simulators, run_simulation

app = typer.Typer(
    help="Run and operate the exact Lambda platform: Kafka broker, sources, monitor, dead letters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
broker_app = typer.Typer(
    help="The embedded Apache Kafka broker (KRaft, jars from Maven Central).", no_args_is_help=True
)
topics_app = typer.Typer(help="The platform's Kafka topics.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks: figures and ratios against a baseline measured in the same run.", no_args_is_help=True
)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
batch_app = typer.Typer(
    help="Batch runs without Airflow (the DAGs call the same code): advance to the lake, or recompute days.",
    no_args_is_help=True,
)
deploy_app = typer.Typer(
    help="Get a docker-compose deployment ready (infra/compose): secrets, build inputs, base image.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")
app.add_typer(deploy_app, name="deploy")
app.add_typer(batch_app, name="batch")
kappa_app = typer.Typer(
    help="Kappa beside Lambda: rebuild every view by replaying the log through the speed layer's code.",
    no_args_is_help=True,
)
app.add_typer(kappa_app, name="kappa")
schemas_app = typer.Typer(help="The Avro schemas of the events topic (lambda_contracts/avro/).", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

P = ParamSpec("P")
R = TypeVar("R")
USER_ERRORS: tuple[type[Exception], ...] = (
    BrokerError,
    DeployError,
    KafkaNodeError,
    InstallError,
    TopicMismatchError,
    DeliveryError,
    DeadLetterError,
    PortInUseError,
    AirflowError,
    SparkSetupError,
    EmptyLakeError,
    SupersededError,
    LeftoverError,
    KappaError,
    ScalingError,
    RestartError,
)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one clear line and exit code 1 instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        except KafkaError as error:
            logging.getLogger("lambdactl").debug("the Kafka call that failed", exc_info=True)  # shown with -v
            settings = get_settings()
            typer.secho(
                f"error: Kafka at {settings.bootstrap_servers} did not answer ({error}). Is the broker running? "
                "Check with `lambdactl broker status`, start it with `lambdactl broker start`.",
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    kafka_logger = logging.getLogger("kafka")
    if verbose:
        kafka_logger.setLevel(logging.DEBUG)
        return
    try:
        settings = get_settings()
    except ValidationError as error:  # a LAMBDA_* variable is wrong: say which and how, no traceback
        for item in error.errors(include_url=False):
            if item["loc"]:
                name = "LAMBDA_" + "_".join(str(p) for p in item["loc"]).upper()
                message = f"{name}: {item['msg']} (got {item.get('input')!r})"
            else:  # a rule across settings: its message names them
                message = item["msg"].removeprefix("Value error, ")
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    # kafka-python logs every retry of a connection as an error; the platform reports failures
    # itself, so the client's own chatter goes to a file a user can read when asked to.
    folder = settings.data_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / "kafka-client.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    kafka_logger.addHandler(handler)
    kafka_logger.setLevel(logging.WARNING)
    kafka_logger.propagate = False
    # Group membership (joins, assignments, leaving) is rare and is what explains a group that looks wrong.
    logging.getLogger("kafka.coordinator").setLevel(logging.INFO)


# -- broker ------------------------------------------------------------------------------------


@app.command("install")
@friendly_errors
def install() -> None:
    """Fetch the pinned Kafka broker and Delta-for-Spark jars (Maven) and Chart.js (npm); a no-op when there."""
    java_major_version()
    install_all(progress=typer.echo)
    CHART_JS.install(progress=typer.echo)
    typer.echo("pinned jars and the dashboard's chart library installed")


@broker_app.command("start")
@friendly_errors
def broker_start() -> None:
    """Start the broker (formatting its storage on first start) and wait until it answers."""
    KAFKA_JARS.install(progress=typer.echo)
    status, started = LocalBroker(get_settings()).start()
    typer.echo(("started: " if started else "already running: ") + status.describe())


@broker_app.command("stop")
@friendly_errors
def broker_stop(
    node: Annotated[int | None, typer.Option(help="Only this node of a 3-node cluster (to see failover).")] = None,
) -> None:
    """Stop the broker gracefully; its data stays for the next start."""
    broker = LocalBroker(get_settings())
    if node is not None:
        stopped = broker.node(node).stop()
        typer.echo(f"broker node {node} stopped" if stopped else f"broker node {node} was not running")
        return
    stopped = broker.stop()
    typer.echo("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
@friendly_errors
def broker_status() -> None:
    """Say whether the broker runs and answers metadata requests (exit 1 if not)."""
    status = LocalBroker(get_settings()).status()
    typer.echo(status.describe())
    if not status.ready:
        raise typer.Exit(1)


@broker_app.command("logs")
@friendly_errors
def broker_logs(lines: Annotated[int, typer.Option(help="How many lines.")] = 40) -> None:
    """Print the end of the broker's log."""
    typer.echo(LocalBroker(get_settings()).log_tail(lines))


THROTTLE_HELP = "Replication throttle while replicas move, MB/s per broker (removed afterwards)."


@broker_app.command("add")
@friendly_errors
def broker_add(
    throttle_mb: Annotated[float, typer.Option(help=THROTTLE_HELP)] = 50.0,
) -> None:
    """Scale out: start one more broker-only node and move a fair share of the replicas onto it."""
    from infra.scaling import rebalance

    settings = get_settings()
    node = LocalBroker(settings).add_node()
    typer.echo(f"broker node {node.node_id} up at {node.bootstrap}; rebalancing the replicas of every topic")
    rebalance(settings, show=typer.echo, throttle_mb_s=throttle_mb)


@broker_app.command("rebalance")
@friendly_errors
def broker_rebalance(
    throttle_mb: Annotated[float, typer.Option(help=THROTTLE_HELP)] = 50.0,
) -> None:
    """Spread every topic's replicas evenly over the live brokers (any cluster, local or not)."""
    from infra.scaling import rebalance

    rebalance(get_settings(), show=typer.echo, throttle_mb_s=throttle_mb)


@broker_app.command("drain")
@friendly_errors
def broker_drain(
    node: Annotated[int, typer.Option(help="The broker to move every replica off.")],
    throttle_mb: Annotated[float, typer.Option(help=THROTTLE_HELP)] = 50.0,
) -> None:
    """Move every replica off one broker, refusing when replication or min ISR could not be kept."""
    from infra.scaling import drain

    drain(get_settings(), node, show=typer.echo, throttle_mb_s=throttle_mb)


@broker_app.command("remove")
@friendly_errors
def broker_remove(
    node: Annotated[int, typer.Option(help="An added broker-only node of the local cluster.")],
    throttle_mb: Annotated[float, typer.Option(help=THROTTLE_HELP)] = 50.0,
) -> None:
    """Scale in: drain a broker-only node, then stop it and delete its data."""
    from infra.scaling import drain

    settings = get_settings()
    broker = LocalBroker(settings)
    if not broker.node(node).broker_only:
        broker.remove_node(node)  # refuses with the reason (a controller voter)
    drain(settings, node, show=typer.echo, throttle_mb_s=throttle_mb)
    broker.remove_node(node)
    typer.echo(f"broker node {node} stopped and its data deleted")


@broker_app.command("run-node")
@friendly_errors
def broker_run_node(
    node_id: Annotated[int, typer.Option(help="This node's id in the cluster.")],
    host: Annotated[str, typer.Option(help="The name other containers reach this node by.")],
    voters: Annotated[str, typer.Option(help="The controller quorum: id@host:port,...")],
    cluster_id: Annotated[str, typer.Option(envvar="KAFKA_CLUSTER_ID", help="The cluster's id (formatted once).")],
    broker_only: Annotated[bool, typer.Option(help="A broker that is not a controller voter.")] = False,
) -> None:
    """Run one Kafka node in the foreground (a container's main process), from the pinned jars."""
    from infra.kafka_node import container_node, run_in_foreground

    settings = get_settings()
    run_in_foreground(settings, container_node(settings, node_id, host, voters, not broker_only), cluster_id)


# -- topics ------------------------------------------------------------------------------------


@topics_app.command("describe")
@friendly_errors
def topics_describe(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per partition.")] = False,
) -> None:
    """Per partition of the events topic: leader, replicas, in-sync replicas and end offset."""
    from infra.topics import describe_partitions

    settings = get_settings()
    with admin_client(settings) as admin:
        partitions = describe_partitions(admin, settings)
    for partition in partitions:
        if as_json:
            typer.echo(json.dumps(asdict(partition), sort_keys=True))
        else:
            typer.echo(partition.describe())


@topics_app.command("create")
@friendly_errors
def topics_create() -> None:
    """Create the events and dead-letter topics from settings (idempotent)."""
    settings = get_settings()
    with admin_client(settings) as admin:
        for report in ensure_topics(admin, platform_topics(settings)):
            verb = "created" if report.created else "exists "
            typer.echo(f"{verb} {report.name} ({report.partitions} partitions)")


# -- sources -----------------------------------------------------------------------------------


@app.command("simulate")
@friendly_errors
def simulate(
    source: Annotated[list[str], typer.Option(help="web, app or sensor; repeat for several.")] = list(SOURCES),
    rate: Annotated[float, typer.Option(help="Records per second, per source.")] = DEFAULTS.rate,
    count: Annotated[int | None, typer.Option(help="Stop after this many records in all.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    late_share: Annotated[float, typer.Option(help="Share of app events delivered late.")] = DEFAULTS.late_share,
    max_lateness_minutes: Annotated[
        float, typer.Option(help="How late a late app event can be.")
    ] = DEFAULTS.max_lateness.total_seconds() / 60,
    duplicate_share: Annotated[
        float, typer.Option(help="Share of records that redeliver an earlier event.")
    ] = DEFAULTS.duplicate_share,
    cross_partition_share: Annotated[
        float, typer.Option(help="Share of redeliveries resent under another key (another partition).")
    ] = DEFAULTS.cross_partition_share,
    malformed_share: Annotated[
        float, typer.Option(help="Share of records that are invalid.")
    ] = DEFAULTS.malformed_share,
    seed: Annotated[int, typer.Option(help="Same seed and start, same records.")] = DEFAULTS.seed,
    start: Annotated[datetime | None, typer.Option(help="Simulated start time (UTC); default now.")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Send as fast as possible, not in real time.")] = False,
    serde: Annotated[str | None, typer.Option(help="json, avro-v1 or avro-v2; default: the setting `serde`.")] = None,
) -> None:
    """Produce simulated web, app and sensor events to the events topic."""
    settings = get_settings()
    try:
        wire_format = get_serde(serde or settings.serde)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    unknown = [s for s in source if s not in SOURCES]
    if unknown:
        raise typer.BadParameter(f"unknown source {', '.join(unknown)}; choose web, app or sensor")
    begin = start or datetime.now(UTC)
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=UTC)
    sources: list[Source] = [s for s in SOURCES if s in source]
    simulators = build_simulators(
        sources,
        rate=rate,
        serde=wire_format,
        start=begin,
        seed=seed,
        late_share=late_share,
        max_lateness=timedelta(minutes=max_lateness_minutes),
        duplicate_share=duplicate_share,
        cross_partition_share=cross_partition_share,
        malformed_share=malformed_share,
    )
    stop = stop_on_signals()
    producer = BatchingProducer(settings, settings.events_topic)
    typer.echo(
        f"simulating {', '.join(sources)} at {rate:,.0f} records/s each into {settings.events_topic} "
        f"as {wire_format.name} (Ctrl-C stops)"
    )

    def show(report: RunReport) -> None:
        typer.echo(report.describe())

    report = run_simulation(
        simulators, producer, count=count, duration_s=duration, realtime=not fast, stop=stop, progress=show
    )
    typer.echo(("stopped, producer flushed: " if stop.is_set() else "done: ") + report.describe())


# -- consumers ---------------------------------------------------------------------------------


@app.command("watch")
@friendly_errors
def watch(
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
) -> None:
    """Consume the events topic, dead-letter invalid records, and show live rates."""
    settings = get_settings()
    stop = stop_on_signals()
    if duration is not None:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True
        timer.start()
    totals = run_monitor(settings, stop, show=lambda tick: typer.echo(tick.describe()))
    typer.echo(f"valid {totals.accepted:,} rejected {totals.rejected:,}")


@app.command("dlq")
@friendly_errors
def dlq(last: Annotated[int, typer.Option(help="How many recent dead letters to show.")] = 10) -> None:
    """Count the dead letters and show the most recent ones with their reasons."""
    settings = get_settings()
    summary = read_dead_letters(settings, last)
    typer.echo(f"{summary.total:,} records in {settings.dead_letter_topic}")
    for letter in summary.recent:
        origin = f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}"
        typer.echo(f"  {letter.rejected_at:%Y-%m-%d %H:%M:%S} {origin} by {letter.rejected_by}: {letter.reason}")


# -- batch layer -------------------------------------------------------------------------------


@app.command("lake-sink")
@friendly_errors
def lake_sink() -> None:
    """Consume the events topic into the lake (Delta), exactly once; SIGTERM or Ctrl-C stops it."""
    from batch_layer.lake_sink import LakeSink

    settings = get_settings()
    stop = stop_on_signals()
    typer.echo(f"lake sink: {settings.events_topic} -> {settings.lake_path} (group {settings.lake_sink_group})")
    stats = LakeSink(settings).run(stop)
    typer.echo(f"lake sink stopped: {stats.commits} commits, {stats.rows:,} rows, {stats.rejected:,} dead letters")


@app.command("speed")
@friendly_errors
def speed() -> None:
    """Run a speed worker (a consumer group member; start several to share partitions)."""
    from speed_layer.worker import SpeedWorker

    settings = get_settings()
    stop = stop_on_signals()
    typer.echo(f"speed worker: {settings.events_topic} -> {settings.speed_views_path} (group {settings.speed_group})")
    worker = SpeedWorker(settings)
    worker.run(stop)
    typer.echo(
        f"speed worker stopped after counting {worker.events_counted:,} events; {worker.copies_elsewhere:,} copies "
        f"were counted elsewhere first, {worker.copies_waited:,} times a copy waited for a publish of ours"
    )


@app.command("sql")
@friendly_errors
def sql(
    statement: Annotated[
        str, typer.Argument(help="A SELECT over the merged views, e.g. 'SELECT * FROM serving_status'.")
    ],
    max_rows: Annotated[int, typer.Option(help="Rows to print.")] = 40,
    as_json: Annotated[
        bool, typer.Option("--json", help="Every row as one JSON object per line (decimals and times as text).")
    ] = False,
) -> None:
    """Query the merged views (batch + speed, exact) with SQL; read-only."""
    from serving_layer.query import RefusedQueryError, check_read_only, serving_connection

    connection = serving_connection(get_settings())
    try:
        check_read_only(connection, statement)
        relation = connection.sql(statement)
        if as_json:
            for row in relation.to_arrow_table().to_pylist():
                typer.echo(json.dumps(row, default=_json_value, sort_keys=True))
        else:
            relation.show(max_rows=max_rows, max_width=200)
    except (RefusedQueryError, duckdb.Error) as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    finally:
        connection.close()


def _json_value(value: object) -> object:
    """Whole decimals (e.g. a sum of counts) as JSON numbers; other decimals and times as exact text."""
    if isinstance(value, Decimal) and value == value.to_integral_value() and value.as_tuple().exponent == 0:
        return int(value)
    return str(value)


@app.command("dashboard")
@friendly_errors
def dashboard() -> None:
    """Serve the live dashboard (charts of the platform and its merged views) and /metrics until stopped."""
    stop = stop_on_signals()
    from lambdactl.dashboard import serve_dashboard

    settings = get_settings()
    ensure_port_free(settings.dashboard_host, settings.dashboard_port, "LAMBDA_DASHBOARD_PORT")
    typer.echo(f"dashboard: http://{settings.dashboard_host}:{settings.dashboard_port}/ (Prometheus text at /metrics)")
    serve_dashboard(settings, stop)


@app.command("serve")
@friendly_errors
def serve() -> None:
    """Serve the merged views: live in memory, over the Postgres protocol, and as a DuckDB file."""
    from serving_layer.pgwire.server import EndpointConfigError
    from serving_layer.process import run_serving

    settings = get_settings()
    stop = stop_on_signals()
    if settings.serving_pg_password.get_secret_value():
        ensure_port_free(settings.serving_pg_host, settings.serving_pg_port, "LAMBDA_SERVING_PG_PORT")
        ensure_port_free(settings.serving_pg_host, settings.serving_metrics_port, "LAMBDA_SERVING_METRICS_PORT")
    try:
        run_serving(settings, stop, typer.echo)
    except EndpointConfigError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@batch_app.command("advance")
@friendly_errors
def batch_advance(
    run_id: Annotated[str | None, typer.Option(help="Re-running an id repeats its plan; default: a new id.")] = None,
) -> None:
    """Advance the batch views to what the lake holds (incremental: the new records' cost)."""
    from batch_layer.operations import advance_batch_views

    published = advance_batch_views(get_settings(), run_id or f"cli/{datetime.now(UTC):%Y%m%dT%H%M%S}")
    typer.echo(json.dumps(published, sort_keys=True))


@batch_app.command("recompute")
@friendly_errors
def batch_recompute(
    first_day: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Empty: the first day.")] = None,
    last_day: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Empty: the last day.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Re-running an id repeats its plan; default: a new id.")] = None,
) -> None:
    """Recompute event days from the lake at the current cutoffs (all days when both are empty)."""
    from batch_layer.operations import recompute_batch_views

    first, last = (day.date() if day else None for day in (first_day, last_day))
    run = run_id or f"cli-recompute/{datetime.now(UTC):%Y%m%dT%H%M%S}"
    typer.echo(json.dumps(recompute_batch_views(get_settings(), run, first, last), sort_keys=True))


@app.command("lake")
@friendly_errors
def lake_status() -> None:
    """How far the lake is complete per partition, against the end of the topic."""
    from lambdactl.lake_status import describe_lake

    for line in describe_lake(get_settings()):
        typer.echo(line)


@app.command("status")
@friendly_errors
def status(
    check: Annotated[
        str | None,
        typer.Option(help="Only this component (kafka, lake, speed, batch, serving, airflow); exit 1 if down."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Each component up or down, events/s in, lag per consumer and partition, freshness, batch age, DLQ."""
    from lambdactl import status as platform_status

    if check is not None and check not in platform_status.PARTS:
        raise typer.BadParameter(f"unknown component {check!r}; known: {', '.join(platform_status.PARTS)}")
    parts = (check,) if check else platform_status.PARTS
    found = platform_status.collect(get_settings(), sample_s=0 if check else 1.0, parts=parts)
    for line in [platform_status.as_json(found)] if as_json else platform_status.render(found):
        typer.echo(line)
    if check and not platform_status.healthy(found, check):
        raise typer.Exit(1)


# -- benchmarks and the demo -------------------------------------------------------------------


@bench_app.command("producer")
@friendly_errors
def bench_producer(
    events: Annotated[int, typer.Option(help="Events per round.")] = 200_000,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; the median is reported.")] = 3,
) -> None:
    """Producer events/s and MB/s against a bare kafka-python loop, with the ratio."""
    from benchmarks.producer import report, run_producer_benchmark

    for line in report(run_producer_benchmark(get_settings(), events, rounds, show=typer.echo)):
        typer.echo(line)


@bench_app.command("replay")
@friendly_errors
def bench_replay(
    events: Annotated[int, typer.Option(help="Events in the replayed topic.")] = 300_000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Replay processes (default: one per core, as `kappa replay`).")
    ] = None,
) -> None:
    """Kappa replay events/s against the live speed layer and a bare consumer; Kappa = Lambda = recompute?"""
    from benchmarks.replay import report, run_replay_benchmark

    for line in report(run_replay_benchmark(get_settings(), events, show=typer.echo, workers=workers)):
        typer.echo(line)


@bench_app.command("batch")
@friendly_errors
def bench_batch(events: Annotated[int, typer.Option(help="Events in the day.")] = 1_000_000) -> None:
    """Spark's recompute of a day of events against DuckDB over the same lake files."""
    from benchmarks.batch import report, run_batch_benchmark

    for line in report(run_batch_benchmark(get_settings(), events, show=typer.echo)):
        typer.echo(line)


@bench_app.command("batch-growth")
@friendly_errors
def bench_batch_growth(
    history: Annotated[
        int, typer.Option(help="Events of history in the small lake (the large one has 10x).")
    ] = 200_000,
    days: Annotated[int, typer.Option(help="Days the history spans (the same for both lakes).")] = 2,
    new_events: Annotated[int, typer.Option(help="The batch of new events each lake gets.")] = 100_000,
    repeats: Annotated[int, typer.Option(help="Timed runs per figure; the best is reported.")] = 2,
) -> None:
    """An incremental batch run on a small lake and on one ten times larger; Spark against DuckDB."""
    from benchmarks.batch_growth import report, run_growth_benchmark

    figures = run_growth_benchmark(
        get_settings(), history=history, days=days, new_events=new_events, repeats=repeats, show=typer.echo
    )
    for line in report(figures):
        typer.echo(line)


@bench_app.command("footprint")
@friendly_errors
def bench_footprint(
    rate: Annotated[float, typer.Option(help="Events per second, all sources together.")] = 1000.0,
    seconds: Annotated[float, typer.Option(help="How long to run.")] = 120.0,
    warmup: Annotated[float, typer.Option(help="Seconds of start-up left out of the figures.")] = 30.0,
) -> None:
    """CPU and memory of broker, simulators, lake sink, speed and serve at a steady rate; bytes on disk."""
    from benchmarks.footprint import report, run_footprint

    for line in report(run_footprint(get_settings(), rate, seconds, warmup, show=typer.echo)):
        typer.echo(line)


@bench_app.command("chaos")
@friendly_errors
def bench_chaos(
    minutes: Annotated[float, typer.Option(help="How long to soak.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Same seed, same kill plan and records.")] = 7,
    rate: Annotated[float, typer.Option(help="Records per second, per source.")] = 100.0,
    cross_partition_share: Annotated[
        float, typer.Option(help="Share of redeliveries resent under another key (another partition).")
    ] = 0.5,
    kill: Annotated[
        list[str] | None,
        typer.Option(
            help="Kill only these (repeatable): broker, lake-sink, speed, speed-outage (one killed, the other "
            "frozen across a batch publish), serve, batch-spark, batch-publish."
        ),
    ] = None,
    no_kills: Annotated[bool, typer.Option("--no-kills", help="Kill nothing: the soak's baseline.")] = False,
    keep_data: Annotated[
        Path | None,
        typer.Option(help="A new or empty folder to run in and keep: every component's log, lake, views."),
    ] = None,
) -> None:
    """The whole platform under random SIGKILLs; merged views checked against a recompute every second."""
    from benchmarks.chaos import KINDS, report, run_chaos

    unknown = sorted(set(kill or ()) - set(KINDS))
    if unknown:
        raise typer.BadParameter(f"unknown kind(s) {unknown}; choose from {', '.join(KINDS)}", param_hint="--kill")
    figures = run_chaos(
        get_settings(),
        minutes=minutes,
        seed=seed,
        rate=rate,
        cross_partition_share=cross_partition_share,
        kinds=() if no_kills else tuple(kill or KINDS),
        keep_data=keep_data,
        show=typer.echo,
    )
    for line in report(figures):
        typer.echo(line)


@bench_app.command("overload")
@friendly_errors
def bench_overload(
    minutes: Annotated[float, typer.Option(help="How long to offer the overload.")] = 10.0,
    factor: Annotated[float, typer.Option(help="The load offered, as a multiple of the measured capacity.")] = 2.0,
    consumer_cores: Annotated[
        float,
        typer.Option(
            help="CPU quota of the lake sink and of the speed worker, each (a cgroup; needs root). "
            "0: none, but then producers on the same cores may not offer the factor asked."
        ),
    ] = 0.1,
) -> None:
    """Twice the load the platform sustains for minutes: memory per process, lag, recovery, losses."""
    from benchmarks.cpu_quota import QuotaUnavailableError  # benchmarks are not in the deployment's image
    from benchmarks.overload import report, run_overload

    try:
        figures = run_overload(
            get_settings(), minutes=minutes, factor=factor, consumer_cores=consumer_cores, show=typer.echo
        )
    except QuotaUnavailableError as error:
        raise typer.BadParameter(str(error), param_hint="--consumer-cores") from None
    for line in report(figures):
        typer.echo(line)


@bench_app.command("freshness")
@friendly_errors
def bench_freshness(
    rate: Annotated[float, typer.Option(help="Sustained events/s while measuring freshness.")] = 10_000,
    seconds: Annotated[float, typer.Option(help="How long to sustain it.")] = 30,
    events: Annotated[
        int,
        typer.Option(
            help="Events for the throughput comparison (enough that start-up and the last publish are a small share)."
        ),
    ] = 500_000,
) -> None:
    """Produce-to-visible p50/p99, speed events/s against a bare consumer, merged-query latency."""
    from benchmarks.freshness import report, run_freshness_benchmark

    for line in report(run_freshness_benchmark(get_settings(), rate, seconds, events, show=typer.echo)):
        typer.echo(line)


@bench_app.command("serving")
@friendly_errors
def bench_serving(
    rate: Annotated[float, typer.Option(help="Events/s ingested while the clients query.")] = 10_000,
    seconds: Annotated[float, typer.Option(help="How long to sustain it.")] = 30,
    clients: Annotated[int, typer.Option(help="Concurrent psycopg clients running the dashboard query.")] = 8,
) -> None:
    """Dashboard queries through the Postgres endpoint (p50/p99, qps), merged vs pre-merged, freshness."""
    from benchmarks.serving import report, run_serving_benchmark

    for line in report(run_serving_benchmark(get_settings(), rate, seconds, clients, show=typer.echo)):
        typer.echo(line)


@app.command("demo")
@friendly_errors
def demo(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    rate: Annotated[float, typer.Option(help="Records per second, per source.")] = DEFAULTS.rate,
    batch_every_minutes: Annotated[int, typer.Option(help="Cadence of the batch_views DAG.")] = 1,
    airflow: Annotated[bool, typer.Option(help="Start Airflow (the batch DAGs) too.")] = True,
) -> None:
    """The platform's main job on the embedded default: broker, sources, lake sink, Airflow, monitor."""
    from lambdactl.demo import run_demo

    settings = get_settings()
    settings = settings.model_copy(
        update={
            "batch_interval_minutes": batch_every_minutes,
            # versions superseded for ten intervals go, so the views on disk stay flat at any cadence
            "batch_prune_min_age_minutes": min(settings.batch_prune_min_age_minutes, 10 * batch_every_minutes),
        }
    )
    run_demo(settings, duration_s=duration, rate=rate, with_airflow=airflow, echo=typer.echo)


@app.command("stop")
@friendly_errors
def stop() -> None:
    """Stop every process of a run on this data dir (demo, services, Airflow, broker nodes), cleanly."""
    from lambdactl.services import stop_run

    settings = get_settings()
    stopped = stop_run(settings.data_dir, echo=typer.echo)
    where = settings.data_dir.resolve()
    typer.echo(f"stopped {len(stopped)} process(es) of {where}" if stopped else f"nothing runs on {where}")


@app.command("restart")
@friendly_errors
def restart(
    services: Annotated[list[str], typer.Argument(help="Of the running demo: simulate, lake-sink, speed, serve.")],
) -> None:
    """Restart services of the running demo one at a time (new code, a new view); the rest keeps running."""
    from lambdactl.keep_alive import restart_services

    restart_services(get_settings().data_dir, services, echo=typer.echo)


# -- Kappa -------------------------------------------------------------------------------------------


@kappa_app.command("replay")
@friendly_errors
def kappa_replay(
    name: Annotated[str, typer.Option(help="The Kappa set (a folder under data/kappa).")] = "replay",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes sharing the partitions (default: one per core, at most one per partition); "
            "each holds every id the set counted, about 28 bytes an event.",
        ),
    ] = None,
) -> None:
    """Replay the events topic from offset 0 into a Kappa set, up to what the live platform serves now."""
    from lambdactl.kappa import default_workers, kappa_settings, plan_replay, replay

    settings = get_settings()
    plan = plan_replay(settings, name)
    typer.echo(
        f"Kappa set {name} in {kappa_settings(settings, name).data_dir}: replaying {sum(plan.target.values()):,} "
        f"offsets (the position the live platform served at {plan.planned_at}, batch version "
        f"{plan.lambda_batch_version})"
    )
    progress = replay(settings, name, workers=workers or default_workers(), stop=stop_on_signals(), show=typer.echo)
    typer.echo(
        f"replayed: {progress.describe()} in {progress.seconds:,.1f} s. Next: `lambdactl kappa verify --name {name}`"
    )


@kappa_app.command("replay-partitions", hidden=True)
@friendly_errors
def kappa_replay_partitions(
    name: Annotated[str, typer.Option(help="The Kappa set being replayed.")],
    partitions: Annotated[str, typer.Option(help="Comma-separated partitions of this share.")],
) -> None:
    """One share of a parallel replay; started and driven by `lambdactl kappa replay --workers N`."""
    from lambdactl.kappa import replay_partitions

    replay_partitions(get_settings(), name, [int(p) for p in partitions.split(",")])


@kappa_app.command("verify")
@friendly_errors
def kappa_verify(
    name: Annotated[str, typer.Option(help="The Kappa set to compare.")] = "replay",
) -> None:
    """Compare the Kappa views, the Lambda merged views and a recompute from the lake at one position."""
    from lambdactl.kappa import report_lines, verify

    lines = report_lines(verify(get_settings(), name))
    for line in lines:
        typer.echo(line)
    if lines[-1] != "identical=true":
        raise typer.Exit(1)


@kappa_app.command("run")
@friendly_errors
def kappa_run(
    name: Annotated[str, typer.Option(help="The Kappa set to keep live (after its replay).")] = "replay",
) -> None:
    """Keep a replayed Kappa set live: its own speed worker, from where the replay stopped, with no end."""
    from lambdactl.kappa import PLAN, kappa_settings
    from speed_layer.worker import SpeedWorker

    stop = stop_on_signals()
    settings = kappa_settings(get_settings(), name)
    if not (settings.data_dir / PLAN).exists():
        raise KappaError(f"no Kappa set {name}: run `lambdactl kappa replay --name {name}` first")
    typer.echo(f"Kappa set {name} live: {settings.events_topic} -> {settings.speed_views_path}")
    SpeedWorker(settings).run(stop)


@kappa_app.command("switch")
@friendly_errors
def kappa_switch(
    name: Annotated[str | None, typer.Option(help="The verified Kappa set serving should read.")] = None,
    to_lambda: Annotated[bool, typer.Option("--lambda", help="Serve the Lambda views (batch + speed) again.")] = False,
    timeout_s: Annotated[float, typer.Option(help="How long to wait for the set to catch up.")] = 120.0,
) -> None:
    """Blue/green: serving reads another view set from its next snapshot on (readers never see a mix)."""
    from lambdactl.kappa import switch

    if (name is None) == (not to_lambda):
        raise typer.BadParameter("give either --name SET or --lambda")
    switch(get_settings(), name or "lambda", show=typer.echo, timeout_s=timeout_s)


@kappa_app.command("retire")
@friendly_errors
def kappa_retire(
    name: Annotated[str, typer.Option(help="A Kappa set serving does not read.")],
) -> None:
    """Delete a Kappa set that is not served (refused within the grace period after a switch away)."""
    from lambdactl.kappa import retire

    settings = get_settings()
    retire(settings, name, grace_s=settings.speed_prune_grace_seconds)
    typer.echo(f"Kappa set {name} deleted")


@schemas_app.command("check")
def schemas_check() -> None:
    """Refuse a schema catalog that may not ship: edited versions, or any version not FULL_TRANSITIVE compatible."""
    from lambda_contracts.schema_registry import check_catalog, load_catalog

    catalog = load_catalog()
    for schema in catalog.versions:
        role = "  (the contract's reader schema)" if schema.version == catalog.contract_version else ""
        typer.echo(
            f"{catalog.subject} v{schema.version}: id {schema.schema_id}, sha256 {schema.fingerprint[:16]}{role}"
        )
    problems = check_catalog(catalog)
    for problem in problems:
        typer.secho(f"refused: {problem}", fg=typer.colors.RED, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("compatible: every version reads every other (FULL_TRANSITIVE), none edited after registration")


# -- deployment --------------------------------------------------------------------------------


@deploy_app.command("env")
@friendly_errors
def deploy_env(
    env_file: Annotated[Path, typer.Option(help="Where to write it.")] = ENV_FILE,
) -> None:
    """Write the compose .env with fresh random secrets (refuses to overwrite an existing one)."""
    write_env(env_file)
    typer.echo(f"wrote {env_file} (mode 600): Kafka cluster id, Airflow admin password, Fernet key, JWT secret,")
    typer.echo("Postgres password. Next: `lambdactl deploy prepare`, then `docker compose ... up -d --build --wait`.")


@deploy_app.command("prepare")
@friendly_errors
def deploy_prepare(
    env_file: Annotated[Path, typer.Option(help="The .env that records the base image to build on.")] = ENV_FILE,
) -> None:
    """Fetch the wheels (uv.lock) and jars the images install, and make sure the Debian base image exists."""
    base = prepare(progress=typer.echo, env_file=env_file)
    typer.echo(f"ready to build: docker compose -f {COMPOSE_FILE} up -d --build --wait (base {base.name})")


@app.command("airflow-init")
@friendly_errors
def airflow_init(
    passwords_file: Annotated[Path, typer.Option(help="Airflow's simple auth manager passwords file.")] = Path(
        "/opt/airflow/passwords.json"
    ),
) -> None:
    """A deployment's one-shot Airflow set-up: migrate the metadata database, set the admin password."""
    from lambdactl.airflow_local import init_deployed_airflow

    init_deployed_airflow(get_settings(), passwords_file)
    typer.echo(f"Airflow's database is migrated; admin password set in {passwords_file}")


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so services finish their current commit and exit."""
    stop = threading.Event()

    def request_stop(signum: int, _: object) -> None:
        logging.getLogger("lambdactl").info("%s received: finishing the current commit", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def main() -> None:
    app()


if __name__ == "__main__":
    main()
