"""The Postgres wire endpoint with real clients over the live merged views of a running platform.

Real broker, lake sink, speed worker and Spark batch publish while the serving process refreshes
its live views; psycopg readers compare what they see (status and every view in one transaction,
so one snapshot) with an independent recompute of exactly the events that snapshot reflects.
Then psql, SQLAlchemy's reflection and the PostgreSQL JDBC driver browse and query it, and the
limits hold: read-only, statement timeout, cancel, memory, connections, password, TLS.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from pyspark.sql import SparkSession

from batch_layer.batch_job import run_batch
from batch_layer.lake_sink import LakeSink
from infra.jars import JarSet
from lambda_contracts.settings import Settings
from lambda_contracts.views import BUCKET, VIEWS
from serving_layer.live import LiveViews
from serving_layer.pgwire import server
from serving_layer.pgwire.server import PgEndpoint
from speed_layer.worker import SpeedWorker
from tests.flows import free_ports, lively_simulators, producing, wait_for, whole_platform_settings
from tests.oracle import Reading, compare, reflected_events, view_rows

pytestmark = pytest.mark.integration
PASSWORD = "s3cret-for-tests"
JDBC = JarSet("PostgreSQL JDBC", Path(__file__).parent / "jdbc" / "pom.xml", Path(__file__).parent / "jdbc" / "libs")


def _url(settings: Settings, password: str = PASSWORD) -> str:
    return f"postgresql://{settings.serving_pg_user}:{password}@127.0.0.1:{settings.serving_pg_port}/lambda"


def _rows(cursor: psycopg.Cursor[Any], sql: str) -> list[tuple[object, ...]]:
    rows = cursor.execute(sql).fetchall()
    return sorted((tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in row) for row in rows), key=repr)


def _read_through_pg(settings: Settings) -> Reading:
    with psycopg.connect(_url(settings)) as connection, connection.transaction(), connection.cursor() as cursor:
        status_cursor = cursor.execute("SELECT * FROM serving_status")
        names = [c.name for c in status_cursor.description or []]
        status = [dict(zip(names, row, strict=True)) for row in status_cursor.fetchall()]
        merged = {view.name: _rows(cursor, f"SELECT * FROM {view.name}") for view in VIEWS}
    return status, merged


@pytest.fixture
def serving(kafka: Settings, spark: SparkSession, tmp_path: Path) -> Iterator[tuple[Settings, LiveViews, PgEndpoint]]:
    """A platform with traffic flowing and batch publishes, and the serving process's endpoint on it."""
    settings = whole_platform_settings(kafka, tmp_path).model_copy(
        update={
            "serving_pg_password": SecretStr(PASSWORD),
            "serving_pg_port": free_ports(1)[0],
            "serving_statement_timeout_seconds": 5.0,
            "serving_max_connections": 6,
            "serving_memory_limit_mb": 256,
        }
    )
    stop = threading.Event()
    live = LiveViews(settings)
    live.refresh()
    live.lock()
    endpoint = PgEndpoint(settings, live)
    threads = [
        threading.Thread(target=LakeSink(settings).run, args=(stop,)),
        threading.Thread(target=SpeedWorker(settings).run, args=(stop,)),
        threading.Thread(target=live.run, args=(stop,)),
        threading.Thread(target=endpoint.serve_forever, args=(0.1,)),
    ]
    for thread in threads:
        thread.start()
    try:
        with producing(settings, lively_simulators(seed=47, rate=150.0)):
            time.sleep(2.0)  # some events first, so the batch run has a lake to read
            run_batch(settings, "pg-endpoint-0", lambda: spark)
            yield settings, live, endpoint
    finally:
        stop.set()
        endpoint.shutdown()
        endpoint.server_close()
        for thread in threads:
            thread.join()
        live.close()


def test_real_clients_see_exact_views_and_the_limits_hold(serving: tuple[Settings, LiveViews, PgEndpoint]) -> None:
    settings, live, endpoint = serving
    # exact at every instant: concurrent readers, each query pair in one transaction (one snapshot)
    failures: list[BaseException] = []
    reflected: list[int] = []

    def reader() -> None:
        try:
            for _ in range(3):
                reflected.append(compare(settings, _read_through_pg)[0])
        except BaseException as error:
            failures.append(error)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    assert not failures, failures
    assert len(reflected) == 6 and max(reflected) > 0
    assert live.latest is not None and live.latest.number > 1  # refreshed as the layers published
    _kept_results_are_exact(settings)

    _psql_queries_and_describes(settings)
    _psycopg_extended_protocol(settings)
    _sqlalchemy_reflects_every_view(settings)
    _jdbc_browses_and_queries(settings)
    _limits_hold(settings, endpoint)
    _metrics_count_what_happened(endpoint)


