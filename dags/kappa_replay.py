"""
### Kappa replay: rebuild every view from the log, then prove it equals Lambda

Trigger this DAG by hand (**Trigger** with the form). It replays the events topic from its first
offset through the speed layer's own code into the Kappa view set `set_name` (a folder under
`data/kappa`), up to the position the live platform serves at the start of the run, while the
platform keeps serving the current views. Then it compares, view by view and row by row, the
Kappa views, the Lambda merged views and a recompute from the lake at the same offsets, and fails
unless they are identical (the log of **verify** shows the row counts and content hashes).

A replay killed at any instant resumes where its last publish left it when the DAG runs again.
The topic must still hold its first records: the replay refuses otherwise, naming
`LAMBDA_EVENTS_RETENTION_HOURS`. To serve the set, keep it live with `lambdactl kappa run --name
SET`, then `lambdactl kappa switch --name SET` (see the README's Kappa section).
"""

from __future__ import annotations

import shlex
import sys
from datetime import timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param
from dag_defaults import platform_dag

LAMBDACTL = f"{shlex.quote(sys.executable)} -m lambdactl"  # the platform's CLI, in Airflow's own environment
SET_NAME = "{{ params.set_name }}"

with platform_dag(
    "kappa_replay",
    description="Replay the log into a Kappa view set and verify it equals the Lambda views and a recompute.",
    schedule=None,
    retries=1,
    tags=["kappa", "manual"],
    doc_md=__doc__,
    params={
        "set_name": Param(
            "replay",
            type="string",
            pattern="^[a-z0-9][a-z0-9-]{0,40}$",
            title="Kappa view set",
            description="A folder under data/kappa; a set already replayed resumes.",
        ),
    },
) as dag:
    replay = BashOperator(
        task_id="replay",
        bash_command=f"{LAMBDACTL} kappa replay --name {SET_NAME}",
        execution_timeout=timedelta(hours=6),
    )
    verify = BashOperator(
        task_id="verify",
        bash_command=f"{LAMBDACTL} kappa verify --name {SET_NAME}",
        execution_timeout=timedelta(hours=2),
    )
    replay >> verify
