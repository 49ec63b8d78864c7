"""How a parallel Kappa replay deals the partitions to its processes."""

from __future__ import annotations

import random

import pytest

from lambdactl.kappa import partition_groups

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("workers", [1, 2, 3, 6, 9])
def test_every_partition_goes_to_exactly_one_process_and_no_process_idles(workers: int) -> None:
    rng = random.Random(workers)
    target = {p: rng.randrange(0, 100_000) for p in range(6)}
    groups = partition_groups(target, workers)
    dealt = [p for group in groups for p in group]
    assert sorted(dealt) == sorted(target), "each partition once"
    assert len(groups) == min(workers, len(target)) and all(groups), "at most one process per partition, none idle"


def test_the_largest_partitions_are_spread_so_the_processes_finish_together() -> None:
    target = {0: 900, 1: 800, 2: 100, 3: 100, 4: 100, 5: 100}
    groups = partition_groups(target, 2)
    loads = sorted(sum(target[p] for p in group) for group in groups)
    assert loads == [1000, 1100], groups  # not 0,1,2 | 3,4,5 (1,800 against 300)
    assert partition_groups({0: 5}, 4) == [(0,)]