def _kept_results_are_exact(settings: Settings) -> None:
    """Outside a transaction a statement may be answered from the result cache. One statement carries
    the reflected offsets and, per view, its row count and the sum of each counting measure: every
    answer, kept or not, must equal a recompute of exactly the events below those offsets."""
    counted = [
        (view, index, measure.name)
        for view in VIEWS
        for index, measure in enumerate(view.measures, start=1 + len(view.dimensions))
        if measure.aggregate == "count"
    ]
    sql = (
        "SELECT (SELECT string_agg(kafka_partition || ':' || reflected_offset, ',') FROM serving_status), "
        + ", ".join(f"(SELECT count(*) FROM {view.name})" for view in VIEWS)
        + "".join(f", (SELECT coalesce(sum({name}), 0) FROM {view.name})" for view, _, name in counted)
    )
    answers: list[tuple[Any, ...]] = []
    with psycopg.connect(_url(settings), autocommit=True) as connection:
        for _ in range(20):  # back to back: most are answered from the cache, some after a refresh
            row = connection.execute(sql).fetchone()
            assert row is not None
            answers.append(tuple(row))
            time.sleep(0.05)
    for answer in {answer: None for answer in answers}:
        reflected = {int(p): int(o) for p, o in (pair.split(":") for pair in str(answer[0]).split(","))}
        events = reflected_events(settings, reflected)
        expected = {view.name: view_rows(events, view) for view in VIEWS}
        assert list(answer[1 : 1 + len(VIEWS)]) == [len(expected[view.name]) for view in VIEWS], answer
        sums = [sum(row[index] for row in expected[view.name]) for view, index, _ in counted]
        assert list(answer[1 + len(VIEWS) :]) == sums, answer


def _metrics_count_what_happened(endpoint: PgEndpoint) -> None:
    """The serving process's /metrics text, parsed with the official Prometheus client's parser."""
    text = generate_latest(endpoint.metrics.registry).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    statements = {
        labels[0][1]: value for (name, labels), value in samples.items() if name == "lambda_serving_statements_total"
    }
    assert statements["ok"] > 10 and statements["read_only"] >= 3 and statements["files"] >= 1
    assert statements["cancelled"] >= 2 and statements["memory_limit"] >= 1
    assert samples[("lambda_serving_refused_connections_total", ())] >= 1
    assert samples[("lambda_serving_logins_total", (("outcome", "refused"),))] >= 1
    assert samples[("lambda_serving_statement_duration_seconds_count", ())] == sum(statements.values())
    assert samples[("lambda_serving_refreshes_total", ())] > 1
    kept = {
        labels[0][1]: value
        for (name, labels), value in samples.items()
        if name == "lambda_serving_result_cache_lookups_total"
    }
    assert kept["hit"] >= 1 and kept["miss"] >= 1 and kept["bypass"] >= 1, kept
    reflected = [value for (name, _), value in samples.items() if name == "lambda_serving_reflected_offset"]
    assert len(reflected) == endpoint.settings.topic_partitions and sum(reflected) > 0


def _psql_queries_and_describes(settings: Settings) -> None:
    url = _url(settings).replace(f":{PASSWORD}@", "@") + "?sslmode=disable"
    env = {"PGPASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [
            "psql",
            url,
            "-At",
            "-c",
            "SELECT count(*) > 0 FROM serving_status",
            "-c",
            "\\dt",
            "-c",
            "\\d page_views_per_minute",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "t"
    assert {f"public|{v.name}|table|lambda" for v in VIEWS} <= set(lines)
    assert f"{BUCKET}|timestamp with time zone|||" in lines, run.stdout


def _psycopg_extended_protocol(settings: Settings) -> None:
    # one transaction: every query below reads the same snapshot while the layers keep publishing
    with psycopg.connect(_url(settings)) as connection:
        sql = (
            "SELECT page, sum(views) AS views FROM page_views_per_minute WHERE views >= %s GROUP BY page ORDER BY page"
        )
        simple = connection.execute(sql.replace("%s", "1")).fetchall()
        prepared = [connection.execute(sql, [1], prepare=True).fetchall() for _ in range(3)]
        binary = connection.cursor(binary=True).execute(sql, [1]).fetchall()
        assert simple and all(rows == simple for rows in [*prepared, binary])
        version = connection.execute("SELECT version(), current_schema()").fetchone()
        assert version is not None and version[0].startswith("PostgreSQL 16") and version[1] == "public"


def _sqlalchemy_reflects_every_view(settings: Settings) -> None:
    engine = sqlalchemy.create_engine(_url(settings).replace("postgresql://", "postgresql+psycopg://"))
    try:
        inspector = sqlalchemy.inspect(engine)
        assert {v.name for v in VIEWS} | {"serving_status"} <= set(inspector.get_table_names())
        for view in VIEWS:
            table = sqlalchemy.Table(view.name, sqlalchemy.MetaData(), autoload_with=engine)
            assert [c.name for c in table.columns] == list(view.served_columns)
            with engine.connect() as connection:
                assert (
                    connection.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(table)).scalar_one() >= 0
                )
    finally:
        engine.dispose()


