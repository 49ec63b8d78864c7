"""A data directory that fills up: the lake sink and the speed worker wait, lose and double nothing, resume."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_layer.lake import Lake
from lambda_contracts.columns import events_to_arrow
from lambda_contracts.intake import split
from lambda_contracts.serde import JsonSerde
from lambda_contracts.settings import Settings
from lambda_contracts.views import VIEWS
from tests.flows import (
    end_offsets,
    lively_simulators,
    producing,
    read_topic,
    reaped,
    start_lambdactl,
    wait_for_line,
    wait_until_lake_complete,
    wait_until_published,
)
from tests.oracle import first_copies, speed_rows, view_rows

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs as the data directory (needs root)"),
]


@contextlib.contextmanager
def small_filesystem(mount: Path, size: str) -> Iterator[Path]:
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill(folder: Path) -> Path:
    """Take every free byte of the filesystem under ``folder``; deleting the returned file gives them back."""
    filler = folder / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    with contextlib.suppress(OSError), filler.open("ab") as out:
        while True:  # the last partial megabyte, a kilobyte at a time
            out.write(b"\0" * 1024)
            out.flush()
    return filler


def test_a_full_disk_pauses_the_sink_and_the_speed_worker_and_they_resume_exactly(
    kafka: Settings, tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "data", "64m") as data:
        settings = kafka.model_copy(
            update={
                "data_dir": data,
                "lake_flush_seconds": 0.3,
                "speed_publish_ms": 200,
                "speed_segment_seconds": 1.0,
                "lake_sink_group": f"sink-{kafka.events_topic}",
                "speed_group": f"speed-{kafka.events_topic}",
            }
        )
        env = settings.child_environment()
        logs = {name: tmp_path / f"{name}.log" for name in ("lake-sink", "speed")}
        with reaped([start_lambdactl(env, log, name) for name, log in logs.items()]) as children:
            with producing(settings, lively_simulators(seed=29)):
                wait_for_line(logs["lake-sink"], "lake version")
                wait_for_line(logs["speed"], "speed worker took partition")
                filler = fill(data)
                for log in logs.values():
                    wait_for_line(log, "no space left on device under", timeout_s=60)
                assert all(child.poll() is None for child in children), "a full disk stops no process"
                filler.unlink()
                for log in logs.values():
                    wait_for_line(log, "space is back under", timeout_s=60)
            wait_until_lake_complete(settings)
            wait_until_published(settings)
            for child in children:
                child.send_signal(signal.SIGTERM)
                assert child.wait(timeout=60) == 0
        for log in logs.values():
            text = log.read_text()
            assert "Traceback" not in text, text[-3000:]
            assert "Free space there or grow the volume" in text

        records = read_topic(settings, settings.events_topic)
        accepted, _ = split(records, JsonSerde(), rejected_by="oracle")
        table = Lake(settings.lake_path, settings.events_topic).table()
        assert table is not None
        lake_rows = table.to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
        coordinates = list(zip(lake_rows.column(0).to_pylist(), lake_rows.column(1).to_pylist(), strict=True))
        assert len(coordinates) == len(set(coordinates)), "no record twice in the lake"
        assert set(coordinates) == {(a.partition, a.offset) for a in accepted}, "every valid record in the lake"
        assert sum(end_offsets(settings).values()) == len(records)
        events = first_copies(events_to_arrow(accepted).to_pylist())
        published = speed_rows(settings)
        for view in VIEWS:
            assert published[view.name] == view_rows(events, view), f"speed {view.name} exact after the full disk"
