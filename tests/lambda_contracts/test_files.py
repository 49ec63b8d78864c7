"""The publish lock: readers of several published files never read across a publish. Scratch folders."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lambda_contracts.plumbing.files import folder_lock, folder_read_lock, private_scratch

pytestmark = pytest.mark.unit


def test_a_reader_waits_for_a_publish_in_progress_and_readers_share(tmp_path: Path) -> None:
    order: list[str] = []
    entered = threading.Event()

    def reader() -> None:
        entered.set()
        with folder_read_lock(tmp_path):
            order.append("read")

    with folder_lock(tmp_path):
        thread = threading.Thread(target=reader)
        thread.start()
        entered.wait(5)
        thread.join(0.3)  # a reader that did not wait would have finished by now
        order.append("published")
    thread.join(5)
    assert order == ["published", "read"]
    with folder_read_lock(tmp_path), folder_read_lock(tmp_path):  # shared: two readers at once
        pass


def test_a_folder_never_published_to_needs_no_lock(tmp_path: Path) -> None:
    with folder_read_lock(tmp_path / "nothing-yet"):
        pass
    assert not (tmp_path / "nothing-yet").exists(), "a reader creates nothing"


HOLDER = """
import sys
from pathlib import Path
from lambda_contracts.plumbing.files import private_scratch
with private_scratch(Path(sys.argv[1]), "speed") as folder:
    print(folder, flush=True)
    sys.stdin.read()
"""


def test_a_scratch_folder_left_by_a_killed_process_goes_and_one_in_use_stays(tmp_path: Path) -> None:
    def holder() -> tuple[subprocess.Popen[str], Path]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        return process, Path(process.stdout.readline().strip())

    killed, abandoned = holder()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    alive, in_use = holder()
    try:
        assert not abandoned.exists(), "the second process removed what the killed one left"
        with private_scratch(tmp_path, "speed") as mine:
            assert mine.is_dir() and in_use.is_dir(), "a folder whose process lives stays"
        assert not mine.exists(), "a scratch folder goes when its block ends"
    finally:
        alive.communicate("")
    assert not in_use.exists()
