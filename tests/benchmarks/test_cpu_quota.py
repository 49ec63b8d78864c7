"""The overload benchmark's CPU quota really holds a process to its share of a core (a real cgroup)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks.cpu_quota import CpuQuota, QuotaUnavailableError

pytestmark = pytest.mark.integration

SPIN = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass\n"


def test_a_process_under_a_quota_of_a_fifth_of_a_core_gets_no_more() -> None:
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")  # CI and the benchmark's machine run as root
    try:
        quota = CpuQuota(f"lambda-test-{os.getpid()}", 0.2)
    except QuotaUnavailableError as error:
        pytest.skip(str(error))
    try:
        began = time.monotonic()
        spinner = subprocess.Popen([sys.executable, "-c", SPIN])
        quota.add(spinner.pid)
        _, status, usage = os.wait4(spinner.pid, 0)
        wall = time.monotonic() - began
        assert os.waitstatus_to_exitcode(status) == 0
        cores = (usage.ru_utime + usage.ru_stime) / wall
        assert cores < 0.35, f"a spinning process used {cores:.2f} cores under a quota of 0.2"
        assert quota.throttled_s() > 0.5
    finally:
        quota.remove()
