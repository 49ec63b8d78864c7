"""What every platform DAG shares: owner, retries, start date, no catch-up, one run at a time.

Not a DAG itself (see .airflowignore).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

START_DATE = datetime(2026, 1, 1)
OWNER = "data-platform"


def platform_dag(
    dag_id: str, *, description: str, schedule: Any, tags: list[str], doc_md: str | None, retries: int = 2, **extra: Any
) -> DAG:
    """A DAG with the platform's policies: runs never overlap, failed tasks retry with backoff."""
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={
            "owner": OWNER,
            "retries": retries,
            "retry_delay": timedelta(seconds=30),
            "retry_exponential_backoff": True,
        },
        tags=["lambda", *tags],
        doc_md=doc_md,
        **extra,
    )
