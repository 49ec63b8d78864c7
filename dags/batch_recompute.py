"""
### Batch recompute: Lambda's answer to a bug in view logic

Trigger this DAG by hand (**Trigger** with the form) after fixing a view declaration or its
code. It recomputes every event day from `first_day` to `last_day` from the immutable lake,
with the **current** offset cutoff, and publishes the result as a new batch view version.
Leave both days empty to recompute everything.

The same code as the scheduled `batch_views` DAG runs; only the days differ. Re-running a run
publishes nothing twice.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from airflow.sdk import Param, get_current_context, task
from dag_defaults import platform_dag

from lambda_contracts.settings import get_settings

with platform_dag(
    "batch_recompute",
    description="Recompute batch views for a range of event days (or all) from the lake.",
    schedule=None,
    retries=1,
    tags=["batch", "manual"],
    doc_md=__doc__,
    params={
        "first_day": Param(
            None, type=["null", "string"], format="date", title="First event day", description="Empty: the first day."
        ),
        "last_day": Param(
            None, type=["null", "string"], format="date", title="Last event day", description="Empty: the last day."
        ),
    },
) as dag:

    @task(execution_timeout=timedelta(hours=2))
    def recompute() -> dict[str, Any]:
        from batch_layer.operations import recompute_batch_views

        context = get_current_context()
        params = context["params"]
        first = date.fromisoformat(params["first_day"]) if params.get("first_day") else None
        last = date.fromisoformat(params["last_day"]) if params.get("last_day") else None
        if first and last and first > last:
            raise ValueError(f"first_day {first} is after last_day {last}: swap them and trigger again")
        run_id = f"{context['dag'].dag_id}/{context['run_id']}"
        return recompute_batch_views(get_settings(), run_id, first, last)

    recompute()
