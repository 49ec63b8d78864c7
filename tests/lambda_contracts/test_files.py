"""The publish lock: readers of several published files never read across a publish."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lambda_contracts.plumbing.files import folder_lock, folder_read_lock

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
