"""DAG policies (every DAG imports, is documented, owned, tagged, retried) and a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import BundleDagBag, DagBag
from airflow.sdk.definitions.timetables.simple import NullTimetable
from pyspark.sql import SparkSession

from lambda_contracts.manifest import current_version, read_current
from lambda_contracts.settings import Settings, get_settings
from tests.flows import REPO, produce, sink_everything

EXPECTED = {"batch_views", "batch_recompute", "lake_maintenance", "kappa_replay"}


def load_dags() -> DagBag:
    """The DAG folder parsed as Airflow's dag-processor does (the folder is on sys.path)."""
    return BundleDagBag(dag_folder=REPO / "dags", bundle_path=REPO / "dags", bundle_name="dags-folder")


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return load_dags()


@pytest.mark.unit
def test_every_dag_imports_cleanly(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED


@pytest.mark.unit
@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_policies(dagbag: DagBag, dag_id: str) -> None:
    dag = dagbag.dags.get(dag_id)
    assert dag is not None
    assert dag.tags and "lambda" in dag.tags
    assert dag.doc_md and len(dag.doc_md) > 200, "the UI shows what the DAG does and how to operate it"
    assert dag.catchup is False
    assert dag.max_active_runs == 1, "batch runs never overlap"
    for task in dag.tasks:
        assert task.owner == "data-platform", task.task_id
        assert (task.retries or 0) >= 1, task.task_id


@pytest.mark.unit
def test_recompute_takes_its_range_from_the_trigger_form(dagbag: DagBag) -> None:
    dag = dagbag.dags.get("batch_recompute")
    assert dag is not None
    assert isinstance(dag.timetable, NullTimetable), "triggered by hand only"
    assert set(dag.params) == {"first_day", "last_day"}


@pytest.mark.integration
def test_batch_views_dag_publishes_and_kappa_replay_dag_verifies(
    airflow_db: Path, kafka: Settings, spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = kafka.model_copy(
        update={"data_dir": tmp_path, "lake_flush_seconds": 0.2, "lake_sink_group": f"sink-{kafka.events_topic}"}
    )
    from datetime import UTC, datetime

    produce(settings, seed=4, start=datetime(2026, 11, 24, 6, tzinfo=UTC), count=2000)
    sink_everything(settings)
    for name, value in settings.child_environment().items():
        if name.startswith("LAMBDA_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        dag = load_dags().dags.get("batch_views")
        assert dag is not None
        assert dag.task_ids == ["lake_status", "advance_batch_views", "published_version", "prune_superseded"]
        run = dag.test()
        assert run.state == "success"
        assert current_version(settings.batch_views_path) == 1
        manifest = read_current(settings.batch_views_path)
        assert manifest.run_id.startswith("batch_views/")
        assert sum(manifest.cutoffs.values()) == 2000, "the cutoff covers everything the lake holds"
        assert dag.test().state == "success", "a run with nothing new succeeds and publishes nothing"
        assert current_version(settings.batch_views_path) == 1
        kappa = load_dags().dags.get("kappa_replay")
        assert kappa is not None and kappa.task_ids == ["replay", "verify"]
        assert kappa.test(run_conf={"set_name": "from-airflow"}).state == "success"
        verdict = json.loads((settings.data_dir / "kappa" / "from-airflow" / "verified.json").read_text())
        assert verdict["identical"] is True, "the Kappa set equals the Lambda views and the lake recompute"
    finally:
        get_settings.cache_clear()
