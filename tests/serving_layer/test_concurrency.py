"""Many readers while the layers publish: no errors, and no torn read (mixed versions).

With batch cutoffs on speed boundaries nothing is ever rebuilt, so the number of distinct events
a consistent snapshot counts can only grow. A read that mixed two versions would double count
(overlap) or miss (gap) some events, and show as a total that goes down.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from batch_layer.batch_job import run_batch
from batch_layer.lake_sink import LakeSink
from lambda_contracts.settings import Settings
from serving_layer.database_file import publish_database_file
from speed_layer.worker import SpeedWorker
from tests.flows import REPO, lively_simulators, producing, whole_platform_settings

pytestmark = pytest.mark.integration
READ_SECONDS = 40.0


def test_readers_never_fail_nor_see_two_versions(kafka: Settings, spark: SparkSession, tmp_path: Path) -> None:
    settings = whole_platform_settings(kafka, tmp_path)
    stop = threading.Event()

    def serve() -> None:
        while not stop.wait(0.5):
            publish_database_file(settings)

    publish_database_file(settings)
    threads = [
        threading.Thread(target=LakeSink(settings).run, args=(stop,)),
        threading.Thread(target=SpeedWorker(settings).run, args=(stop,)),
        threading.Thread(target=serve),
    ]
    for thread in threads:
        thread.start()
    env = settings.child_environment()
    outputs = [tmp_path / f"reader-{i}.json" for i in range(3)]
    try:
        with producing(settings, lively_simulators(seed=41, rate=150.0)):
            readers = [
                subprocess.Popen(
                    [sys.executable, "-m", "tests.serving_layer.reader", mode, str(READ_SECONDS), str(out)],
                    env=env,
                    cwd=REPO,
                )
                for mode, out in zip(["api", "api", "file"], outputs, strict=True)
            ]
            published, runs = 0, 0
            deadline = time.monotonic() + READ_SECONDS - 3
            while time.monotonic() < deadline:  # batch versions keep landing while readers read
                runs += 1
                published = run_batch(settings, f"concurrency-{runs}", lambda: spark).version
                time.sleep(1.5)  # pacing, like a scheduler: the sink and the speed worker share this process
            for reader in readers:
                assert reader.wait(timeout=120) == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert published >= 1, "batch versions were published during the reads (speed ones every 200 ms)"
    for output in outputs:
        result = json.loads(output.read_text())
        assert result["errors"] == [], result["errors"][:3]
        totals = result["totals"]
        assert len(totals) > 10, f"{output.name} read only {len(totals)} times"
        assert totals[-1] > totals[0], "the readers saw the views grow"
        drops = [(a, b) for a, b in itertools.pairwise(totals) if b < a]
        assert drops == [], f"{output.name}: a total went down (a torn read): {drops[:3]}"