def _jdbc_browses_and_queries(settings: Settings) -> None:
    JDBC.install()
    view = VIEWS[0]
    run = subprocess.run(
        [
            "java",
            "-Xmx128m",
            "-cp",
            f"{JDBC.folder}/*",
            str(JDBC.pom.parent / "JdbcProbe.java"),
            f"jdbc:postgresql://127.0.0.1:{settings.serving_pg_port}/lambda",
            settings.serving_pg_user,
            PASSWORD,
            view.name,
            f"SELECT * FROM {view.name} WHERE {view.measure_columns[0]} >= ?",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "schema public" in lines
    assert {f"table {v.name} TABLE" for v in VIEWS} <= set(lines)
    columns = [line.split()[1] for line in lines if line.startswith("column ")]
    assert columns == list(view.served_columns)
    assert {line.split()[1] for line in lines if line.startswith("row ")} == {str(n) for n in range(7)}


def _expect_error(settings: Settings, sql: str, sqlstate: str) -> psycopg.Error:
    with psycopg.connect(_url(settings), autocommit=True) as connection:
        with pytest.raises(psycopg.Error) as caught:
            connection.execute(sql)
        assert caught.value.sqlstate == sqlstate, caught.value
        assert connection.execute("SELECT 1").fetchone() == (1,)  # the session survives its error
    return caught.value


def _open_connections(endpoint: PgEndpoint) -> float | None:
    return endpoint.metrics.registry.get_sample_value("lambda_serving_connections")


def _limits_hold(settings: Settings, endpoint: PgEndpoint) -> None:
    for statement in ("CREATE TABLE t (a INT)", "COPY page_views_per_minute TO '/tmp/x.csv'", "ATTACH '/tmp/x.db'"):
        assert "read-only" in str(_expect_error(settings, statement, "25006"))
    _expect_error(settings, "SELECT * FROM read_csv('/etc/passwd')", "42501")
    started = time.monotonic()
    assert "statement timeout" in str(_expect_error(settings, "SELECT count(*) FROM range(100000000000)", "57014"))
    assert time.monotonic() - started < 15
    _expect_error(
        settings, "SELECT max(len(x)) FROM (SELECT list(repeat('x', 10000)) AS x FROM range(100000))", "53200"
    )
    with psycopg.connect(_url(settings), autocommit=True) as connection:  # a cancel request (psql's Ctrl-C)
        threading.Timer(0.5, connection.cancel_safe).start()  # cancel() would hold the GIL the server needs
        with pytest.raises(psycopg.errors.QueryCanceled):
            connection.execute("SELECT count(*) FROM range(100000000000)")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_url(settings, "wrong"))
    # a closed client frees its place when the server reads its goodbye, a moment later (as in PostgreSQL):
    # the endpoint's own connections gauge says when
    wait_for(lambda: _open_connections(endpoint) == 0, 10, "the earlier clients' places freed")
    held = [psycopg.connect(_url(settings)) for _ in range(settings.serving_max_connections)]
    try:
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            psycopg.connect(_url(settings))
    finally:
        for connection in held:
            connection.close()
    wait_for(lambda: _open_connections(endpoint) == 0, 10, "the held clients' places freed")
    with psycopg.connect(_url(settings), autocommit=True) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)  # a freed place is taken again


def test_tls_when_a_certificate_is_given_and_a_password_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, certificate = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        serving_pg_password=PASSWORD,
        serving_pg_port=free_ports(1)[0],
        serving_pg_tls_cert=certificate,
        serving_pg_tls_key=key,
    )
    with pytest.raises(ValueError, match="LAMBDA_SERVING_PG_PASSWORD"):
        PgEndpoint(settings.model_copy(update={"serving_pg_password": SecretStr("")}), LiveViews(settings))
    live = LiveViews(settings)
    live.refresh()  # nothing published yet: empty views, served all the same
    endpoint = PgEndpoint(settings, live)
    thread = threading.Thread(target=endpoint.serve_forever, args=(0.1,))
    thread.start()
    try:
        with psycopg.connect(_url(settings) + f"?sslmode=verify-ca&sslrootcert={certificate}") as connection:
            assert connection.pgconn.ssl_in_use
            assert connection.execute(f"SELECT count(*) FROM {VIEWS[0].name}").fetchone() == (0,)
        with psycopg.connect(_url(settings) + "?sslmode=disable") as connection:
            assert not connection.pgconn.ssl_in_use  # TLS is offered, not forced
        monkeypatch.setattr(server, "LOGIN_TIMEOUT_S", 0.5)
        with socket.create_connection(("127.0.0.1", settings.serving_pg_port), timeout=10) as silent:
            started = time.monotonic()
            assert silent.recv(1) == b"", "a client that never logs in is disconnected"
            assert time.monotonic() - started < 5
    finally:
        endpoint.shutdown()
        endpoint.server_close()
        thread.join()
        live.close()
