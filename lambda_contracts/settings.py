"""One typed settings object, read once from the environment (prefix ``LAMBDA_``).

Embedded and compose deployments differ only in these values, never in code paths.
Nothing else in the project reads ``os.environ`` for configuration; child processes get their
settings back as LAMBDA_* variables (``child_environment``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Compression = Literal["zstd", "lz4", "gzip", "none"]
NODE_PORT_STEP = 100
"""Node n of a local cluster listens on the configured ports + NODE_PORT_STEP * (n - 1)."""


class Settings(BaseSettings):
    """Every knob of the platform; override any field with ``LAMBDA_<FIELD_NAME>``."""

    model_config = SettingsConfigDict(env_prefix="LAMBDA_", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("data"), description="Root of all local state: broker data, lake, views.")

    # Local (embedded) broker. Ignored when kafka_bootstrap_servers points elsewhere.
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(9092, ge=1, le=65535)
    broker_controller_port: int = Field(9093, ge=1, le=65535)
    broker_heap_mb: int = Field(512, ge=128, description="Bounded JVM heap of the local broker.")
    broker_nodes: int = Field(
        1,
        ge=1,
        le=3,
        description="Local KRaft nodes: 1, or 3 for high availability (node n listens on the ports + 100*(n-1)).",
    )
    broker_ready_timeout_s: float = Field(60.0, gt=0)
    kafka_connect_timeout_s: float = Field(10.0, gt=0, description="How long clients try to reach Kafka.")
    kafka_bootstrap_servers: str = Field("", description="host:port[,host:port]; empty means the local broker.")

    # Topics.
    events_topic: str = "events"
    dead_letter_topic: str = "events.dlq"
    topic_partitions: int = Field(6, ge=1)
    topic_replication_factor: int = Field(1, ge=1)
    topic_min_insync_replicas: int = Field(1, ge=1)
    events_retention_hours: int = Field(168, ge=1)
    dead_letter_retention_hours: int = Field(720, ge=1)

    # Producers.
    producer_compression: Compression = "zstd"
    producer_linger_ms: int = Field(20, ge=0)
    producer_batch_bytes: int = Field(1_048_576, ge=1024)
    producer_acks: Literal["all", "1", "0"] = "all"
    producer_delivery_timeout_ms: int = Field(120_000, ge=1000)

    serde: Literal["json", "avro-v1", "avro-v2"] = Field(
        "json", description="The format producers write (Avro: lambda_contracts/avro/); consumers read them all."
    )

    # Lake sink: a Delta commit holds rows and offsets; flush by size or by time.
    lake_flush_rows: int = Field(100_000, ge=1)
    lake_flush_seconds: float = Field(5.0, gt=0)
    lake_sink_group: str = "lake-sink"
    # Batch layer (Spark).
    spark_master: str = Field("local[*]", description="local[*] embedded, spark://host:7077 on a cluster.")
    spark_driver_memory: str = "1g"
    spark_executor_memory: str = Field("1g", description="Per executor, on a spark:// cluster.")
    spark_driver_host: str = Field("", description="How executors reach the driver; empty: this host's name.")
    spark_shuffle_partitions: int = Field(4, ge=1)

    # Airflow: how often the batch views advance; how much history maintenance keeps.
    batch_interval_minutes: int = Field(60, ge=1, description="Cadence of the batch_views DAG (1 in the demo).")
    batch_keep_versions: int = Field(10, ge=2, description="Batch view versions whose files are kept.")
    batch_prune_min_age_minutes: int = Field(60, ge=0, description="Never delete files younger than this.")
    lake_vacuum_retention_hours: int = Field(
        168, ge=1, description="At least 1: a sink's written but not yet committed files must survive vacuum."
    )
    airflow_port: int = Field(8080, ge=1, le=65535)
    airflow_url: str = Field("", description="The Airflow API server; empty means the local one on airflow_port.")
    airflow_username: str = "admin"
    airflow_password: SecretStr = Field(
        SecretStr(""), description="For `lambdactl status`; the demo's is read locally."
    )

    # Speed layer.
    speed_group: str = "speed"
    speed_publish_ms: int = Field(500, ge=50, description="Publish state and offsets at least this often.")
    speed_fetch_max_wait_ms: int = Field(
        100, ge=0, description="A fetch waits this long for 16 KiB of records: fewer, larger fetches at low rates."
    )
    speed_segment_seconds: float = Field(5.0, gt=0, description="Seal a segment (a cutoff boundary) this often.")
    speed_prune_grace_seconds: float = Field(60.0, ge=0, description="Keep state below a new cutoff this long.")
    speed_rebuild_memory_events: int = Field(
        100_000, ge=1, description="A rebuilding partition keeps this many raw events in memory; more wait on disk."
    )
    speed_superseded_grace_seconds: float = Field(
        10.0, ge=0, description="Keep an open segment's files this long after a newer publish replaced them."
    )
    speed_clock_skew_seconds: float = Field(
        300.0,
        ge=0,
        description="How far a producer's event times may run ahead of the brokers' clock (bounds batch id lookups).",
    )
    speed_stale_after_seconds: float = Field(
        300.0, gt=0, description="Batch cutoffs ignore speed boundaries older than this (speed down)."
    )

    # Serving layer.
    serving_refresh_seconds: float = Field(1.0, gt=0, description="How often the DuckDB database file is renewed.")
    serving_storage_version: str = Field(
        "v1.5.0",
        pattern=r"^v\d+\.\d+\.\d+$",
        description="DuckDB storage format of the served database files: the newest the stock DuckDB CLI reads.",
    )
    serving_poll_seconds: float = Field(
        0.05, gt=0, le=5, description="How often the serving process looks for a new publish to serve."
    )
    serving_memory_limit_mb: int = Field(
        1024, ge=64, description="Memory of the served views and every running query together (DuckDB's limit)."
    )
    serving_threads: int = Field(2, ge=1, description="DuckDB threads of the serving process.")
    # The Postgres wire endpoint of `lambdactl serve` (psql, JDBC, psycopg, BI tools).
    serving_pg_host: str = Field(
        "127.0.0.1", description="Where the Postgres endpoint listens (0.0.0.0 in a container)."
    )
    serving_pg_port: int = Field(5433, ge=1, le=65535)
    serving_pg_user: str = Field("lambda", min_length=1, description="The user name clients log in with.")
    serving_pg_password: SecretStr = Field(
        SecretStr(""), description="Required for the Postgres endpoint (SCRAM-SHA-256); empty leaves it off."
    )
    serving_pg_tls_cert: Path | None = Field(None, description="PEM certificate: clients may then ask for TLS.")
    serving_pg_tls_key: Path | None = Field(None, description="PEM private key of that certificate.")
    serving_metrics_port: int = Field(
        8051, ge=1, le=65535, description="Prometheus /metrics of `serve` (queries, refreshes), on its host."
    )
    serving_statement_timeout_seconds: float = Field(
        30.0, gt=0, description="A query running longer is cancelled (SQLSTATE 57014)."
    )
    serving_max_connections: int = Field(32, ge=1, description="Further clients are refused (SQLSTATE 53300).")
    serving_result_cache_rows: int = Field(
        100_000, ge=0, description="Rows of deterministic query results kept until the next refresh (0: none kept)."
    )

    # The dashboard (`lambdactl dashboard`, started by the demo): a page, /api/samples and /metrics.
    dashboard_host: str = Field("127.0.0.1", description="Where the dashboard listens (0.0.0.0 in a container).")
    dashboard_port: int = Field(8050, ge=1, le=65535)
    dashboard_refresh_seconds: float = Field(1.0, gt=0, le=2, description="How often it samples the platform.")

    consumer_session_timeout_ms: int = Field(10_000, ge=6_000, description="How soon a dead consumer leaves its group.")

    # `lambdactl status` (and the compose healthchecks): when a component counts as down.
    status_speed_stale_seconds: float = Field(
        10.0, gt=0, description="Speed is down when a partition is behind and unpublished for this long."
    )
    status_batch_stale_minutes: float | None = Field(
        None, gt=0, description="Batch is down when its newest version is older; default 2 intervals + 5 min."
    )
    status_serving_stale_seconds: float | None = Field(
        None, gt=0, description="Serving is down when its newest database file is older; default 5 refreshes, >= 10 s."
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.broker_port == self.broker_controller_port:
            raise ValueError(
                f"LAMBDA_BROKER_PORT and LAMBDA_BROKER_CONTROLLER_PORT must differ (both are {self.broker_port})"
            )
        if self.broker_nodes == 2:
            raise ValueError("LAMBDA_BROKER_NODES must be 1 or 3: a quorum of two controllers survives no failure")
        if self.uses_local_broker and self.topic_replication_factor > self.broker_nodes:
            raise ValueError(
                f"LAMBDA_TOPIC_REPLICATION_FACTOR={self.topic_replication_factor} needs as many brokers; "
                f"the local cluster has LAMBDA_BROKER_NODES={self.broker_nodes}"
            )
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError("LAMBDA_TOPIC_MIN_INSYNC_REPLICAS cannot exceed LAMBDA_TOPIC_REPLICATION_FACTOR")
        return self

    @property
    def bootstrap_servers(self) -> str:
        """Where clients connect: the configured cluster, else the local broker."""
        local = ",".join(f"{self.broker_host}:{port}" for port, _ in self.local_broker_ports)
        return self.kafka_bootstrap_servers or local

    @property
    def local_broker_ports(self) -> list[tuple[int, int]]:
        """(client port, controller port) of each local node, node 1 first."""
        return [
            (self.broker_port + NODE_PORT_STEP * n, self.broker_controller_port + NODE_PORT_STEP * n)
            for n in range(self.broker_nodes)
        ]

    @property
    def uses_local_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    def as_env(self) -> dict[str, str]:
        """These settings as LAMBDA_* variables, for the child processes of a supervisor."""
        return {
            f"LAMBDA_{name.upper()}": value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            for name, value in self.model_dump().items()
            if value is not None  # unset optional knobs keep their derived default in the child
        }

    def child_environment(self) -> dict[str, str]:
        """This process's environment with exactly these settings as its LAMBDA_* variables."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDA_")}
        return inherited | self.as_env()

    @property
    def batch_stale_after_s(self) -> float:
        minutes = self.status_batch_stale_minutes
        return minutes * 60 if minutes is not None else (2 * self.batch_interval_minutes + 5) * 60

    @property
    def serving_stale_after_s(self) -> float:
        seconds = self.status_serving_stale_seconds
        return seconds if seconds is not None else max(10.0, 5 * self.serving_refresh_seconds)

    @property
    def lake_path(self) -> Path:
        """The master dataset: a Delta table of every valid event, append-only."""
        return self.data_dir / "lake" / self.events_topic

    @property
    def speed_views_path(self) -> Path:
        """Published speed state: per partition, segments and snapshots (see speed_snapshot)."""
        return self.data_dir / "views" / "speed"

    @property
    def serving_database(self) -> Path:
        """The DuckDB file of merged views that the DuckDB CLI and BI tools open read-only."""
        return self.data_dir / "serving" / "lambda.duckdb"

    @property
    def batch_views_path(self) -> Path:
        """Published batch views: Parquet segments, versioned manifests and the CURRENT pointer."""
        return self.data_dir / "views" / "batch"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
