"""A CPU quota for some processes of a benchmark: a smaller machine for them, on the machine at hand.

Twice the rate the consumers sustain cannot be offered on two cores by producers that share those
cores with them (the overload benchmark's producers reached 17,576 events/s against consumers that
drain 38,307). Held to a fraction of a core each by a cgroup (the kernel's CFS quota: ``cpu.max`` in
cgroup v2, ``cpu.cfs_quota_us`` in v1), the consumers sustain a rate the producers can double, and
everything else (memory, lag, recovery) behaves as it would on a machine that small.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class QuotaUnavailableError(RuntimeError):
    """This machine (or this user) cannot make a cgroup with a CPU quota."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"{why}. Run it as root where cgroups are mounted, or pass --consumer-cores 0 "
            "(no quota: producers on the same cores may then offer less than the factor asked)"
        )


class CpuQuota:
    """A cgroup that holds the processes put in it to ``cores`` of CPU time, together."""

    def __init__(self, name: str, cores: float) -> None:
        if cores <= 0:
            raise ValueError("a CPU quota is a positive number of cores")
        self.cores = cores
        self.folder, self._v2 = _make_cgroup(name)
        quota = max(1_000, round(cores * PERIOD_US))
        if self._v2:
            (self.folder / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (self.folder / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.folder / "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        """Put process ``pid`` (all its threads, and children it starts from now on) under the quota."""
        (self.folder / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        """How long the quota held its processes back so far."""
        for line in (self.folder / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "throttled_usec":
                return int(value) / 1e6
            if key == "throttled_time":  # v1: nanoseconds
                return int(value) / 1e9
        return 0.0

    def remove(self) -> None:
        """Remove the cgroup; processes still in it go back to the parent first."""
        parent = self.folder.parent / "cgroup.procs"
        for pid in (self.folder / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it ended meanwhile
                parent.write_text(pid)
        self.folder.rmdir()


def _make_cgroup(name: str) -> tuple[Path, bool]:
    """A new cgroup named ``name`` with the cpu controller; (its folder, whether it is cgroup v2)."""
    v2 = CGROUP_ROOT / "cgroup.controllers"
    if v2.exists() and "cpu" in v2.read_text().split():
        subtree = CGROUP_ROOT / "cgroup.subtree_control"
        try:
            if "cpu" not in subtree.read_text().split():
                subtree.write_text("+cpu")
            folder = CGROUP_ROOT / name
            folder.mkdir(exist_ok=True)
        except OSError as error:
            raise QuotaUnavailableError(
                f"cannot make a cgroup v2 with a CPU quota under {CGROUP_ROOT}: {error}"
            ) from error
        return folder, True
    v1 = CGROUP_ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        try:
            folder = v1 / name
            folder.mkdir(exist_ok=True)
        except OSError as error:
            raise QuotaUnavailableError(f"cannot make a cgroup under {v1}: {error}") from error
        return folder, False
    raise QuotaUnavailableError(f"no cgroup filesystem with the cpu controller under {CGROUP_ROOT}")
