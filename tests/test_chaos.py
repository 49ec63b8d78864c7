"""The chaos soak's short version: every kind of kill, and the merged views exact at every sample."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.chaos import KINDS, OracleViews, report, run_chaos, text_rows
from lambda_contracts.columns import events_to_arrow
from lambda_contracts.intake import split
from lambda_contracts.serde import JsonSerde
from lambda_contracts.views import VIEWS
from sources.run import build_simulators
from sources.simulators import merged_records
from tests.fakes import FakeRecord
from tests.flows import EXTERNAL_BROKER_ENV, local_cluster_settings
from tests.oracle import first_copies, view_rows


@pytest.mark.unit
def test_the_soaks_recompute_agrees_with_the_test_oracle() -> None:
    """The soak's pyarrow recompute (any prefix of offsets) against the plain-Python oracle of the tests."""
    simulators = build_simulators(
        serde=JsonSerde(), start=datetime.now(UTC), seed=5, rate=200, duplicate_share=0.1, cross_partition_share=0.5
    )
    records = [
        FakeRecord(r.value, offset=i, partition=i % 3, key=r.key)
        for i, r in enumerate(itertools.islice(merged_records(simulators), 4000))
    ]
    accepted, rejected = split(records, JsonSerde(), rejected_by="test")
    assert rejected
    oracle = OracleViews.of(events_to_arrow(accepted))
    reflected = {0: 3000, 1: 1000, 2: 4000}  # offsets run 0..3999 over all partitions: a prefix of each
    expected_events = first_copies(events_to_arrow(accepted).to_pylist(), reflected)
    computed = oracle.rows(reflected)
    for view in VIEWS:
        assert computed[view.name] == text_rows(view_rows(expected_events, view)), view.name


@pytest.mark.e2e
@pytest.mark.skipif(bool(os.environ.get(EXTERNAL_BROKER_ENV)), reason="runs its own three-node cluster")
def test_three_minutes_of_random_kills_keep_the_merged_views_exact(tmp_path: Path) -> None:
    figures = run_chaos(local_cluster_settings(tmp_path), minutes=3, seed=11, rate=50, show=print)
    print("\n".join(report(figures)))
    assert all(figures.kills[kind] >= 1 for kind in KINDS), figures.kills
    assert figures.samples >= 150, "a read started every second (~175 in 3 minutes), and each was checked"
    assert figures.mismatched == 0, figures.mismatch_notes[:5]
    assert figures.lost == 0 and figures.duplicated == 0
    assert figures.reflected == figures.produced, "at the end the merged views reflect every record produced"
