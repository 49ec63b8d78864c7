"""How a parallel Kappa replay deals the partitions to its processes, and hears back from them."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lambdactl.kappa import Helper, partition_groups

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


HELPER_STAND_IN = """
import sys
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
sys.stdin.read()  # until the parent closes the pipe, as a replay process does
print("published 12.5", flush=True)
"""


@pytest.mark.parametrize("stopped", [False, True])
def test_a_helper_says_when_it_last_published_whether_it_ends_or_is_stopped(stopped: bool, tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", HELPER_STAND_IN], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    helper = Helper((0, 1), process, tmp_path / "helper.log")
    stop = threading.Event()
    helper.wait_ready(stop)
    helper.go()
    if stopped:
        stop.set()  # Ctrl-C on the replay: ``wait`` passes it on and the helper publishes what it has
    else:
        helper.stop()  # the parent finished its own share and lets the helper close
    helper.wait(stop)
    assert helper.published_at == 12.5
    helper.stop()  # the replay's own clean-up afterwards finds the pipes read and closed
    assert helper.published_at == 12.5
