"""The overload benchmark's memory figures: a process tree counts its children, ``alone`` does not, and
what a file backs (a mapped index) is told apart from the rest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.overload import _tree_mib

pytestmark = pytest.mark.unit

HOLD = "held = b'x' * (200 << 20)\nprint('ready', flush=True)\ninput()\n"
"""A child that holds 200 MiB of its own memory until told to go."""


def test_a_tree_counts_a_child_and_alone_does_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        tree, tree_anonymous = _tree_mib(os.getpid())
        alone, _ = _tree_mib(os.getpid(), alone=True)
        assert tree - alone >= 200
        assert tree_anonymous >= 200
    finally:
        child.kill()
        child.wait()


def test_mapped_file_pages_are_resident_but_not_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "words.npy"
    np.save(path, np.ones(32 << 17, dtype=np.uint64))  # 32 MiB
    before, before_anonymous = _tree_mib(os.getpid(), alone=True)
    mapped = np.load(path, mmap_mode="r")
    assert mapped.sum() == len(mapped)  # touches every page
    after, after_anonymous = _tree_mib(os.getpid(), alone=True)
    assert after - before >= 30
    assert after_anonymous - before_anonymous < 8
