"""The chaos soak's supervisor: a killed service comes back at once, or after its outage; one that exits on its
own comes back and is counted. Its kill plan."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from benchmarks.chaos import KINDS, SPEED_OUTAGE_S, Platform, _speed_outage, kill_plan
from infra.local_broker import LocalBroker
from lambda_contracts.settings import Settings

pytestmark = pytest.mark.unit


class SleepingPlatform(Platform):
    """Services are plain sleeping processes (or ones that exit at once), launched in order."""

    def __init__(self, tmp_path: Path, exits: frozenset[str] = frozenset()) -> None:
        super().__init__(Settings(data_dir=tmp_path), tmp_path, cluster=cast(LocalBroker, None))  # no broker here
        self.exits = exits
        self.launched: list[str] = []

    def _launch(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        self.launched.append(name)
        code = "pass" if name in self.exits else "import time; time.sleep(60)"
        return subprocess.Popen([sys.executable, "-c", code])

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()


def test_a_killed_service_is_started_again_at_once(tmp_path: Path) -> None:
    platform = SleepingPlatform(tmp_path)
    try:
        platform.start("speed-1")
        first = platform.processes["speed-1"]
        platform.kill("speed-1")
        assert first.returncode is not None
        assert platform.processes["speed-1"].poll() is None
        assert platform.launched == ["speed-1", "speed-1"]
    finally:
        platform.stop_all()


def test_a_service_in_an_outage_stays_down_until_it_ends_and_is_not_counted_as_exited(tmp_path: Path) -> None:
    platform = SleepingPlatform(tmp_path)
    try:
        platform.start("speed-1")
        platform.start("speed-2")
        platform.kill("speed-1", down_s=0.5)
        assert platform.restart_exited() == [], "an outage is not a crash"
        assert platform.launched == ["speed-1", "speed-2"], "still down"
        deadline = time.monotonic() + 5
        while "speed-1" in platform.down_until and time.monotonic() < deadline:
            assert platform.restart_exited() == []
            time.sleep(0.05)
        assert platform.launched == ["speed-1", "speed-2", "speed-1"]
        assert platform.processes["speed-1"].poll() is None
    finally:
        platform.stop_all()


def test_a_service_that_exits_on_its_own_is_started_again_and_named(tmp_path: Path) -> None:
    platform = SleepingPlatform(tmp_path, exits=frozenset({"lake-sink"}))
    try:
        platform.start("lake-sink")
        platform.processes["lake-sink"].wait()
        assert platform.restart_exited() == ["lake-sink"]
        assert platform.launched == ["lake-sink", "lake-sink"]
    finally:
        platform.stop_all()


def test_ten_minutes_kill_every_kind_at_least_twice_and_three_minutes_each_once() -> None:
    ten = kill_plan(KINDS, 600, random.Random(7))
    assert len(ten) == 30 and all(ten.count(kind) >= 2 for kind in KINDS), ten
    three = kill_plan(KINDS[:6], 180, random.Random(11))
    assert len(three) == 9 and set(three) == set(KINDS[:6])
    assert kill_plan((), 600, random.Random(7)) == []


def process_state(pid: int) -> str:
    """The one-letter state in /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_speed_outage_freezes_one_worker_until_a_batch_version_is_published_and_keeps_the_other_down(
    tmp_path: Path,
) -> None:
    platform = SleepingPlatform(tmp_path)
    settings = platform.settings
    batch_root = settings.batch_views_path
    batch_root.mkdir(parents=True)
    (batch_root / "CURRENT").write_text("3")
    try:
        platform.start("speed-1")
        platform.start("speed-2")
        seen: dict[str, str] = {}

        def publish_when_frozen() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "T" not in seen.values():
                for name in ("speed-1", "speed-2"):
                    if platform.processes[name].poll() is None:
                        seen[name] = process_state(platform.processes[name].pid)
                time.sleep(0.01)
            (batch_root / "CURRENT").write_text("4")

        publisher = threading.Thread(target=publish_when_frozen)
        publisher.start()
        _speed_outage(settings, platform, random.Random(1))
        publisher.join()
        frozen = next(name for name, state in seen.items() if state == "T")
        killed = "speed-2" if frozen == "speed-1" else "speed-1"
        assert process_state(platform.processes[frozen].pid) != "T", "thawed once the version was published"
        assert platform.processes[killed].poll() is not None and killed in platform.down_until
        assert platform.down_until[killed] - time.monotonic() <= SPEED_OUTAGE_S[1]
    finally:
        platform.stop_all()
