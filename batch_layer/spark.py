"""The Spark session of the batch jobs: ``local[*]`` embedded, a ``spark://`` master on a cluster.

Same code either way; only ``LAMBDA_SPARK_MASTER`` differs. Delta comes from the pinned jars in
``infra/spark/jars`` (no download at run time), the session runs in UTC, and the driver's heap
is bounded.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from lambda_contracts.settings import Settings

INFRA_SPARK = Path(__file__).resolve().parent.parent / "infra" / "spark"
DELTA_JARS = INFRA_SPARK / "jars"
LOG4J_CONFIG = INFRA_SPARK / "log4j2.properties"


class SparkSetupError(RuntimeError):
    """Spark cannot start as configured; the message says what to do."""


def spark_session(settings: Settings, app_name: str = "exact-lambda-batch") -> SparkSession:
    """The batch jobs' session (reused if one is already running in this process)."""
    jars = sorted(DELTA_JARS.glob("*.jar"))
    if not jars:
        raise SparkSetupError("the Delta jars for Spark are missing: run `lambdactl install`")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors run the same interpreter path
    java_options = f"-Dlog4j2.configurationFile=file:{LOG4J_CONFIG} -Duser.timezone=UTC"
    builder = SparkSession.builder.master(settings.spark_master)
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # a laptop needs no other interface
    else:  # executors on other hosts connect back to the driver by its name
        builder = (
            builder.config("spark.driver.host", settings.spark_driver_host or socket.gethostname())
            .config("spark.driver.bindAddress", "0.0.0.0")
            .config("spark.executor.memory", settings.spark_executor_memory)
        )
    session = (
        builder.appName(app_name)
        .config("spark.jars", ",".join(str(j) for j in jars))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.executor.extraJavaOptions", java_options)
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.databricks.delta.snapshotPartitions", "2")
        # a run caches its deduplicated new events once for the ids and every view: encoding them
        # compressed cost more CPU than every read of them saved (bench batch-growth, 1M new events)
        .config("spark.sql.inMemoryColumnarStorage.compressed", "false")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # it logs every connection it opens and closes
    return session
